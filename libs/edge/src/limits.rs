//! Bounds on what one caller can make a gRPC port do:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SKILEEZ_GRPC_MAX_MESSAGE_BYTES` | 1 MiB | largest request message accepted (RESOURCE_EXHAUSTED beyond); every request here is a few hundred bytes |
//! | `SKILEEZ_GRPC_CONCURRENCY_PER_CONNECTION` | 32 | requests one connection may have in flight; more wait |
//! | `SKILEEZ_GRPC_REQUEST_TIMEOUT` | 30s | longest time to answer a unary request (DEADLINE_EXCEEDED); a caller's shorter `grpc-timeout` wins. Streams are not cut: only the time to their first answer counts |

use std::time::Duration;

use skileez_config::{ConfigError, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    pub max_message_bytes: usize,
    pub concurrency_per_connection: usize,
    pub request_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            max_message_bytes: 1024 * 1024,
            concurrency_per_connection: 32,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl GrpcLimits {
    pub fn from_env(env: &Env) -> Result<GrpcLimits, ConfigError> {
        let defaults = GrpcLimits::default();
        let limits = GrpcLimits {
            max_message_bytes: env
                .positive("SKILEEZ_GRPC_MAX_MESSAGE_BYTES", defaults.max_message_bytes)?,
            concurrency_per_connection: env.positive(
                "SKILEEZ_GRPC_CONCURRENCY_PER_CONNECTION",
                defaults.concurrency_per_connection,
            )?,
            request_timeout: env
                .duration("SKILEEZ_GRPC_REQUEST_TIMEOUT", defaults.request_timeout)?,
        };
        if limits.request_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                var: "SKILEEZ_GRPC_REQUEST_TIMEOUT",
                value: "0s".to_owned(),
                expected: "a duration above zero such as 30s",
            });
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_refuse_zero() {
        let none = |_: &str| None;
        assert_eq!(
            GrpcLimits::from_env(&Env::new(&none)).unwrap(),
            GrpcLimits::default()
        );
        let zero = |name: &str| (name == "SKILEEZ_GRPC_REQUEST_TIMEOUT").then(|| "0s".to_owned());
        assert!(GrpcLimits::from_env(&Env::new(&zero)).is_err());
        let small =
            |name: &str| (name == "SKILEEZ_GRPC_MAX_MESSAGE_BYTES").then(|| "4096".to_owned());
        assert_eq!(
            GrpcLimits::from_env(&Env::new(&small))
                .unwrap()
                .max_message_bytes,
            4096
        );
    }
}
