//! The service's configuration, read once from the environment and validated
//! there: a bad value stops the start with a message naming the variable and
//! the form it expects.
//!
//! The lead times come from the same variables, with the same defaults, as the
//! scheduling service's (`SKILEEZ_READY_LEAD`, `SKILEEZ_MISSED_AFTER`,
//! `SKILEEZ_OVERRUN_GRACE`, `SKILEEZ_REMINDER_LEADS`): the two must agree, or
//! timers fire early (scheduling answers TIMER_NOT_DUE with the right moment,
//! and the timer is re-armed for it) or late. The few variables are parsed
//! here rather than through the scheduling crate, which would bring its whole
//! server along.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;
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
    /// Where the scheduling service's `CallTimerService` answers.
    pub scheduling_url: String,
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is not set: {hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var}={value:?} is not valid: expected {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot read {var} file {path}: {reason}")]
    File {
        var: &'static str,
        path: String,
        reason: String,
    },
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/skileez";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_SCHEDULING_URL: &str = "http://127.0.0.1:50051";
pub const DEFAULT_JWT_ISSUER: &str = "skileez";
pub const DEFAULT_JWT_AUDIENCE: &str = "skileez-scheduling";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let defaults = Policy::default();
        let (reminder_day_lead, reminder_hour_lead) = env.reminder_leads(
            "SKILEEZ_REMINDER_LEADS",
            (defaults.reminder_day_lead, defaults.reminder_hour_lead),
        )?;
        let policy = Policy {
            ready_lead: env.chrono_duration("SKILEEZ_READY_LEAD", defaults.ready_lead)?,
            missed_after: env.chrono_duration("SKILEEZ_MISSED_AFTER", defaults.missed_after)?,
            overrun_grace: env.chrono_duration("SKILEEZ_OVERRUN_GRACE", defaults.overrun_grace)?,
            reminder_day_lead,
            reminder_hour_lead,
            ..defaults
        };

        let lease = env.duration("SKILEEZ_TIMERS_LEASE", Duration::from_secs(30))?;
        let claim_ahead = env.duration("SKILEEZ_TIMERS_CLAIM_AHEAD", Duration::from_millis(200))?;
        if lease < Duration::from_secs(1) || lease <= claim_ahead * 2 {
            return Err(ConfigError::Invalid {
                var: "SKILEEZ_TIMERS_LEASE",
                value: lookup("SKILEEZ_TIMERS_LEASE").unwrap_or_default(),
                expected: "a duration of at least 1s and more than twice SKILEEZ_TIMERS_CLAIM_AHEAD",
            });
        }
        let claim_batch = env.number("SKILEEZ_TIMERS_CLAIM_BATCH", 500u32)?;
        let max_in_flight = env.number("SKILEEZ_TIMERS_MAX_IN_FLIGHT", 256usize)?;
        let max_attempts = env.number("SKILEEZ_TIMERS_MAX_ATTEMPTS", 20u32)?;
        for (var, value) in [
            ("SKILEEZ_TIMERS_CLAIM_BATCH", claim_batch as usize),
            ("SKILEEZ_TIMERS_MAX_IN_FLIGHT", max_in_flight),
            ("SKILEEZ_TIMERS_MAX_ATTEMPTS", max_attempts as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    var,
                    value: "0".to_owned(),
                    expected: "a whole number of at least 1",
                });
            }
        }

        Ok(Config {
            database_url: SecretString::from(
                env.string("DATABASE_URL")
                    .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            ),
            database_max_connections: env.number("SKILEEZ_TIMERS_DATABASE_MAX_CONNECTIONS", 8)?,
            nats_url: env
                .string("NATS_URL")
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned()),
            stream_replicas: env.number("SKILEEZ_STREAM_REPLICAS", 1)?,
            scheduling_url: env
                .string("SKILEEZ_SCHEDULING_URL")
                .unwrap_or_else(|| DEFAULT_SCHEDULING_URL.to_owned()),
            token: env.token()?,
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

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn string(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        humantime::parse_duration(value.trim()).map_err(|_| ConfigError::Invalid {
            var,
            value,
            expected: "a duration such as 200ms, 30s, 5m or 7days",
        })
    }

    fn chrono_duration(
        &self,
        var: &'static str,
        default: chrono::Duration,
    ) -> Result<chrono::Duration, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        humantime::parse_duration(value.trim())
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .ok_or(ConfigError::Invalid {
                var,
                value,
                expected: "a duration such as 90s, 5m, 24h or 180days",
            })
    }

    fn number<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        value.trim().parse().map_err(|_| ConfigError::Invalid {
            var,
            value,
            expected: "a whole non-negative number",
        })
    }

    fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected: "true or false",
            }),
        }
    }

    /// `SKILEEZ_REMINDER_LEADS=24h,1h`, read as scheduling reads it.
    fn reminder_leads(
        &self,
        var: &'static str,
        default: (chrono::Duration, chrono::Duration),
    ) -> Result<(chrono::Duration, chrono::Duration), ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        let invalid = || ConfigError::Invalid {
            var,
            value: value.clone(),
            expected: "two durations, the day reminder's lead then the hour reminder's, such as 24h,1h",
        };
        let leads: Vec<chrono::Duration> = value
            .split(',')
            .map(|part| {
                humantime::parse_duration(part.trim())
                    .ok()
                    .and_then(|d| chrono::Duration::from_std(d).ok())
            })
            .collect::<Option<_>>()
            .ok_or_else(invalid)?;
        match leads[..] {
            [day, hour] if day > hour && hour > chrono::Duration::zero() => Ok((day, hour)),
            _ => Err(invalid()),
        }
    }

    fn token(&self) -> Result<TokenConfig, ConfigError> {
        if let Some(token) = self.string("SKILEEZ_SERVICE_TOKEN") {
            return Ok(TokenConfig::Static(SecretString::from(
                token.trim().to_owned(),
            )));
        }
        if let Some(path) = self.string("SKILEEZ_SERVICE_TOKEN_FILE") {
            // Read once here so that a wrong path stops the start.
            read_file("SKILEEZ_SERVICE_TOKEN_FILE", &path)?;
            return Ok(TokenConfig::File(PathBuf::from(path)));
        }
        let secret = if let Some(secret) = self.string("SKILEEZ_JWT_SECRET") {
            Some(("SKILEEZ_JWT_SECRET", secret))
        } else if let Some(path) = self.string("SKILEEZ_JWT_SECRET_FILE") {
            let secret = read_file("SKILEEZ_JWT_SECRET_FILE", &path)?;
            Some(("SKILEEZ_JWT_SECRET_FILE", secret.trim().to_owned()))
        } else {
            None
        };
        let Some((var, secret)) = secret else {
            return Err(ConfigError::Missing {
                var: "SKILEEZ_SERVICE_TOKEN",
                hint: "set SKILEEZ_SERVICE_TOKEN or SKILEEZ_SERVICE_TOKEN_FILE (a `service` token for scheduling), \
                       or SKILEEZ_JWT_SECRET / SKILEEZ_JWT_SECRET_FILE to mint one",
            });
        };
        if secret.len() < 32 {
            return Err(ConfigError::Invalid {
                var,
                value: "***".to_owned(),
                expected: "an HS256 secret of at least 32 bytes",
            });
        }
        Ok(TokenConfig::Mint {
            secret: SecretString::from(secret),
            issuer: self
                .string("SKILEEZ_JWT_ISSUER")
                .unwrap_or_else(|| DEFAULT_JWT_ISSUER.to_owned()),
            audience: self
                .string("SKILEEZ_JWT_AUDIENCE")
                .unwrap_or_else(|| DEFAULT_JWT_AUDIENCE.to_owned()),
        })
    }
}

fn read_file(var: &'static str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        var,
        path: path.to_owned(),
        reason: e.to_string(),
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
