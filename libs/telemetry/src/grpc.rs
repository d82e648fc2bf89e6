//! The gRPC server layer every service puts on its tonic server: one
//! server span per call (OpenTelemetry RPC conventions: named
//! `package.Service/Method`, `rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`), a child of the caller's `traceparent`, and the
//! latency histogram `skileez_rpc_server_duration_seconds{rpc_service,
//! rpc_method, rpc_grpc_status_code}`.
//!
//! A gRPC status travels in the response headers (a call that fails before
//! any message) or in the trailers after the body, so the layer watches the
//! body and records when the status is known; a streaming call's span and
//! duration cover the whole stream. A body dropped before its trailers
//! (the client went away) counts as `CANCELLED`.
//!
//! ```text
//! tonic::transport::Server::builder()
//!     .layer(skileez_web::layer(&origins))      // gRPC-Web outside
//!     .layer(skileez_telemetry::grpc::ServerLayer) // sees plain gRPC
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::propagation;

/// The latency histogram's name.
pub const DURATION_METRIC: &str = "skileez_rpc_server_duration_seconds";

/// gRPC status codes the layer names itself.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// Traces and times every gRPC call of the server it wraps.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLayer;

impl<S> Layer<S> for ServerLayer {
    type Service = TracedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TracedService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TracedService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = format_args!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        propagation::set_parent_from(&span, |key| header(request.headers(), key));
        let call = Call {
            span: span.clone(),
            service,
            method,
            started: Instant::now(),
        };
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let mut body = ObservedBody {
                        inner: body,
                        call: Some(call),
                    };
                    // Trailers-only answer: the status is already here.
                    if let Some(code) = status_of(&parts.headers) {
                        body.finish(code);
                    }
                    Ok(Response::from_parts(parts, body))
                }
                Err(error) => {
                    call.finish(UNKNOWN);
                    Err(error)
                }
            }
        })
    }
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), trimmed.to_owned()),
    }
}

fn header(headers: &HeaderMap, key: &str) -> Option<String> {
    headers
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn status_of(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

struct Call {
    span: tracing::Span,
    service: String,
    method: String,
    started: Instant,
}

impl Call {
    fn finish(self, code: i32) {
        self.span.record("rpc.grpc.status_code", code);
        if code != 0 {
            self.span.record("otel.status_code", "ERROR");
        }
        metrics::histogram!(
            DURATION_METRIC,
            "rpc_service" => self.service,
            "rpc_method" => self.method,
            "rpc_grpc_status_code" => code.to_string(),
        )
        .record(self.started.elapsed().as_secs_f64());
    }
}

pin_project! {
    /// A response body that records the call's status when it ends. It
    /// holds the span, so a stream's span lasts as long as the stream.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(call) = this.call.take() {
                call.finish(CANCELLED);
            }
        }
    }
}

impl<B> ObservedBody<B> {
    fn finish(&mut self, code: i32) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.call.as_ref().map(|call| call.span.enter());
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|t| status_of(t).unwrap_or(UNKNOWN)),
            Some(Err(_)) => Some(UNKNOWN),
            // Ended without trailers: a gRPC server always sends a status,
            // so the stream was cut.
            None => Some(CANCELLED),
        };
        drop(_entered);
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Adds the current span's context to an outgoing gRPC request, so the
/// server's span continues this trace.
pub fn inject<T>(request: &mut tonic::Request<T>) {
    propagation::inject(|key, value| {
        if let Ok(value) = value.parse() {
            request.metadata_mut().insert(key, value);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/skileez.scheduling.v1.SchedulingService/ScheduleCall"),
            (
                "skileez.scheduling.v1.SchedulingService".to_owned(),
                "ScheduleCall".to_owned()
            )
        );
        assert_eq!(
            split_path("/nonsense"),
            ("unknown".to_owned(), "nonsense".to_owned())
        );
        assert_eq!(split_path("/"), ("unknown".to_owned(), String::new()));
    }

    #[test]
    fn the_status_is_read_from_grpc_status() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_of(&headers), Some(5));
        headers.insert("grpc-status", "five".parse().unwrap());
        assert_eq!(status_of(&headers), None);
    }
}
