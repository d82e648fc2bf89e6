//! What every service's gRPC port applies at its edge, before a handler
//! runs: [`tls`] (server TLS, mTLS, client TLS between services),
//! [`limits`] (message size, concurrency per connection, request time) and
//! [`rate`] (per-user rate limits answered with RESOURCE_EXHAUSTED and a
//! retry delay) and [`panic`] (a handler that panics answers INTERNAL).

pub mod limits;
pub mod panic;
pub mod rate;
pub mod tls;

pub use limits::GrpcLimits;
pub use panic::CatchPanicLayer;
pub use rate::{RateLimit, RateLimiter};
pub use tls::{ClientTls, ClientTlsVars, ServerTls, has_client_certificate};
