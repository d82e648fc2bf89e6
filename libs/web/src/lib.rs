//! What a browser needs at a service's gRPC port, the same for every
//! service: gRPC-Web (a browser cannot speak HTTP/2 gRPC with trailers, so
//! `tonic-web` translates `application/grpc-web[+proto]` over HTTP/1.1 and
//! HTTP/2), and CORS for the web app's origins (the app is served from
//! another origin than the API, so the browser asks first).
//!
//! ```text
//! tonic::transport::Server::builder()
//!     .accept_http1(true) // gRPC-Web comes over HTTP/1.1 too
//!     .layer(skileez_web::layer(&config.cors_origins))
//! ```
//!
//! Origins come from `SKILEEZ_CORS_ORIGINS` ([`parse_origins`]): a
//! comma-separated list of exact origins. None configured: no CORS at all
//! (not even on a preflight), so only same-origin pages and non-browser
//! clients can call; gRPC-Web itself stays on. Credentials (cookies) are
//! never allowed: callers send a bearer token in `authorization`, which
//! the preflight allows.
//!
//! **Architecture invariant:** no auth here and no routing: the layer
//! translates and answers preflights, the services decide the rest.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower::layer::util::{Identity, Stack};
use tower::util::Either;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use tonic_web::GrpcWebLayer;

/// The variable that lists the allowed origins.
pub const CORS_ORIGINS_VAR: &str = "SKILEEZ_CORS_ORIGINS";

/// What [`parse_origins`] accepts, for configuration errors.
pub const ORIGINS_EXPECTED: &str = "comma-separated origins such as https://app.skileez.com,http://localhost:5173 (scheme, host and port only; no path, no *)";

/// The layer of [`layer`]: CORS (when configured) outside, gRPC-Web inside.
pub type BrowserLayer = Stack<GrpcWebLayer, Either<CorsLayer, Identity>>;

/// Request headers a gRPC-Web client sends besides the simple ones.
const ALLOW_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "traceparent",
];
/// Response headers a gRPC-Web client must read: the status of a call
/// that ends without a body comes in headers.
const EXPOSE_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A configured origin that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin:?} is not an origin: {why}")]
pub struct InvalidOrigin {
    pub origin: String,
    pub why: &'static str,
}

/// Reads `SKILEEZ_CORS_ORIGINS`: comma-separated `scheme://host[:port]`
/// (http or https), normalised as browsers send them (lower case, no
/// default port). Blank: none.
pub fn parse_origins(value: &str) -> Result<Vec<String>, InvalidOrigin> {
    let mut origins: Vec<String> = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let normalised = parse_origin(origin)?;
        if !origins.contains(&normalised) {
            origins.push(normalised);
        }
    }
    Ok(origins)
}

fn parse_origin(origin: &str) -> Result<String, InvalidOrigin> {
    let invalid = |why| InvalidOrigin {
        origin: origin.to_owned(),
        why,
    };
    let lower = origin.to_ascii_lowercase();
    let (scheme, rest, default_port) = if let Some(rest) = lower.strip_prefix("https://") {
        ("https", rest, "443")
    } else if let Some(rest) = lower.strip_prefix("http://") {
        ("http", rest, "80")
    } else {
        return Err(invalid("it must start with http:// or https://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(invalid("it has no host"));
    }
    if rest.contains(['/', '?', '#', '@', '*']) || rest.contains(char::is_whitespace) {
        return Err(invalid(
            "an origin is scheme://host[:port]: no path, query, user or wildcard",
        ));
    }
    // The port is what follows the last `:` outside an IPv6 literal.
    let (host, port) = match rest.rfind(':') {
        Some(at) if !rest[at..].contains(']') => (&rest[..at], Some(&rest[at + 1..])),
        _ => (rest, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if !host_ok {
        return Err(invalid("its host is not a host name or IP address"));
    }
    match port {
        None => Ok(format!("{scheme}://{host}")),
        Some(port) if port == default_port => Ok(format!("{scheme}://{host}")),
        Some(port) if port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(format!("{scheme}://{host}:{port}"))
        }
        Some(_) => Err(invalid("its port is not a number from 1 to 65535")),
    }
}

/// gRPC-Web for every service of a server, with CORS for `origins` (from
/// [`parse_origins`]; empty: no CORS headers at all).
pub fn layer(origins: &[String]) -> BrowserLayer {
    let cors = if origins.is_empty() {
        None
    } else {
        let allowed: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(allowed))
                .allow_methods([Method::POST])
                .allow_headers(ALLOW_HEADERS.map(HeaderName::from_static))
                .expose_headers(EXPOSE_HEADERS.map(HeaderName::from_static))
                .max_age(PREFLIGHT_MAX_AGE),
        )
    };
    Stack::new(GrpcWebLayer::new(), tower::util::option_layer(cors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            parse_origins(
                " https://App.Skileez.com/ , http://localhost:5173,https://a.test:443,http://[::1]:8080,https://app.skileez.com"
            )
            .unwrap(),
            [
                "https://app.skileez.com",
                "http://localhost:5173",
                "https://a.test",
                "http://[::1]:8080",
            ]
        );
        assert_eq!(parse_origins("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_origins(" , ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn what_is_not_an_origin_is_refused_with_the_reason() {
        for (bad, why) in [
            ("*", "http"),
            ("app.skileez.com", "http"),
            ("ftp://x.test", "http"),
            ("https://", "no host"),
            ("https://x.test/app", "no path"),
            ("https://user@x.test", "no path"),
            ("https://*.x.test", "wildcard"),
            ("https://x.test:0", "port"),
            ("https://x.test:99999", "port"),
            ("https://x_y.test", "host"),
            ("http://[::g]:80", "host"),
        ] {
            let error = parse_origins(&format!("https://ok.test,{bad}")).unwrap_err();
            assert!(error.to_string().contains(why), "{bad}: {error}");
        }
    }
}
