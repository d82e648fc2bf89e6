//! The tunable numbers of the product rules (SPEC §2–3).
//!
//! Every lead time, window and limit is configuration, so that tests and demos
//! can run a whole lifecycle in seconds. [`Policy::default`] holds the SPEC
//! defaults; services build their own from config and call
//! [`Policy::validate`] once at start.

use chrono::Duration;

use crate::call::ReminderKind;
use crate::error::DomainError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A call starts at least this long after it is booked.
    pub min_notice: Duration,
    /// A call starts at most this long after it is booked.
    pub max_horizon: Duration,
    /// A call can be joined from this long before its start.
    pub ready_lead: Duration,
    /// Nobody joined by start + this → missed.
    pub missed_after: Duration,
    /// An active call still open at start + length + this is completed.
    pub overrun_grace: Duration,
    /// No rescheduling later than this before the start.
    pub reschedule_cutoff: Duration,
    /// A cancellation inside this window before the start is *late*.
    pub late_cancel_window: Duration,
    /// Lead of [`ReminderKind::Day`].
    pub reminder_day_lead: Duration,
    /// Lead of [`ReminderKind::Hour`].
    pub reminder_hour_lead: Duration,
    /// Minimum gap between two calls of one coach.
    pub coach_buffer: Duration,
    /// Reschedules allowed per booking chain.
    pub max_reschedules: u32,
    /// Length of a free consultation.
    pub free_consultation_minutes: u32,
    /// Whether a late cancellation gives the contract session back.
    pub refund_session_on_late_cancel: bool,
    /// Whether a missed call gives the contract session back.
    pub refund_session_on_missed: bool,
    /// Starts fall on multiples of this: a minute in production (SPEC §2);
    /// tests and demos that run a lifecycle in seconds use one second.
    pub start_granularity: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_notice: Duration::minutes(15),
            max_horizon: Duration::days(180),
            ready_lead: Duration::minutes(5),
            missed_after: Duration::minutes(15),
            overrun_grace: Duration::minutes(15),
            reschedule_cutoff: Duration::hours(2),
            late_cancel_window: Duration::hours(24),
            reminder_day_lead: Duration::hours(24),
            reminder_hour_lead: Duration::hours(1),
            coach_buffer: Duration::zero(),
            max_reschedules: 3,
            free_consultation_minutes: 15,
            refund_session_on_late_cancel: false,
            refund_session_on_missed: false,
            start_granularity: Duration::minutes(1),
        }
    }
}

impl Policy {
    /// `start_granularity` in whole seconds, at least one.
    #[must_use]
    pub fn start_step_secs(&self) -> i64 {
        self.start_granularity.num_seconds().max(1)
    }

    /// How long before the start a reminder of `kind` is due.
    #[must_use]
    pub fn reminder_lead(&self, kind: ReminderKind) -> Duration {
        match kind {
            ReminderKind::Day => self.reminder_day_lead,
            ReminderKind::Hour => self.reminder_hour_lead,
        }
    }

    /// Rejects settings that make the rules meaningless (negative durations,
    /// a horizon shorter than the notice, zero-length consultations). The
    /// rules never panic on such values; they would just decide nonsense.
    pub fn validate(&self) -> Result<(), DomainError> {
        let durations = [
            ("min_notice", self.min_notice),
            ("max_horizon", self.max_horizon),
            ("ready_lead", self.ready_lead),
            ("missed_after", self.missed_after),
            ("overrun_grace", self.overrun_grace),
            ("reschedule_cutoff", self.reschedule_cutoff),
            ("late_cancel_window", self.late_cancel_window),
            ("reminder_day_lead", self.reminder_day_lead),
            ("reminder_hour_lead", self.reminder_hour_lead),
            ("coach_buffer", self.coach_buffer),
        ];
        for (field, value) in durations {
            if value < Duration::zero() {
                return Err(DomainError::InvalidArgument {
                    field,
                    message: "must not be negative".to_owned(),
                });
            }
        }
        if self.max_horizon < self.min_notice {
            return Err(DomainError::InvalidArgument {
                field: "max_horizon",
                message: "must be at least min_notice, or nothing can be booked".to_owned(),
            });
        }
        let step = self.start_granularity.num_seconds();
        if self.start_granularity.subsec_nanos() != 0 || !(1..=60).contains(&step) || 60 % step != 0
        {
            return Err(DomainError::InvalidArgument {
                field: "start_granularity",
                message: "must be a whole number of seconds that divides a minute (1s to 1m)"
                    .to_owned(),
            });
        }
        if !crate::rules::SESSION_MINUTES.contains(&self.free_consultation_minutes) {
            return Err(DomainError::InvalidArgument {
                field: "free_consultation_minutes",
                message: format!(
                    "must be within {}..={} minutes",
                    crate::rules::SESSION_MINUTES.start(),
                    crate::rules::SESSION_MINUTES.end()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_defaults_and_valid() {
        let p = Policy::default();
        assert_eq!(p.min_notice, Duration::minutes(15));
        assert_eq!(p.max_horizon, Duration::days(180));
        assert_eq!(p.reminder_lead(ReminderKind::Day), Duration::hours(24));
        assert_eq!(p.reminder_lead(ReminderKind::Hour), Duration::hours(1));
        assert_eq!(p.max_reschedules, 3);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let p = Policy {
            ready_lead: Duration::minutes(-1),
            ..Policy::default()
        };
        assert_eq!(p.validate().unwrap_err().field(), Some("ready_lead"));
        let p = Policy {
            max_horizon: Duration::minutes(1),
            ..Policy::default()
        };
        assert_eq!(p.validate().unwrap_err().field(), Some("max_horizon"));
        let p = Policy {
            free_consultation_minutes: 0,
            ..Policy::default()
        };
        assert_eq!(
            p.validate().unwrap_err().field(),
            Some("free_consultation_minutes")
        );
    }
}
