//! The daily purge of read in-app notifications and of live feed items
//! older than their retention ages, at a configured time of day (UTC), once
//! across instances. A client resuming the feed from before the oldest
//! item kept gets what is left (positions are never reused).
//!
//! Every instance wakes at the slot; the one whose conditional update moves
//! `notification_jobs.last_run_at` to the slot runs the purge, the others
//! see the slot taken. An instance that starts after a slot nobody ran
//! (every instance was down at 02:00) runs that slot at once. The purge is
//! idempotent, so a crash half-way only leaves rows for the next day.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::store;

pub const JOB: &str = "purge_read_notifications";

/// The latest moment at `at` (UTC time of day) that is not after `now`.
pub fn latest_slot(now: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    let today = now.date_naive().and_time(at).and_utc();
    if today <= now {
        today
    } else {
        today - chrono::Duration::days(1)
    }
}

/// The first moment at `at` after `now`.
pub fn next_slot(now: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    latest_slot(now, at) + chrono::Duration::days(1)
}

/// Runs a slot if no instance has: how many rows it purged, `None` if the
/// slot was taken already.
pub async fn run_slot(
    pool: &PgPool,
    config: &RetentionConfig,
    slot: DateTime<Utc>,
) -> Result<Option<u64>, sqlx::Error> {
    if !store::take_job_slot(pool, JOB, slot).await? {
        return Ok(None);
    }
    let before =
        |age| Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let purged = store::purge_read(pool, before(config.read_age)).await?;
    let feed = store::purge_feed(pool, before(config.feed_age)).await?;
    store::record_job_result(
        pool,
        JOB,
        &format!(
            "purged {purged} read notifications and {feed} live feed items at {}",
            Utc::now().to_rfc3339()
        ),
    )
    .await?;
    metrics::counter!("skileez_notifications_purged_total").increment(purged);
    metrics::counter!("skileez_live_feed_purged_total").increment(feed);
    Ok(Some(purged))
}

/// Runs the job at every slot until `shutdown`.
pub async fn run(pool: PgPool, config: RetentionConfig, shutdown: CancellationToken) {
    let mut slot = latest_slot(Utc::now(), config.purge_at);
    loop {
        match run_slot(&pool, &config, slot).await {
            Ok(Some(purged)) => {
                tracing::info!(purged, %slot, "purged read notifications past retention")
            }
            Ok(None) => tracing::debug!(%slot, "retention slot taken by another instance"),
            Err(error) => {
                // Tried again in a minute, as long as the slot is the latest.
                tracing::warn!(%error, %slot, "retention purge failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                slot = latest_slot(Utc::now(), config.purge_at);
                continue;
            }
        }
        let next = next_slot(Utc::now(), config.purge_at);
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        slot = next;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn slots_fall_at_the_time_of_day() {
        let two = NaiveTime::from_hms_opt(2, 0, 0).unwrap();
        let before = Utc.with_ymd_and_hms(2025, 3, 4, 1, 59, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2025, 3, 4, 2, 0, 0).unwrap();
        assert_eq!(
            latest_slot(before, two),
            Utc.with_ymd_and_hms(2025, 3, 3, 2, 0, 0).unwrap()
        );
        assert_eq!(latest_slot(after, two), after);
        assert_eq!(
            next_slot(after, two),
            Utc.with_ymd_and_hms(2025, 3, 5, 2, 0, 0).unwrap()
        );
        assert_eq!(next_slot(before, two), after);
    }
}
