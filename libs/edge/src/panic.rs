//! A handler that panics answers its own call with INTERNAL, instead of
//! taking down the HTTP/2 connection and every other call multiplexed on
//! it. Validation is fuzzed so that no input panics; this is the net
//! behind it for what the fuzzers did not find.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use http::{Request, Response};
use tower::{Layer, Service};

/// Place it innermost (last `.layer`), so that the tracing and metrics
/// layers record the INTERNAL answer like any other.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for CatchPanic<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)));
        Box::pin(async move {
            let outcome = match called {
                Ok(response) => AssertUnwindSafe(response).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            outcome.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_owned());
                tracing::error!(rpc = %path, panic = %what, "a handler panicked; answered INTERNAL");
                metrics::counter!("skileez_rpc_panics_total").increment(1);
                Ok(tonic::Status::internal("internal error; it has been logged").into_http())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_others_are_untouched() {
        let handler = tower::service_fn(|request: Request<()>| async move {
            if request.uri().path() == "/pkg.Svc/Boom" {
                panic!("boom");
            }
            Ok::<_, Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let mut service = CatchPanicLayer.layer(handler);
        let boom = service
            .call(Request::builder().uri("/pkg.Svc/Boom").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(boom.headers()["grpc-status"], "13");
        let fine = service
            .call(Request::builder().uri("/pkg.Svc/Fine").body(()).unwrap())
            .await
            .unwrap();
        assert!(fine.headers().get("grpc-status").is_none());
    }
}
