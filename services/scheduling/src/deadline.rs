//! Every request's database work gets the request's deadline: the caller's
//! `grpc-timeout`, capped by the port's own request time limit. The gRPC
//! server drops a handler whose deadline has passed; this layer makes the
//! transactions the handler opened give up inside PostgreSQL at the same
//! moment (`skileez_eventstore::deadline`), instead of running on, or
//! waiting on a lock, for nobody.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request};
use tokio::time::Instant;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    max: Duration,
}

impl DeadlineLayer {
    /// `max`: the port's request time limit, the deadline when the caller
    /// sets none or a longer one.
    pub fn new(max: Duration) -> DeadlineLayer {
        DeadlineLayer { max }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = WithDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithDeadline {
            inner,
            max: self.max,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WithDeadline<S> {
    inner: S,
    max: Duration,
}

impl<S, B> Service<Request<B>> for WithDeadline<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let timeout = grpc_timeout(request.headers()).map_or(self.max, |t| t.min(self.max));
        let deadline = Instant::now() + timeout;
        let response = self.inner.call(request);
        Box::pin(skileez_eventstore::deadline::with_deadline(
            Some(deadline),
            response,
        ))
    }
}

/// The `grpc-timeout` header: at most 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`); `None` when absent or malformed (the server's own limit
/// then applies, as in tonic).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_nonsense_is_ignored() {
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
