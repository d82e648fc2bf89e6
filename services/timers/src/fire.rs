//! Firing: the command a due timer sends to scheduling's `CallTimerService`,
//! and what its answer means for the timer.
//!
//! The call aggregate decides every command against the call's state, so a
//! race with a cancel, a join or another instance firing the same timer is
//! settled there: a stale or repeated command answers OK with
//! `applied = false`, and the timer is done either way. A command that came
//! too early (our clock or policy differs from scheduling's) answers
//! TIMER_NOT_DUE with the right moment, and the timer is re-armed for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use skileez_proto::{call as ev, scheduling as pb};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

use crate::model::TimerKind;
use crate::store::{Claimed, Settle};
use crate::token::TokenSource;

type Client = pb::call_timer_service_client::CallTimerServiceClient<Channel>;

/// How long one command may take before it counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Re-arm delay for a TIMER_NOT_DUE that names no moment.
const NOT_DUE_RETRY: Duration = Duration::from_millis(250);

/// Sends timer commands to scheduling as role `service`.
pub struct Firer {
    client: Client,
    token: TokenSource,
    max_attempts: u32,
}

/// What scheduling's refusal means for the timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too early: try again at this moment (if scheduling named it).
    NotDue(Option<DateTime<Utc>>),
    /// Might work later (scheduling or the network is down, a lost race).
    Retryable(String),
    /// Will not work (unknown call, wrong role, bad request).
    Permanent(String),
}

impl Firer {
    pub fn new(channel: Channel, token: TokenSource, max_attempts: u32) -> Self {
        Self {
            client: Client::new(channel),
            token,
            max_attempts,
        }
    }

    /// Fires `timer` now (the caller slept until its moment) and says how it
    /// ended. A reminder whose call has started is dropped without a command.
    pub async fn fire(&self, timer: &Claimed, traceparent: &str) -> Settle {
        let now = Utc::now();
        if timer.kind.is_reminder() && now >= timer.call_start {
            return Settle::Dropped;
        }
        match self.send(timer, traceparent).await {
            Ok(applied) => Settle::Fired { applied },
            Err(refusal) => after_refusal(self.max_attempts, timer, refusal, Utc::now()),
        }
    }

    async fn send(&self, timer: &Claimed, traceparent: &str) -> Result<bool, Refusal> {
        let call_id = timer.call_id.to_string();
        let mut client = self.client.clone();
        let response = match timer.kind {
            TimerKind::Reminder24h | TimerKind::Reminder1h => {
                let kind = if timer.kind == TimerKind::Reminder24h {
                    ev::ReminderKind::ReminderKind24h
                } else {
                    ev::ReminderKind::ReminderKind1h
                };
                let request = self.request(
                    pb::TriggerReminderRequest {
                        call_id,
                        kind: kind.into(),
                    },
                    traceparent,
                )?;
                client.trigger_reminder(request).await
            }
            TimerKind::Ready => {
                client
                    .mark_call_ready(
                        self.request(pb::TimerCommandRequest { call_id }, traceparent)?,
                    )
                    .await
            }
            TimerKind::Missed => {
                client
                    .mark_call_missed(
                        self.request(pb::TimerCommandRequest { call_id }, traceparent)?,
                    )
                    .await
            }
            TimerKind::AutoComplete => {
                client
                    .complete_overdue_call(
                        self.request(pb::TimerCommandRequest { call_id }, traceparent)?,
                    )
                    .await
            }
        };
        response
            .map(|r| r.into_inner().applied)
            .map_err(|status| classify(&status))
    }

    fn request<T>(&self, message: T, traceparent: &str) -> Result<Request<T>, Refusal> {
        let mut request = Request::new(message);
        request.set_timeout(COMMAND_TIMEOUT);
        let authorization = self
            .token
            .authorization()
            .map_err(|e| Refusal::Retryable(e.to_string()))?;
        request
            .metadata_mut()
            .insert("authorization", authorization);
        if let Ok(value) = traceparent.parse() {
            request.metadata_mut().insert("traceparent", value);
        }
        Ok(request)
    }
}

/// The settle for a refused command at `now`.
pub fn after_refusal(
    max_attempts: u32,
    timer: &Claimed,
    refusal: Refusal,
    now: DateTime<Utc>,
) -> Settle {
    let attempts = u32::try_from(timer.attempts).unwrap_or(u32::MAX);
    match refusal {
        Refusal::NotDue(at) => {
            let retry = at
                .unwrap_or(now + NOT_DUE_RETRY)
                .max(now + chrono::Duration::milliseconds(20));
            if attempts >= max_attempts {
                Settle::Failed {
                    error: format!("still not due after {attempts} attempts"),
                }
            } else {
                Settle::Retry {
                    at: retry,
                    error: "TIMER_NOT_DUE".to_owned(),
                }
            }
        }
        Refusal::Retryable(error) if attempts >= max_attempts => Settle::Failed {
            error: format!("gave up after {attempts} attempts: {error}"),
        },
        Refusal::Retryable(error) => Settle::Retry {
            at: now + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default(),
            error,
        },
        Refusal::Permanent(error) => Settle::Failed { error },
    }
}

/// The delay before the retry that follows attempt `attempts` (1-based).
pub fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
        .min(MAX_BACKOFF)
}

/// What a refusal from scheduling means.
pub fn classify(status: &Status) -> Refusal {
    let details = status.get_error_details();
    let info = details.error_info();
    let reason = info.map(|i| i.reason.as_str()).unwrap_or_default();
    let text = || format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::FailedPrecondition if reason == "TIMER_NOT_DUE" => Refusal::NotDue(
            info.and_then(|i| i.metadata.get("due_at"))
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.to_utc()),
        ),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Unknown
        | Code::Internal
        | Code::Cancelled
        // A token rejected now may be accepted once it is rotated.
        | Code::Unauthenticated => Refusal::Retryable(text()),
        _ => Refusal::Permanent(text()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::{ErrorDetails, StatusExt};
    use uuid::Uuid;

    use super::*;

    fn timer(kind: TimerKind, attempts: i32) -> Claimed {
        let now = Utc::now();
        Claimed {
            id: 1,
            call_id: Uuid::nil(),
            kind,
            due_at: now,
            call_start: now,
            fire_at: now,
            attempts,
            traceparent: None,
        }
    }

    fn firer() -> Firer {
        let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        Firer::new(
            channel,
            TokenSource::new(crate::config::TokenConfig::Static("t".to_owned().into())),
            3,
        )
    }

    #[test]
    fn not_due_is_rearmed_for_the_moment_scheduling_names() {
        let status = Status::with_error_details(
            Code::FailedPrecondition,
            "not yet",
            ErrorDetails::with_error_info(
                "TIMER_NOT_DUE",
                "scheduling.skileez.com",
                HashMap::from([("due_at".to_owned(), "2030-01-01T10:00:00Z".to_owned())]),
            ),
        );
        let at = DateTime::parse_from_rfc3339("2030-01-01T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(classify(&status), Refusal::NotDue(Some(at)));
        let now = at - chrono::Duration::seconds(5);
        assert!(matches!(
            after_refusal(3, &timer(TimerKind::Ready, 1), classify(&status), now),
            Settle::Retry { at: retry, .. } if retry == at
        ));
    }

    #[test]
    fn outages_retry_with_backoff_until_the_attempts_run_out() {
        let unavailable = Status::unavailable("down");
        let now = Utc::now();
        match after_refusal(3, &timer(TimerKind::Missed, 1), classify(&unavailable), now) {
            Settle::Retry { at, .. } => assert_eq!(at, now + chrono::Duration::milliseconds(500)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_refusal(3, &timer(TimerKind::Missed, 3), classify(&unavailable), now),
            Settle::Failed { .. }
        ));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn unknown_calls_and_wrong_roles_fail_for_good() {
        for status in [
            Status::not_found("no call"),
            Status::permission_denied("not a service"),
        ] {
            assert!(matches!(classify(&status), Refusal::Permanent(_)));
            assert!(matches!(
                after_refusal(
                    3,
                    &timer(TimerKind::Ready, 1),
                    classify(&status),
                    Utc::now()
                ),
                Settle::Failed { .. }
            ));
        }
    }

    #[tokio::test]
    async fn a_reminder_coming_due_after_the_start_is_dropped_without_a_command() {
        let mut late = timer(TimerKind::Reminder1h, 1);
        late.call_start = Utc::now() - chrono::Duration::seconds(1);
        // The channel points nowhere: a command would fail, not drop.
        assert_eq!(firer().fire(&late, "").await, Settle::Dropped);
    }
}
