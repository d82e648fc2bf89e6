//! Settings read once from the environment (12-factor) and validated there,
//! the same way in every service: a bad value stops the start with a
//! [`ConfigError`] naming the variable and the form it expects, and a secret
//! comes from its variable or from the file its `*_FILE` variable names,
//! never into an error message.
//!
//! Services read through [`Env`], built over a lookup function: the process
//! environment in `main` ([`Env::process`]), a map in tests, so that tests
//! need not touch the process environment.
//!
//! [`Env::policy`] reads the scheduling policy (lead times, notice, limits):
//! the scheduling service decides with it and the timer and notification
//! services time their work by it, so all of them must read it alike.

use std::{str::FromStr, time::Duration};

use secrecy::SecretString;
use skileez_domain::Policy;

/// A setting that stops the start; names its variable.
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

/// Shown instead of a secret's value in errors.
pub const REDACTED: &str = "***";

/// Reads settings through a lookup function. An empty or blank value counts
/// as unset, so `VAR=` in a compose file means "the default".
pub struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

fn process_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Env(lookup)
    }

    /// The process environment.
    pub fn process() -> Env<'static> {
        Env(&process_lookup)
    }

    /// The value, trimmed of nothing; `None` when unset or blank.
    pub fn string(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    /// The value, or `default` when unset.
    pub fn string_or(&self, var: &str, default: &str) -> String {
        self.string(var).unwrap_or_else(|| default.to_owned())
    }

    /// A duration in humantime's form (`200ms`, `90s`, `5m`, `24h`, `7days`).
    pub fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        humantime::parse_duration(value.trim()).map_err(|_| ConfigError::Invalid {
            var,
            value,
            expected: "a duration such as 200ms, 90s, 5m, 24h or 7days",
        })
    }

    /// Two durations, `min,max` with `0 < min <= max`, such as a back-off's
    /// first delay and its longest.
    pub fn duration_pair(
        &self,
        var: &'static str,
        default: (Duration, Duration),
        expected: &'static str,
    ) -> Result<(Duration, Duration), ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        let parsed: Option<Vec<Duration>> = value
            .split(',')
            .map(|part| humantime::parse_duration(part.trim()).ok())
            .collect();
        match parsed.as_deref() {
            Some(&[min, max]) if min > Duration::ZERO && min <= max => Ok((min, max)),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected,
            }),
        }
    }

    /// A UTC time of day, `HH:MM` or `HH:MM:SS`.
    pub fn time_of_day(
        &self,
        var: &'static str,
        default: chrono::NaiveTime,
    ) -> Result<chrono::NaiveTime, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        chrono::NaiveTime::parse_from_str(value.trim(), "%H:%M:%S")
            .or_else(|_| chrono::NaiveTime::parse_from_str(value.trim(), "%H:%M"))
            .map_err(|_| ConfigError::Invalid {
                var,
                value,
                expected: "a UTC time of day such as 02:00 or 02:00:30",
            })
    }

    /// [`Env::duration`] as the domain's `chrono::Duration`.
    pub fn chrono_duration(
        &self,
        var: &'static str,
        default: chrono::Duration,
    ) -> Result<chrono::Duration, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        parse_chrono(&value).ok_or(ConfigError::Invalid {
            var,
            value,
            expected: "a duration such as 90s, 5m, 24h or 180days",
        })
    }

    /// A whole non-negative number.
    pub fn number<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        value.trim().parse().map_err(|_| ConfigError::Invalid {
            var,
            value,
            expected: "a whole non-negative number",
        })
    }

    /// [`Env::number`], at least 1.
    pub fn positive<T: FromStr + Default + PartialEq>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        let number = self.number(var, default)?;
        if number == T::default() {
            return Err(ConfigError::Invalid {
                var,
                value: "0".to_owned(),
                expected: "a whole number of at least 1",
            });
        }
        Ok(number)
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
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

    /// Anything `FromStr` (socket addresses, URLs), `default` when unset.
    pub fn parse<T: FromStr>(
        &self,
        var: &'static str,
        default: &str,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let value = self.string_or(var, default);
        value.trim().parse().map_err(|_| ConfigError::Invalid {
            var,
            value,
            expected,
        })
    }

    /// Like [`Env::parse`], `None` when unset (a feature that is off).
    pub fn parse_opt<T: FromStr>(
        &self,
        var: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        self.string(var)
            .map(|value| {
                value.trim().parse().map_err(|_| ConfigError::Invalid {
                    var,
                    value,
                    expected,
                })
            })
            .transpose()
    }

    /// A secret from `var`, or from the file named by `file_var`, trimmed of
    /// surrounding white space (editors add a final newline). Returns the
    /// variable it came from, for errors about its value.
    pub fn secret(
        &self,
        var: &'static str,
        file_var: &'static str,
    ) -> Result<Option<(&'static str, SecretString)>, ConfigError> {
        if let Some(value) = self.string(var) {
            return Ok(Some((var, SecretString::from(value.trim().to_owned()))));
        }
        if let Some(path) = self.string(file_var) {
            let value = read_file(file_var, &path)?;
            return Ok(Some((
                file_var,
                SecretString::from(value.trim().to_owned()),
            )));
        }
        Ok(None)
    }

    /// The PostgreSQL URL, which may hold a password: from `DATABASE_URL`,
    /// or from the file `DATABASE_URL_FILE` names (a mounted secret), else
    /// `default`.
    pub fn database_url(&self, default: &str) -> Result<SecretString, ConfigError> {
        Ok(self
            .secret("DATABASE_URL", "DATABASE_URL_FILE")?
            .map_or_else(|| SecretString::from(default.to_owned()), |(_, url)| url))
    }

    /// The scheduling policy from `SKILEEZ_MIN_NOTICE`, `SKILEEZ_MAX_HORIZON`,
    /// `SKILEEZ_READY_LEAD`, `SKILEEZ_MISSED_AFTER`, `SKILEEZ_OVERRUN_GRACE`,
    /// `SKILEEZ_RESCHEDULE_CUTOFF`, `SKILEEZ_LATE_CANCEL_WINDOW`,
    /// `SKILEEZ_COACH_BUFFER`, `SKILEEZ_MAX_RESCHEDULES`,
    /// `SKILEEZ_REFUND_ON_LATE_CANCEL`, `SKILEEZ_REFUND_ON_MISSED`,
    /// `SKILEEZ_REMINDER_LEADS` (`24h,1h`) and `SKILEEZ_START_GRANULARITY`,
    /// each defaulting to SPEC's value, validated as a whole.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let defaults = Policy::default();
        let (reminder_day_lead, reminder_hour_lead) = self.reminder_leads(
            "SKILEEZ_REMINDER_LEADS",
            (defaults.reminder_day_lead, defaults.reminder_hour_lead),
        )?;
        let policy = Policy {
            min_notice: self.chrono_duration("SKILEEZ_MIN_NOTICE", defaults.min_notice)?,
            max_horizon: self.chrono_duration("SKILEEZ_MAX_HORIZON", defaults.max_horizon)?,
            ready_lead: self.chrono_duration("SKILEEZ_READY_LEAD", defaults.ready_lead)?,
            missed_after: self.chrono_duration("SKILEEZ_MISSED_AFTER", defaults.missed_after)?,
            overrun_grace: self.chrono_duration("SKILEEZ_OVERRUN_GRACE", defaults.overrun_grace)?,
            reschedule_cutoff: self
                .chrono_duration("SKILEEZ_RESCHEDULE_CUTOFF", defaults.reschedule_cutoff)?,
            late_cancel_window: self
                .chrono_duration("SKILEEZ_LATE_CANCEL_WINDOW", defaults.late_cancel_window)?,
            coach_buffer: self.chrono_duration("SKILEEZ_COACH_BUFFER", defaults.coach_buffer)?,
            max_reschedules: self.number("SKILEEZ_MAX_RESCHEDULES", defaults.max_reschedules)?,
            refund_session_on_late_cancel: self.flag(
                "SKILEEZ_REFUND_ON_LATE_CANCEL",
                defaults.refund_session_on_late_cancel,
            )?,
            refund_session_on_missed: self.flag(
                "SKILEEZ_REFUND_ON_MISSED",
                defaults.refund_session_on_missed,
            )?,
            reminder_day_lead,
            reminder_hour_lead,
            start_granularity: self
                .chrono_duration("SKILEEZ_START_GRANULARITY", defaults.start_granularity)?,
            ..defaults
        };
        policy.validate().map_err(|error| {
            let var = policy_var(error.field().unwrap_or_default());
            ConfigError::Invalid {
                var,
                value: self.string(var).unwrap_or_default(),
                expected: policy_expectation(var),
            }
        })?;
        Ok(policy)
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
            .map(parse_chrono)
            .collect::<Option<_>>()
            .ok_or_else(invalid)?;
        match leads[..] {
            [day, hour] if day > hour && hour > chrono::Duration::zero() => Ok((day, hour)),
            _ => Err(invalid()),
        }
    }
}

fn parse_chrono(value: &str) -> Option<chrono::Duration> {
    humantime::parse_duration(value.trim())
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
}

/// Reads a file a setting names; the error names the setting.
pub fn read_file(var: &'static str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        var,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The variable behind a policy field, to name it in errors.
fn policy_var(field: &str) -> &'static str {
    match field {
        "min_notice" => "SKILEEZ_MIN_NOTICE",
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn with<T>(vars: &[(&str, &str)], read: impl FnOnce(&Env) -> T) -> T {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |name: &str| map.get(name).cloned();
        read(&Env::new(&lookup))
    }

    #[test]
    fn unset_and_blank_values_take_the_default() {
        with(&[("A", "  ")], |env| {
            assert_eq!(
                env.duration("A", Duration::from_secs(3)),
                Ok(Duration::from_secs(3))
            );
            assert_eq!(env.number("B", 7u32), Ok(7));
            assert_eq!(env.flag("A", true), Ok(true));
            assert_eq!(env.string_or("A", "x"), "x");
            assert_eq!(env.parse_opt::<u16>("A", "a port"), Ok(None));
        });
    }

    #[test]
    fn values_are_read_in_human_form() {
        with(
            &[
                ("D", "1m 30s"),
                ("N", " 12 "),
                ("F", "Off"),
                ("P", "127.0.0.1:9"),
            ],
            |env| {
                assert_eq!(
                    env.duration("D", Duration::ZERO),
                    Ok(Duration::from_secs(90))
                );
                assert_eq!(
                    env.chrono_duration("D", chrono::Duration::zero()),
                    Ok(chrono::Duration::seconds(90))
                );
                assert_eq!(env.number("N", 0u32), Ok(12));
                assert_eq!(env.flag("F", true), Ok(false));
                assert_eq!(
                    env.parse::<std::net::SocketAddr>("P", "0.0.0.0:1", "an address")
                        .map(|a| a.port()),
                    Ok(9)
                );
            },
        );
    }

    #[test]
    fn a_bad_value_names_its_variable_and_the_form_expected() {
        with(&[("SKILEEZ_X", "soon"), ("SKILEEZ_Z", "0")], |env| {
            let err = env.duration("SKILEEZ_X", Duration::ZERO).unwrap_err();
            assert!(err.to_string().starts_with("SKILEEZ_X=\"soon\""), "{err}");
            assert!(err.to_string().contains("a duration such as"), "{err}");
            let err = env.flag("SKILEEZ_X", true).unwrap_err();
            assert!(err.to_string().contains("true or false"), "{err}");
            let err = env.positive("SKILEEZ_Z", 5u32).unwrap_err();
            assert!(err.to_string().contains("at least 1"), "{err}");
        });
    }

    #[test]
    fn secrets_come_from_the_variable_or_its_file_and_files_must_exist() {
        let dir = std::env::temp_dir().join(format!("skileez-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let path = file.to_str().unwrap();
        with(&[("S_FILE", path)], |env| {
            let (var, secret) = env.secret("S", "S_FILE").unwrap().unwrap();
            assert_eq!((var, secret.expose_secret()), ("S_FILE", "from-file"));
        });
        with(&[("S", "direct"), ("S_FILE", path)], |env| {
            let (var, secret) = env.secret("S", "S_FILE").unwrap().unwrap();
            assert_eq!((var, secret.expose_secret()), ("S", "direct"));
        });
        with(&[("S_FILE", "/nonexistent/skileez")], |env| {
            let err = env.secret("S", "S_FILE").unwrap_err();
            assert!(err.to_string().contains("S_FILE"), "{err}");
        });
        with(&[], |env| {
            assert!(env.secret("S", "S_FILE").unwrap().is_none())
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_database_url_comes_from_its_variable_its_file_or_the_default() {
        let dir = tempfile_dir("db");
        let file = dir.join("url");
        std::fs::write(&file, "postgres://app:pw@db/skileez\n").unwrap();
        let path = file.to_str().unwrap();
        let url = |vars: &[(&str, &str)]| {
            with(vars, |env| {
                env.database_url("postgres://default")
                    .map(|u| u.expose_secret().to_owned())
            })
        };
        assert_eq!(url(&[]).unwrap(), "postgres://default");
        assert_eq!(
            url(&[("DATABASE_URL_FILE", path)]).unwrap(),
            "postgres://app:pw@db/skileez"
        );
        assert_eq!(
            url(&[
                ("DATABASE_URL", "postgres://direct"),
                ("DATABASE_URL_FILE", path)
            ])
            .unwrap(),
            "postgres://direct"
        );
        assert!(url(&[("DATABASE_URL_FILE", "/nonexistent/skileez")]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("skileez-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_policy_defaults_to_the_spec_and_reads_its_variables() {
        assert_eq!(with(&[], |env| env.policy()), Ok(Policy::default()));
        let policy = with(
            &[
                ("SKILEEZ_MIN_NOTICE", "90s"),
                ("SKILEEZ_READY_LEAD", "5m"),
                ("SKILEEZ_REMINDER_LEADS", "2h, 10m"),
                ("SKILEEZ_MAX_RESCHEDULES", "5"),
            ],
            |env| env.policy(),
        )
        .unwrap();
        assert_eq!(policy.min_notice, chrono::Duration::seconds(90));
        assert_eq!(policy.ready_lead, chrono::Duration::minutes(5));
        assert_eq!(policy.reminder_day_lead, chrono::Duration::hours(2));
        assert_eq!(policy.reminder_hour_lead, chrono::Duration::minutes(10));
        assert_eq!(policy.max_reschedules, 5);
    }

    #[test]
    fn an_inconsistent_policy_names_the_variable_to_fix() {
        for (var, value) in [
            ("SKILEEZ_REMINDER_LEADS", "1h,2h"),
            ("SKILEEZ_REMINDER_LEADS", "1h"),
            ("SKILEEZ_START_GRANULARITY", "7s"),
            ("SKILEEZ_MAX_HORIZON", "1m"),
        ] {
            let err = with(&[(var, value)], |env| env.policy()).unwrap_err();
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
    }
}
