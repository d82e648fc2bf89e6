//! The service's configuration, read once from the environment and validated
//! there: a bad value stops the start with a message naming the variable and
//! the form it expects.
//!
//! The lead times come from the same variables, with the same defaults, as the
//! scheduling service's (`SKILEEZ_READY_LEAD`, `SKILEEZ_MISSED_AFTER`,
//! `SKILEEZ_OVERRUN_GRACE`, `SKILEEZ_REMINDER_LEADS`): the two must agree, or
//! timers fire early (scheduling answers TIMER_NOT_DUE with the right moment,
//! and the timer is re-armed for it) or late. `skileez_config` reads the
//! policy for both.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;
use skileez_config::Env;
use skileez_domain::Policy;

/// Everything the timers service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// May hold a password, hence secret.
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub nats_url: String,
    /// JetStream replicas, used when this service creates the streams.
    pub stream_replicas: usize,
    /// NATS authentication and TLS (`skileez_bus::NatsSecurity`).
    pub nats_security: skileez_bus::NatsSecurity,
    /// Whether this service creates the streams and bucket, or only checks
    /// them (`SKILEEZ_NATS_MANAGE_TOPOLOGY`).
    pub nats_manage_topology: bool,
    /// Where the scheduling service's `CallTimerService` answers.
    pub scheduling_url: String,
    /// TLS towards scheduling (`SKILEEZ_SCHEDULING_TLS_CA_FILE`, `…_CERT_FILE`
    /// and `…_KEY_FILE` for mTLS, `…_DOMAIN`); an `https` URL without them
    /// trusts the system's roots.
    pub scheduling_tls: Option<skileez_edge::ClientTls>,
    pub token: TokenConfig,
    /// Only the lead times are used; they must match scheduling's.
    pub policy: Policy,
    /// This instance's name in `timers.lease_owner`; unique per process.
    pub instance_id: String,
    /// How long a claimed timer is this instance's. An instance that dies
    /// holding timers delays them by at most this long.
    pub lease: Duration,
    /// Timers due within this window are claimed ahead and slept to their
    /// exact moment in-process.
    pub claim_ahead: Duration,
    /// Timers claimed per statement.
    pub claim_batch: u32,
    /// Commands in flight at once (and, times four, timers held claimed).
    pub max_in_flight: usize,
    /// Claims of one timer after which a retryable failure becomes `failed`.
    pub max_attempts: u32,
    /// Settled timers (and this consumer's inbox rows) older than this are purged.
    pub retention: Duration,
    /// The longest the claim loop sleeps without a wake-up. Only a safety net
    /// against a lost notification: the loop wakes at the next due timer, or
    /// when one due sooner is written.
    pub max_idle: Duration,
    /// Whether this instance consumes call events (off only for benchmarks
    /// that seed timers directly).
    pub consume: bool,
}

/// How the service authenticates to scheduling as role `service`.
#[derive(Debug, Clone)]
pub enum TokenConfig {
    /// A ready-made token (`SKILEEZ_SERVICE_TOKEN`).
    Static(SecretString),
    /// A token in a file, re-read as it may be rotated (`SKILEEZ_SERVICE_TOKEN_FILE`).
    File(PathBuf),
    /// Minted here with the HS256 secret scheduling verifies with
    /// (`SKILEEZ_JWT_SECRET[_FILE]`), sub `timers`, role `service`, refreshed
    /// well before it expires.
    Mint {
        secret: SecretString,
        issuer: String,
        audience: String,
    },
}

pub use skileez_config::ConfigError;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/skileez";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_SCHEDULING_URL: &str = "http://127.0.0.1:50051";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        // The whole policy, validated as scheduling validates it, though
        // only the lead times are used here.
        let policy = env.policy()?;

        let lease = env.duration("SKILEEZ_TIMERS_LEASE", Duration::from_secs(30))?;
        let claim_ahead = env.duration("SKILEEZ_TIMERS_CLAIM_AHEAD", Duration::from_millis(200))?;
        if lease < Duration::from_secs(1) || lease <= claim_ahead * 2 {
            return Err(ConfigError::Invalid {
                var: "SKILEEZ_TIMERS_LEASE",
                value: lookup("SKILEEZ_TIMERS_LEASE").unwrap_or_default(),
                expected: "a duration of at least 1s and more than twice SKILEEZ_TIMERS_CLAIM_AHEAD",
            });
        }
        let claim_batch = env.positive("SKILEEZ_TIMERS_CLAIM_BATCH", 500u32)?;
        let max_in_flight = env.positive("SKILEEZ_TIMERS_MAX_IN_FLIGHT", 256usize)?;
        let max_attempts = env.positive("SKILEEZ_TIMERS_MAX_ATTEMPTS", 20u32)?;

        Ok(Config {
            database_url: env.database_url(DEFAULT_DATABASE_URL)?,
            database_max_connections: env.number("SKILEEZ_TIMERS_DATABASE_MAX_CONNECTIONS", 8)?,
            nats_url: env.string_or("NATS_URL", DEFAULT_NATS_URL),
            stream_replicas: env.number("SKILEEZ_STREAM_REPLICAS", 1)?,
            nats_security: skileez_bus::NatsSecurity::from_env(&env)?,
            nats_manage_topology: env.flag("SKILEEZ_NATS_MANAGE_TOPOLOGY", true)?,
            scheduling_url: env.string_or("SKILEEZ_SCHEDULING_URL", DEFAULT_SCHEDULING_URL),
            scheduling_tls: skileez_edge::ClientTls::from_env(&env, &SCHEDULING_TLS)?,
            token: token(&env)?,
            policy,
            instance_id: env
                .string("SKILEEZ_TIMERS_INSTANCE")
                .unwrap_or_else(default_instance_id),
            lease,
            claim_ahead,
            claim_batch,
            max_in_flight,
            max_attempts,
            retention: env.duration(
                "SKILEEZ_TIMERS_RETENTION",
                Duration::from_secs(7 * 24 * 3600),
            )?,
            max_idle: env
                .duration("SKILEEZ_TIMERS_MAX_IDLE", Duration::from_secs(30))?
                .max(Duration::from_millis(100)),
            consume: env.flag("SKILEEZ_TIMERS_CONSUME", true)?,
        })
    }
}

/// `<host>-<pid>-<random>`: readable in `timers list`, unique per process.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "timers".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..6])
}

/// The variables of the client TLS towards scheduling.
pub const SCHEDULING_TLS: skileez_edge::ClientTlsVars = skileez_edge::ClientTlsVars {
    ca: "SKILEEZ_SCHEDULING_TLS_CA_FILE",
    cert: "SKILEEZ_SCHEDULING_TLS_CERT_FILE",
    key: "SKILEEZ_SCHEDULING_TLS_KEY_FILE",
    domain: "SKILEEZ_SCHEDULING_TLS_DOMAIN",
};

/// How the service authenticates to scheduling, from
/// `SKILEEZ_SERVICE_TOKEN[_FILE]` or else the HS256 secret.
fn token(env: &Env) -> Result<TokenConfig, ConfigError> {
    if let Some((_, token)) = env.secret("SKILEEZ_SERVICE_TOKEN", "SKILEEZ_SERVICE_TOKEN_FILE")? {
        // A file is named again rather than its content kept: it is re-read
        // as the token is rotated. Reading it above stops a wrong path at start.
        return Ok(match env.string("SKILEEZ_SERVICE_TOKEN") {
            Some(_) => TokenConfig::Static(token),
            None => TokenConfig::File(PathBuf::from(
                env.string("SKILEEZ_SERVICE_TOKEN_FILE").unwrap_or_default(),
            )),
        });
    }
    let Some(secret) = skileez_auth::hs256_secret(env)? else {
        return Err(ConfigError::Missing {
            var: "SKILEEZ_SERVICE_TOKEN",
            hint: "set SKILEEZ_SERVICE_TOKEN or SKILEEZ_SERVICE_TOKEN_FILE (a `service` token for scheduling), \
                   or SKILEEZ_JWT_SECRET / SKILEEZ_JWT_SECRET_FILE to mint one",
        });
    };
    Ok(TokenConfig::Mint {
        secret,
        issuer: env.string_or("SKILEEZ_JWT_ISSUER", skileez_auth::DEFAULT_JWT_ISSUER),
        audience: env.string_or("SKILEEZ_JWT_AUDIENCE", skileez_auth::DEFAULT_JWT_AUDIENCE),
    })
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
    fn defaults_match_the_spec_and_the_design_notes() {
        let config = config(&[("SKILEEZ_JWT_SECRET", SECRET)]).unwrap();
        assert_eq!(config.policy, Policy::default());
        assert_eq!(config.scheduling_url, DEFAULT_SCHEDULING_URL);
        assert_eq!(config.lease, Duration::from_secs(30));
        assert_eq!(config.claim_ahead, Duration::from_millis(200));
        assert_eq!(config.retention, Duration::from_secs(7 * 24 * 3600));
        assert!(matches!(config.token, TokenConfig::Mint { .. }));
        assert!(config.consume);
    }

    #[test]
    fn lead_times_are_read_from_schedulings_variables() {
        let config = config(&[
            ("SKILEEZ_JWT_SECRET", SECRET),
            ("SKILEEZ_READY_LEAD", "2s"),
            ("SKILEEZ_MISSED_AFTER", "3s"),
            ("SKILEEZ_OVERRUN_GRACE", "1s"),
            ("SKILEEZ_REMINDER_LEADS", "20s, 10s"),
        ])
        .unwrap();
        assert_eq!(config.policy.ready_lead, chrono::Duration::seconds(2));
        assert_eq!(config.policy.missed_after, chrono::Duration::seconds(3));
        assert_eq!(config.policy.overrun_grace, chrono::Duration::seconds(1));
        assert_eq!(
            config.policy.reminder_day_lead,
            chrono::Duration::seconds(20)
        );
        assert_eq!(
            config.policy.reminder_hour_lead,
            chrono::Duration::seconds(10)
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("SKILEEZ_READY_LEAD", "soon"),
            ("SKILEEZ_REMINDER_LEADS", "1h"),
            ("SKILEEZ_TIMERS_LEASE", "100ms"),
            ("SKILEEZ_TIMERS_CLAIM_BATCH", "0"),
            ("SKILEEZ_TIMERS_CONSUME", "maybe"),
        ] {
            let err = config(&[("SKILEEZ_JWT_SECRET", SECRET), (var, value)]).unwrap_err();
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn a_token_is_required_and_secrets_are_not_printed() {
        let err = config(&[]).unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_SERVICE_TOKEN"), "{err}");
        let err = config(&[("SKILEEZ_JWT_SECRET", "short-secret")]).unwrap_err();
        assert!(!err.to_string().contains("short-secret"), "{err}");
        let config = config(&[
            ("SKILEEZ_SERVICE_TOKEN", "tok.en.value"),
            ("DATABASE_URL", "postgres://u:hunter2hunter2@db/skileez"),
        ])
        .unwrap();
        assert!(matches!(config.token, TokenConfig::Static(_)));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("tok.en.value"));
    }
}
