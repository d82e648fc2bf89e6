//! The delivery worker: hands due e-mails to SMTP and records the outcome.
//!
//! Every instance runs one. It leases due deliveries (`store::claim_due`:
//! `FOR UPDATE SKIP LOCKED`, so instances share the queue without waiting on
//! each other), commits the lease, and only then talks SMTP — no transaction
//! is open during a send. The outcome is recorded after, fenced by the
//! attempt number: if the lease ran out meanwhile and another instance took
//! the row, this late answer changes nothing.
//!
//! - sent → `sent`;
//! - a transient failure (4xx, no connection, timeout) → `pending` again,
//!   after an exponential back-off, until `max_attempts`, then `dead`;
//! - a permanent failure (5xx, bad address) → `dead` at once;
//! - a reminder for a call that moved on meanwhile → `stale` (see `model`);
//! - a REQUEST overtaken by a higher SEQUENCE already sent → `stale`.
//!
//! A database error when recording the outcome is retried, with back-off,
//! while the lease lasts: a connection that breaks between SMTP's answer
//! and its record (a reset, a failover) must not send the e-mail again.
//! Only a crash there (or a database unreachable for the whole lease)
//! re-sends the same bytes (same Message-ID) when the lease runs out: mail
//! clients fold the two.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use skileez_telemetry::propagation;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::cards::Cards;
use crate::config::DeliveryConfig;
use crate::consumer::count;
use crate::model::{Channel, DeliveryState, NotificationKind, staleness};
use crate::smtp::{Mailer, SendError};
use crate::store::{self, Claimed, Outcome};

pub struct DeliveryWorker {
    pub pool: PgPool,
    pub mailer: Mailer,
    pub config: DeliveryConfig,
    pub cards: Cards,
    /// Rung by the consumer when it queued e-mails.
    pub wake: Arc<Notify>,
}

impl DeliveryWorker {
    /// Runs until `shutdown`, then lets the sends in flight finish (each is
    /// bounded by the SMTP timeout) and records them.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let room = Arc::new(Semaphore::new(self.config.concurrency));
        let mut sends = JoinSet::new();
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            // Register first, so a wake-up during the claim is not lost.
            let woken = self.wake.notified();
            let free = room.available_permits();
            let mut busy = free == 0;
            if free > 0 {
                // Before the claim: the lease, counted from the database's
                // clock a moment later, surely lasts until then.
                let lease_ends = tokio::time::Instant::now() + self.config.lease;
                match store::claim_due(&self.pool, free as i64, self.config.lease).await {
                    Ok(claimed) => {
                        failures = 0;
                        busy = claimed.len() == free;
                        for delivery in claimed {
                            let Ok(permit) = room.clone().try_acquire_owned() else {
                                break;
                            };
                            let worker = self.clone();
                            sends.spawn(async move {
                                worker.attempt(delivery, lease_ends).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(30) {
                            tracing::warn!(%error, failures, "cannot claim due deliveries");
                        }
                    }
                }
            }
            // Reap what finished, so the set does not grow.
            while sends.try_join_next().is_some() {}
            if busy {
                // Every slot taken, or more waiting: go on as soon as a
                // send finishes.
                if sends.is_empty() {
                    continue;
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = sends.join_next() => {}
                }
            } else {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = woken => {}
                    () = tokio::time::sleep(self.config.poll) => {}
                }
            }
        }
        while sends.join_next().await.is_some() {}
    }

    /// One attempt at one delivery, recorded before `lease_ends`.
    async fn attempt(&self, delivery: Claimed, lease_ends: tokio::time::Instant) {
        let kind = NotificationKind::parse(&delivery.kind);
        // The hand-off continues the trace of the event that caused it.
        let span = tracing::info_span!(
            "smtp.send",
            otel.name = "smtp send",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            skileez.call_id = %delivery.call_id,
            skileez.notification.kind = %delivery.kind,
            skileez.delivery_id = delivery.delivery_id,
            skileez.delivery.attempt = delivery.attempts,
            outcome = tracing::field::Empty,
        );
        propagation::set_parent(
            &span,
            delivery.traceparent.as_deref(),
            delivery.tracestate.as_deref(),
        );
        let outcome = self.outcome(&delivery, kind).instrument(span.clone()).await;
        span.record(
            "outcome",
            match &outcome {
                Outcome::Sent => "sent",
                Outcome::Retry { .. } => "retry",
                Outcome::Dead { .. } => "dead",
                Outcome::Stale { .. } => "stale",
            },
        );
        if matches!(outcome, Outcome::Retry { .. } | Outcome::Dead { .. }) {
            span.record("otel.status_code", "ERROR");
        }
        let state = match &outcome {
            Outcome::Sent => DeliveryState::Sent,
            Outcome::Retry { .. } => DeliveryState::Pending,
            Outcome::Dead { .. } => DeliveryState::Dead,
            Outcome::Stale { .. } => DeliveryState::Stale,
        };
        match &outcome {
            Outcome::Sent => tracing::debug!(delivery_id = delivery.delivery_id, "e-mail sent"),
            Outcome::Retry { error, at } => tracing::info!(
                delivery_id = delivery.delivery_id,
                attempt = delivery.attempts,
                %error,
                retry_at = %at,
                "e-mail not accepted; will retry"
            ),
            Outcome::Dead { error } => tracing::warn!(
                delivery_id = delivery.delivery_id,
                attempt = delivery.attempts,
                %error,
                "e-mail given up: dead letter"
            ),
            Outcome::Stale { reason } => {
                tracing::info!(delivery_id = delivery.delivery_id, %reason, "e-mail dropped")
            }
        }
        match self.record(&delivery, &outcome, lease_ends).await {
            Ok(true) => {
                if let Some(kind) = kind {
                    count(Channel::Email, kind, state);
                }
            }
            Ok(false) => tracing::warn!(
                delivery_id = delivery.delivery_id,
                "the lease ran out before the outcome was recorded; another attempt counts"
            ),
            // The lease runs out and the row comes back: a resend with the
            // same Message-ID at worst.
            Err(error) => tracing::error!(
                delivery_id = delivery.delivery_id,
                %error,
                "cannot record an e-mail's outcome"
            ),
        }
    }

    /// Records the outcome, retrying a database error with back-off while
    /// the lease is this worker's: after it, another instance may take the
    /// row, and a record this late would be fenced off anyway.
    async fn record(
        &self,
        delivery: &Claimed,
        outcome: &Outcome,
        lease_ends: tokio::time::Instant,
    ) -> Result<bool, sqlx::Error> {
        let mut wait = Duration::from_millis(50);
        loop {
            match store::settle(&self.pool, delivery.delivery_id, delivery.attempts, outcome).await
            {
                Err(error) if tokio::time::Instant::now() + wait < lease_ends => {
                    tracing::warn!(
                        delivery_id = delivery.delivery_id,
                        %error,
                        "cannot record an e-mail's outcome yet; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                result => return result,
            }
        }
    }

    async fn outcome(&self, delivery: &Claimed, kind: Option<NotificationKind>) -> Outcome {
        let retry_later = |error: String| self.retry_or_die(delivery.attempts, error);
        if let Some(kind) = kind.filter(|k| k.can_go_stale()) {
            match self.cards.newest(&self.pool, delivery.call_id).await {
                Ok(Some(view)) => {
                    if let Some(reason) = staleness(kind, &view, Utc::now()) {
                        return Outcome::Stale { reason };
                    }
                }
                Ok(None) => {}
                Err(error) => return retry_later(format!("database: {error}")),
            }
        }
        if delivery.invite_method.as_deref() == Some("REQUEST")
            && let Some(sequence) = delivery.invite_sequence
        {
            match store::superseded(
                &self.pool,
                delivery.chain_id,
                &delivery.recipient_id,
                sequence,
            )
            .await
            {
                Ok(true) => {
                    return Outcome::Stale {
                        reason: format!(
                            "stale: an invite with a SEQUENCE above {sequence} already went out"
                        ),
                    };
                }
                Ok(false) => {}
                Err(error) => return retry_later(format!("database: {error}")),
            }
        }
        let (Some(address), Some(message)) = (&delivery.address, &delivery.message) else {
            return Outcome::Dead {
                error: "nothing to send: no address or message recorded".to_owned(),
            };
        };
        match self.mailer.send(address, message).await {
            Ok(()) => Outcome::Sent,
            Err(SendError::Permanent(error)) => Outcome::Dead {
                error: format!("refused: {error}"),
            },
            Err(SendError::Transient(error)) => retry_later(error),
        }
    }

    fn retry_or_die(&self, attempt: i32, error: String) -> Outcome {
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        if attempt >= self.config.max_attempts {
            return Outcome::Dead {
                error: format!("gave up after {attempt} attempts: {error}"),
            };
        }
        // Jitter from a random UUID: no random-number crate needed.
        let jitter = (Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
        let wait = self.config.backoff(attempt, jitter);
        Outcome::Retry {
            error,
            at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
        }
    }
}
