//! The service's configuration, read once from the environment (12-factor) and
//! validated there: a bad value stops the start with a message naming the
//! variable and the form it expects.

use std::{net::SocketAddr, time::Duration as StdDuration};

use secrecy::SecretString;
use skileez_domain::Policy;

/// Everything the scheduling service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// May hold a password, hence secret.
    pub database_url: SecretString,
    pub database_max_connections: u32,
    /// The separate pool of the query RPCs (GetCall, ListCalls,
    /// CheckAvailability, FindSlots, ...).
    pub database_read_connections: u32,
    /// Display names kept in memory for ListCalls' cards (see `names`).
    pub name_cache_entries: usize,
    pub nats_url: String,
    pub grpc_addr: SocketAddr,
    pub jwt: JwtConfig,
    pub policy: Policy,
    /// How often the change feed is polled for commits made by other
    /// instances; commits of this instance wake it at once.
    pub feed_poll_interval: StdDuration,
    /// JetStream replicas of our streams and bucket: 1 on one machine, 3 in
    /// a cluster.
    pub stream_replicas: usize,
    /// NATS authentication and TLS (`skileez_bus::NatsSecurity`).
    pub nats_security: skileez_bus::NatsSecurity,
    /// Whether this service creates the streams and bucket, or only checks
    /// them (`SKILEEZ_NATS_MANAGE_TOPOLOGY`).
    pub nats_manage_topology: bool,
    /// Whether this instance runs the outbox relay (one instance at a time
    /// publishes; the others stand by).
    pub relay: bool,
    /// Whether this instance consumes the platform's contract and user
    /// events into the directory.
    pub ingest: bool,
    /// Origins whose pages may call the API (gRPC-Web, `skileez-web`):
    /// `SKILEEZ_CORS_ORIGINS`; empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// TLS of the gRPC port, and mTLS for service tokens (`skileez-edge`).
    pub tls: Option<skileez_edge::ServerTls>,
    pub limits: skileez_edge::GrpcLimits,
    /// Per user, on the RPCs that book and change calls; `None`: off.
    pub rate_limit: Option<skileez_edge::RateLimit>,
}

pub use skileez_auth::{JwtConfig, JwtKey};
pub use skileez_config::ConfigError;
use skileez_config::Env;

pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/skileez";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub use skileez_auth::{DEFAULT_JWT_AUDIENCE, DEFAULT_JWT_ISSUER};

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let policy = env.policy()?;

        Ok(Config {
            database_url: env.database_url(DEFAULT_DATABASE_URL)?,
            // A booking holds its connection for six round trips and little
            // else: more connections than the database has cores to serve
            // them only queue inside PostgreSQL. Measured on two cores
            // (BENCHMARKS.md, `book --set`): 8 confirmed more bookings than
            // 16, with a p99 of 22 ms instead of 28.
            database_max_connections: env.number("SKILEEZ_DATABASE_MAX_CONNECTIONS", 8)?,
            // A query is one statement on a warm cache and holds its
            // connection only for it: beyond about twice the database's
            // cores, more of them at once only take turns on those cores.
            // Measured on two (BENCHMARKS.md, `read --set`): ListCalls
            // 3,675/s with 4, 3,201/s with 16; GetCall's p99 4.0 ms against
            // 5.1. Their own pool also keeps a burst of reads from taking
            // the connections bookings wait for, and the other way round.
            database_read_connections: env.number("SKILEEZ_DATABASE_READ_CONNECTIONS", 4)?,
            // About 120 bytes each (two short strings in a linked hash
            // map): 100,000 names are some 12 MiB at most, several times the
            // counterparts the read benchmark's pages show.
            name_cache_entries: env.number("SKILEEZ_NAME_CACHE_ENTRIES", 100_000)?,
            nats_url: env.string_or("NATS_URL", DEFAULT_NATS_URL),
            grpc_addr: env.parse(
                "SKILEEZ_GRPC_ADDR",
                DEFAULT_GRPC_ADDR,
                "a socket address such as 127.0.0.1:50051",
            )?,
            jwt: JwtConfig::from_env(&env)?,
            policy,
            feed_poll_interval: env
                .duration("SKILEEZ_FEED_POLL_INTERVAL", StdDuration::from_millis(250))?,
            stream_replicas: env.number("SKILEEZ_STREAM_REPLICAS", 1)?,
            nats_security: skileez_bus::NatsSecurity::from_env(&env)?,
            nats_manage_topology: env.flag("SKILEEZ_NATS_MANAGE_TOPOLOGY", true)?,
            relay: env.flag("SKILEEZ_RELAY", true)?,
            ingest: env.flag("SKILEEZ_INGEST", true)?,
            cors_origins: {
                let value = env.string_or(skileez_web::CORS_ORIGINS_VAR, "");
                skileez_web::parse_origins(&value).map_err(|_| ConfigError::Invalid {
                    var: skileez_web::CORS_ORIGINS_VAR,
                    value,
                    expected: skileez_web::ORIGINS_EXPECTED,
                })?
            },
            tls: skileez_edge::ServerTls::from_env(&env)?,
            limits: skileez_edge::GrpcLimits::from_env(&env)?,
            rate_limit: skileez_edge::RateLimit::from_env(&env)?,
        })
    }
}

/// Reads the JWT key as the service does. Shared with the CLI, which mints
/// development tokens with the same secret.
pub fn jwt_key_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<JwtKey, ConfigError> {
    JwtConfig::from_lookup(lookup).map(|config| config.key)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = config(&[("SKILEEZ_JWT_SECRET", SECRET)]).unwrap();
        assert_eq!(config.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(config.policy, Policy::default());
        assert_eq!(config.policy.min_notice, chrono::Duration::minutes(15));
    }

    #[test]
    fn durations_are_read_in_human_form() {
        let config = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_MIN_NOTICE", "90s"),
            ("SKILEEZ_READY_LEAD", "5m"),
            ("SKILEEZ_LATE_CANCEL_WINDOW", "24h"),
            ("SKILEEZ_REMINDER_LEADS", "2h, 10m"),
            ("SKILEEZ_MAX_RESCHEDULES", "5"),
        ])
        .unwrap();
        assert_eq!(config.policy.min_notice, chrono::Duration::seconds(90));
        assert_eq!(config.policy.ready_lead, chrono::Duration::minutes(5));
        assert_eq!(
            config.policy.late_cancel_window,
            chrono::Duration::hours(24)
        );
        assert_eq!(config.policy.reminder_day_lead, chrono::Duration::hours(2));
        assert_eq!(
            config.policy.reminder_hour_lead,
            chrono::Duration::minutes(10)
        );
        assert_eq!(config.policy.max_reschedules, 5);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_MIN_NOTICE", "soon"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_MIN_NOTICE"), "{err}");
        let err = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_MAX_RESCHEDULES", "-1"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_MAX_RESCHEDULES"), "{err}");
        let err = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_GRPC_ADDR", "localhost"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_GRPC_ADDR"), "{err}");
        let err = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_REMINDER_LEADS", "1h"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_REMINDER_LEADS"), "{err}");
        let err = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_START_GRANULARITY", "7s"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("SKILEEZ_START_GRANULARITY"),
            "{err}"
        );
        let err = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_MAX_HORIZON", "1m"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_MAX_HORIZON"), "{err}");
    }

    #[test]
    fn a_missing_or_short_jwt_secret_stops_the_start_without_printing_it() {
        let err = config(&[]).unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_JWT_SECRET"), "{err}");
        let err = config(&[("SKILEEZ_JWT_SECRET", "short-secret")]).unwrap_err();
        assert!(!err.to_string().contains("short-secret"), "{err}");
    }

    #[test]
    fn the_database_url_is_not_printed_by_debug() {
        let config = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("DATABASE_URL", "postgres://u:hunter2hunter2@db/skileez"),
        ])
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{config:?}").contains(SECRET));
    }
}
