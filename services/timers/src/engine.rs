//! The claim loop: takes due timers with a lease, sleeps each to its exact
//! moment in-process, fires them concurrently (bounded), and settles them in
//! batches.
//!
//! # When it looks
//!
//! No fixed polling interval sets the lateness. After each round the loop
//! asks for the earliest `run_at` of any pending timer (the next due one, or
//! the end of a lease that a dead instance may hold) and sleeps until half a
//! claim window before it, then claims everything within the window: timers
//! are claimed 100–200 ms ahead (with the default window) and slept to their
//! moment, so a claim round's duration does not make them late. It wakes
//! sooner when a timer due earlier than its plan is written: by this
//! instance's consumer (an in-process signal) or another's (`NOTIFY` on
//! [`WAKE_CHANNEL`], heard by [`listen`]). `max_idle` only bounds the sleep
//! in case a notification was lost.
//!
//! # Sharing the work
//!
//! Claims use `FOR UPDATE SKIP LOCKED`, so instances never wait for each
//! other and never claim the same row at once. A claim moves the row's
//! `run_at` to the lease's end: if the instance dies, the row comes due again
//! then and any instance takes it. A settle only applies while the lease is
//! still the one it claimed (owner and claim number), so a slow instance
//! whose lease was taken over cannot overwrite the new holder's result. Both
//! may have fired; the call aggregate makes the second command a no-op.
//!
//! # Bounds
//!
//! At most `4 × max_in_flight` timers are held (claimed, not settled) and
//! `max_in_flight` commands are in flight. On shutdown, timers still sleeping
//! are released (back to pending at their moment) and commands in flight
//! finish and are settled before [`Engine::run`] returns.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use std::time::Duration;

use chrono::{DateTime, Utc};
use skileez_telemetry::propagation;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::fire::Firer;
use crate::store::{self, Claimed, Settle, WAKE_CHANNEL};

/// Timers settled per statement at most.
const SETTLE_BATCH: usize = 512;
/// The pause after a round that claimed nothing although a timer seemed due
/// (it was locked: being written, or claimed by another instance).
const MIN_PAUSE: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Wakes the claim loop when a timer is written that is due before the loop
/// planned to look. Shared by the loop, the consumer and the listener.
pub struct Wake {
    notify: Notify,
    /// The loop's next planned claim (Unix ms); `i64::MAX` while a round runs,
    /// so that whatever is written meanwhile wakes the next wait at once.
    planned_ms: AtomicI64,
    claim_ahead_ms: i64,
}

impl Wake {
    pub fn new(claim_ahead: Duration) -> Self {
        Self {
            notify: Notify::new(),
            planned_ms: AtomicI64::new(i64::MAX),
            claim_ahead_ms: i64::try_from(claim_ahead.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// A timer due at `due_at` was written (committed). True if the loop was
    /// woken for it.
    pub fn timer_written(&self, due_at: DateTime<Utc>) -> bool {
        let needed = due_at
            .timestamp_millis()
            .saturating_sub(self.claim_ahead_ms);
        if needed < self.planned_ms.load(Ordering::Acquire) {
            // Stores a permit if the loop is not waiting yet.
            self.notify.notify_one();
            true
        } else {
            false
        }
    }
}

/// The claim loop of one instance.
pub struct Engine {
    pub pool: PgPool,
    pub firer: Arc<Firer>,
    pub wake: Arc<Wake>,
    pub owner: String,
    pub lease: Duration,
    pub claim_ahead: Duration,
    pub claim_batch: u32,
    pub max_in_flight: usize,
    pub max_idle: Duration,
}

impl Engine {
    /// Runs until `shutdown`, then drains (see the module docs).
    pub async fn run(self, shutdown: CancellationToken) {
        let max_held = self.max_in_flight.saturating_mul(4).max(1);
        let held = Arc::new(Semaphore::new(max_held));
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        let fires = TaskTracker::new();
        let (settle_tx, settle_rx) = mpsc::channel(max_held);
        let settler = tokio::spawn(settle_loop(
            self.pool.clone(),
            self.owner.clone(),
            settle_rx,
        ));
        tracing::info!(owner = %self.owner, lease = ?self.lease, claim_ahead = ?self.claim_ahead, "timer claim loop started");
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            self.wake.planned_ms.store(i64::MAX, Ordering::Release);
            let room = held.available_permits().min(self.claim_batch as usize);
            if room == 0 {
                // Everything held is still sleeping or firing: wait for room.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    permit = held.acquire() => drop(permit),
                }
                continue;
            }
            let claimed = match store::claim(
                &self.pool,
                &self.owner,
                self.lease,
                self.claim_ahead,
                u32::try_from(room).unwrap_or(u32::MAX),
            )
            .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tracing::warn!(%error, "cannot claim timers; retrying in {delay:?}");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            failures = 0;
            let full = claimed.len() == room;
            let claimed_any = !claimed.is_empty();
            for timer in claimed {
                let Ok(permit) = held.clone().try_acquire_owned() else {
                    break; // cannot happen: room was counted above
                };
                fires.spawn(fire_one(
                    timer,
                    self.firer.clone(),
                    in_flight.clone(),
                    settle_tx.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            if full {
                continue;
            }
            let wait = match store::next_run_at(&self.pool).await {
                Ok(next) => self.wait_for(next, claimed_any),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the next timer's moment");
                    backoff(1)
                }
            };
            let wake_at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            self.wake
                .planned_ms
                .store(wake_at.timestamp_millis(), Ordering::Release);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notify.notified() => {}
            }
        }
        fires.close();
        fires.wait().await;
        drop(settle_tx);
        if let Err(error) = settler.await {
            tracing::error!(%error, "the settle task failed");
        }
        tracing::info!(owner = %self.owner, "timer claim loop drained");
    }

    /// How long to sleep when the earliest pending timer runs at `next`.
    fn wait_for(&self, next: Option<DateTime<Utc>>, claimed_any: bool) -> Duration {
        let Some(next) = next else {
            return self.max_idle;
        };
        // Wake half a window early and claim the whole window: each round
        // takes about half a window's worth of timers.
        let wake_at = next - chrono::Duration::from_std(self.claim_ahead / 2).unwrap_or_default();
        match (wake_at - Utc::now()).to_std() {
            Ok(wait) => wait.min(self.max_idle),
            // Due already but not claimed: it was locked. Look again shortly
            // rather than spin (unless this round did claim, then at once).
            Err(_) if claimed_any => Duration::ZERO,
            Err(_) => MIN_PAUSE,
        }
    }
}

/// Sleeps until the timer's moment, fires it and hands the result to the
/// settle task.
async fn fire_one(
    timer: Claimed,
    firer: Arc<Firer>,
    in_flight: Arc<Semaphore>,
    settled: mpsc::Sender<(Claimed, Settle)>,
    shutdown: CancellationToken,
    _held: OwnedSemaphorePermit,
) {
    let wait = (timer.fire_at - Utc::now()).to_std().unwrap_or_default();
    let permit = tokio::select! {
        () = shutdown.cancelled() => None,
        permit = async {
            tokio::time::sleep(wait).await;
            in_flight.acquire().await.ok()
        } => permit,
    };
    let Some(_permit) = permit else {
        let at = timer.fire_at;
        let _ = settled.send((timer, Settle::Release { at })).await;
        return;
    };
    let sent_at = Utc::now();
    let lateness = (sent_at - timer.due_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    // A new trace for the firing, linked to the booking's: the firing is
    // caused by the booking, but hours or days later, and a trace that long
    // would be one nobody can read.
    let span = tracing::info_span!(
        parent: None,
        "timer.fire",
        otel.name = format_args!("fire {}", timer.kind),
        skileez.call_id = %timer.call_id,
        skileez.timer.kind = %timer.kind,
        skileez.timer.attempt = timer.attempts,
        skileez.timer.lateness_s = lateness,
        outcome = tracing::field::Empty,
    );
    propagation::new_root_linked(&span, timer.traceparent.as_deref(), None);
    // Without an OpenTelemetry layer (benchmarks) the span has no context:
    // scheduling still gets a fresh root of its own.
    let traceparent =
        propagation::of_span(&span).map_or_else(new_traceparent, |trace| trace.traceparent);
    let settle = firer
        .fire(&timer, &traceparent)
        .instrument(span.clone())
        .await;
    let outcome = match &settle {
        Settle::Fired { applied: true } => "applied",
        Settle::Fired { applied: false } => "not_applied",
        Settle::Dropped => "dropped",
        Settle::Failed { .. } => "failed",
        Settle::Retry { .. } => "retry",
        Settle::Release { .. } => "released",
    };
    span.record("outcome", outcome);
    if let Settle::Fired { .. } = settle {
        metrics::histogram!("skileez_timer_lateness_seconds", "kind" => timer.kind.as_str())
            .record(lateness.max(0.0));
    }
    metrics::counter!("skileez_timers_fired_total", "kind" => timer.kind.as_str(), "outcome" => outcome)
        .increment(1);
    match &settle {
        Settle::Failed { error } => {
            tracing::error!(parent: &span, %error, "timer failed for good")
        }
        Settle::Retry { at, error } => {
            tracing::warn!(parent: &span, %error, retry_at = %at, "timer will be retried")
        }
        Settle::Dropped => {
            tracing::info!(parent: &span, "reminder dropped: its moment came after the call's start")
        }
        _ => tracing::debug!(parent: &span, "timer fired"),
    }
    let _ = settled.send((timer, settle)).await;
}

/// Writes settles in batches: whatever has arrived while the last batch was
/// being written goes into the next statement.
async fn settle_loop(pool: PgPool, owner: String, mut incoming: mpsc::Receiver<(Claimed, Settle)>) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    while let Some(first) = incoming.recv().await {
        batch.push(first);
        while batch.len() < SETTLE_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut failures = 0;
        loop {
            match store::settle(&pool, &owner, &batch).await {
                Ok(_) => break,
                Err(error) => {
                    failures += 1;
                    if failures >= 10 {
                        // The leases will run out and another claim fires
                        // them again; the aggregate keeps that once in effect.
                        tracing::error!(%error, timers = batch.len(), "cannot settle fired timers; leaving them to their leases");
                        break;
                    }
                    let delay = backoff(failures);
                    tracing::warn!(%error, "cannot settle fired timers; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        batch.clear();
    }
}

/// Listens for timers written by other instances and wakes the loop when
/// one is due before its plan. Reconnects on its own; notifications lost
/// meanwhile are covered by `max_idle`.
pub async fn listen(database_url: String, wake: Arc<Wake>, shutdown: CancellationToken) {
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect(&database_url).await {
            Ok(mut listener) => match listener.listen(WAKE_CHANNEL).await {
                Ok(()) => listener,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, "cannot LISTEN for timers");
                    sleep_or_cancel(&shutdown, backoff(failures)).await;
                    continue;
                }
            },
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%error, "cannot connect to LISTEN for timers");
                sleep_or_cancel(&shutdown, backoff(failures)).await;
                continue;
            }
        };
        failures = 0;
        // Something may have been written while we were not listening.
        wake.notify.notify_one();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(notification) => {
                        if let Some(due) = notification
                            .payload()
                            .parse::<i64>()
                            .ok()
                            .and_then(DateTime::from_timestamp_millis)
                        {
                            wake.timer_written(due);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the timers LISTEN connection");
                        break;
                    }
                },
            }
        }
    }
}

async fn sleep_or_cancel(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(2u32.saturating_pow(failures.min(10)))
        .min(MAX_BACKOFF)
}

/// A W3C `traceparent` for a new root trace.
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().as_u128();
    let span = uuid::Uuid::new_v4().as_u64_pair().0;
    format!("00-{trace:032x}-{span:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_due_before_the_plan_wakes_the_loop_and_a_later_one_does_not() {
        let wake = Wake::new(Duration::from_millis(200));
        let now = Utc::now();
        wake.planned_ms.store(
            (now + chrono::Duration::seconds(10)).timestamp_millis(),
            Ordering::Release,
        );
        assert!(wake.timer_written(now + chrono::Duration::seconds(5)));
        assert!(!wake.timer_written(now + chrono::Duration::seconds(20)));
        // While a round runs, everything wakes the next wait.
        wake.planned_ms.store(i64::MAX, Ordering::Release);
        assert!(wake.timer_written(now + chrono::Duration::days(300)));
    }

    #[test]
    fn traceparents_are_w3c_shaped() {
        let tp = new_traceparent();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert_ne!(tp, new_traceparent());
    }
}
