//! The service's configuration, read once from the environment (12-factor) and
//! validated there: a bad value stops the start with a message naming the
//! variable and the form it expects.

use std::{net::SocketAddr, path::PathBuf, time::Duration as StdDuration};

use secrecy::SecretString;
use skileez_domain::Policy;

/// Everything the scheduling service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// May hold a password, hence secret.
    pub database_url: SecretString,
    pub database_max_connections: u32,
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
    /// Whether this instance runs the outbox relay (one instance at a time
    /// publishes; the others stand by).
    pub relay: bool,
    /// Whether this instance consumes the platform's contract and user
    /// events into the directory.
    pub ingest: bool,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    pub issuer: String,
    pub audience: String,
}

#[derive(Debug, Clone)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(SecretString),
    /// PEM public key for RS256 or EdDSA (Ed25519) tokens.
    PublicKeyPem { pem: String, path: PathBuf },
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

pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/skileez";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
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
        let policy = Policy {
            min_notice: env.duration("SKILEEZ_MIN_NOTICE", defaults.min_notice)?,
            max_horizon: env.duration("SKILEEZ_MAX_HORIZON", defaults.max_horizon)?,
            ready_lead: env.duration("SKILEEZ_READY_LEAD", defaults.ready_lead)?,
            missed_after: env.duration("SKILEEZ_MISSED_AFTER", defaults.missed_after)?,
            overrun_grace: env.duration("SKILEEZ_OVERRUN_GRACE", defaults.overrun_grace)?,
            reschedule_cutoff: env
                .duration("SKILEEZ_RESCHEDULE_CUTOFF", defaults.reschedule_cutoff)?,
            late_cancel_window: env
                .duration("SKILEEZ_LATE_CANCEL_WINDOW", defaults.late_cancel_window)?,
            coach_buffer: env.duration("SKILEEZ_COACH_BUFFER", defaults.coach_buffer)?,
            max_reschedules: env.number("SKILEEZ_MAX_RESCHEDULES", defaults.max_reschedules)?,
            refund_session_on_late_cancel: env.flag(
                "SKILEEZ_REFUND_ON_LATE_CANCEL",
                defaults.refund_session_on_late_cancel,
            )?,
            refund_session_on_missed: env.flag(
                "SKILEEZ_REFUND_ON_MISSED",
                defaults.refund_session_on_missed,
            )?,
            ..defaults.clone()
        };
        let (reminder_day_lead, reminder_hour_lead) = env.reminder_leads(
            "SKILEEZ_REMINDER_LEADS",
            (defaults.reminder_day_lead, defaults.reminder_hour_lead),
        )?;
        let policy = Policy {
            reminder_day_lead,
            reminder_hour_lead,
            start_granularity: env
                .duration("SKILEEZ_START_GRANULARITY", defaults.start_granularity)?,
            ..policy
        };
        policy.validate().map_err(|error| {
            let var = policy_var(error.field().unwrap_or_default());
            ConfigError::Invalid {
                var,
                value: lookup(var).unwrap_or_default(),
                expected: policy_expectation(var),
            }
        })?;

        Ok(Config {
            database_url: SecretString::from(
                env.string("DATABASE_URL")
                    .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            ),
            database_max_connections: env.number("SKILEEZ_DATABASE_MAX_CONNECTIONS", 16)?,
            nats_url: env
                .string("NATS_URL")
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned()),
            grpc_addr: env.parse(
                "SKILEEZ_GRPC_ADDR",
                DEFAULT_GRPC_ADDR,
                "a socket address such as 127.0.0.1:50051",
            )?,
            jwt: JwtConfig {
                key: env.jwt_key()?,
                issuer: env
                    .string("SKILEEZ_JWT_ISSUER")
                    .unwrap_or_else(|| DEFAULT_JWT_ISSUER.to_owned()),
                audience: env
                    .string("SKILEEZ_JWT_AUDIENCE")
                    .unwrap_or_else(|| DEFAULT_JWT_AUDIENCE.to_owned()),
            },
            policy,
            feed_poll_interval: env
                .duration(
                    "SKILEEZ_FEED_POLL_INTERVAL",
                    chrono::Duration::milliseconds(250),
                )?
                .to_std()
                .unwrap_or(StdDuration::from_millis(250)),
            stream_replicas: env.number("SKILEEZ_STREAM_REPLICAS", 1)?,
            relay: env.flag("SKILEEZ_RELAY", true)?,
            ingest: env.flag("SKILEEZ_INGEST", true)?,
        })
    }
}

/// The variable behind a policy field, to name it in errors.
fn policy_var(field: &str) -> &'static str {
    match field {
        "min_notice" => "SKILEEZ_MIN_NOTICE",
        "max_horizon" => "SKILEEZ_MAX_HORIZON",
        "ready_lead" => "SKILEEZ_READY_LEAD",
        "missed_after" => "SKILEEZ_MISSED_AFTER",
        "overrun_grace" => "SKILEEZ_OVERRUN_GRACE",
        "reschedule_cutoff" => "SKILEEZ_RESCHEDULE_CUTOFF",
        "late_cancel_window" => "SKILEEZ_LATE_CANCEL_WINDOW",
        "reminder_day_lead" | "reminder_hour_lead" => "SKILEEZ_REMINDER_LEADS",
        "coach_buffer" => "SKILEEZ_COACH_BUFFER",
        "start_granularity" => "SKILEEZ_START_GRANULARITY",
        _ => "SKILEEZ_MAX_HORIZON",
    }
}

fn policy_expectation(var: &str) -> &'static str {
    match var {
        "SKILEEZ_START_GRANULARITY" => {
            "a whole number of seconds dividing a minute, such as 1s, 15s or 1m"
        }
        "SKILEEZ_MAX_HORIZON" => "a duration longer than SKILEEZ_MIN_NOTICE",
        _ => "a non-negative duration such as 90s, 5m or 24h",
    }
}

/// Reads the HS256 secret (`SKILEEZ_JWT_SECRET` or the file named by
/// `SKILEEZ_JWT_SECRET_FILE`) or a public key (`SKILEEZ_JWT_PUBLIC_KEY_FILE`).
/// Shared with the CLI, which mints development tokens with the same secret.
pub fn jwt_key_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<JwtKey, ConfigError> {
    Env(&lookup).jwt_key()
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn string(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn duration(
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

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: &str,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let value = self.string(var).unwrap_or_else(|| default.to_owned());
        value.trim().parse().map_err(|_| ConfigError::Invalid {
            var,
            value,
            expected,
        })
    }

    /// `SKILEEZ_REMINDER_LEADS=24h,1h`: the day reminder's lead, then the
    /// hour reminder's.
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

    fn jwt_key(&self) -> Result<JwtKey, ConfigError> {
        if let Some(secret) = self.string("SKILEEZ_JWT_SECRET") {
            return validate_secret("SKILEEZ_JWT_SECRET", secret);
        }
        if let Some(path) = self.string("SKILEEZ_JWT_SECRET_FILE") {
            let secret = read_file("SKILEEZ_JWT_SECRET_FILE", &path)?;
            return validate_secret("SKILEEZ_JWT_SECRET_FILE", secret.trim().to_owned());
        }
        if let Some(path) = self.string("SKILEEZ_JWT_PUBLIC_KEY_FILE") {
            let pem = read_file("SKILEEZ_JWT_PUBLIC_KEY_FILE", &path)?;
            return Ok(JwtKey::PublicKeyPem {
                pem,
                path: PathBuf::from(path),
            });
        }
        Err(ConfigError::Missing {
            var: "SKILEEZ_JWT_SECRET",
            hint: "set SKILEEZ_JWT_SECRET (HS256), SKILEEZ_JWT_SECRET_FILE, or SKILEEZ_JWT_PUBLIC_KEY_FILE (RS256/EdDSA PEM)",
        })
    }
}

fn validate_secret(var: &'static str, secret: String) -> Result<JwtKey, ConfigError> {
    // HS256 with a short key is brute-forceable; RFC 7518 §3.2 asks for at
    // least the hash size (32 bytes).
    if secret.len() < 32 {
        return Err(ConfigError::Invalid {
            var,
            value: "***".to_owned(),
            expected: "an HS256 secret of at least 32 bytes",
        });
    }
    Ok(JwtKey::Secret(SecretString::from(secret)))
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
