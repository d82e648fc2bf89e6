//! Live in-app notifications: the per-user subject on core NATS, a hub that
//! fans them out to this instance's watchers, and the watch loop that turns
//! "everything after n, then live" into a gap-free stream.
//!
//! A new notification is committed first and published after, as an encoded
//! `Notification` on `<root>.notify.v1.user.<user_id>` (each `.` of the user
//! id written `%2E`; see [`user_subject`]). Core NATS is at most once and
//! goes to every instance, so each instance holds one wildcard subscription
//! and the hub passes each message to the watchers of its user.
//!
//! [`watch`] is the one loop behind `WatchNotifications` (and the WebSocket
//! to come): it subscribes to the hub first, then reads the store from the
//! client's last sequence, then follows the live messages. Per-user
//! sequences are gap-free and in commit order (`notification_users`), so a
//! live message that is not the next one means one was lost (or is still
//! on its way): the loop reads the store again. So does a watcher whose hub
//! channel overflowed, and every `poll` as the net under a message lost
//! with nothing after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use skileez_proto::notifications as pb;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::store;

/// Live messages buffered per user before a slow watcher falls back to the store.
const PER_USER_BUFFER: usize = 64;
/// Notifications read from the store per round trip while catching up.
const CATCH_UP_BATCH: i64 = 200;

/// `<root>.notify.v1.user.<user_id>`, the user id with `.` as `%2E`.
pub fn user_subject(root: &str, user_id: &str) -> String {
    format!("{root}.notify.v1.user.{}", user_id.replace('.', "%2E"))
}

/// Every user's subject.
pub fn all_users_subject(root: &str) -> String {
    format!("{root}.notify.v1.user.*")
}

/// The user id of a subject made by [`user_subject`].
pub fn user_of_subject(subject: &str) -> Option<String> {
    subject
        .rsplit('.')
        .next()
        .filter(|token| !token.is_empty())
        .map(|token| token.replace("%2E", "."))
}

type Sender = broadcast::Sender<Arc<pb::Notification>>;

/// Fans live notifications out to this instance's watchers, per user.
#[derive(Default)]
pub struct LiveHub {
    users: Mutex<HashMap<String, Sender>>,
}

impl LiveHub {
    pub fn new() -> Arc<LiveHub> {
        Arc::new(LiveHub::default())
    }

    /// Live notifications of `user_id` from now on.
    pub fn subscribe(&self, user_id: &str) -> broadcast::Receiver<Arc<pb::Notification>> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| broadcast::channel(PER_USER_BUFFER).0)
            .subscribe()
    }

    /// Passes a notification to its user's watchers, if any.
    pub fn dispatch(&self, notification: pb::Notification) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = users.get(&notification.user_id) else {
            return;
        };
        if sender.receiver_count() == 0 {
            // The last watcher left: forget the user.
            users.remove(&notification.user_id);
            return;
        }
        let _ = sender.send(Arc::new(notification));
    }

    /// Users with a channel (for tests and a gauge).
    pub fn users(&self) -> usize {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Subscribes to every user's subject and dispatches until `shutdown`.
    /// async-nats resubscribes by itself after a reconnect.
    pub async fn run(
        self: Arc<Self>,
        client: async_nats::Client,
        root: String,
        shutdown: CancellationToken,
    ) {
        let subject = all_users_subject(&root);
        let mut backoff = Duration::from_millis(200);
        let mut subscription = loop {
            match client.subscribe(subject.clone()).await {
                Ok(subscription) => break subscription,
                Err(error) => {
                    tracing::warn!(%error, %subject, "cannot subscribe to live notifications; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                message = subscription.next() => {
                    let Some(message) = message else { break };
                    match pb::Notification::decode(message.payload.as_ref()) {
                        Ok(notification) => {
                            if user_of_subject(&message.subject).as_deref() != Some(notification.user_id.as_str()) {
                                tracing::warn!(subject = %message.subject, "live notification on another user's subject; dropped");
                                continue;
                            }
                            self.dispatch(notification);
                        }
                        Err(error) => tracing::warn!(subject = %message.subject, %error, "undecodable live notification; dropped"),
                    }
                }
            }
        }
        let _ = subscription.unsubscribe().await;
    }
}

/// Streams `user_id`'s notifications to `sink`: every one after `after` (or,
/// with `None`, only those from now on), then live ones, in sequence order
/// and without gaps, until the client goes away (`sink` closes) or
/// `shutdown`. See the module docs.
pub async fn watch(
    pool: PgPool,
    hub: Arc<LiveHub>,
    user_id: String,
    after: Option<u64>,
    poll: Duration,
    sink: mpsc::Sender<Result<pb::Notification, ApiError>>,
    shutdown: CancellationToken,
) {
    // Subscribe before reading, so nothing committed meanwhile is missed.
    let mut live = hub.subscribe(&user_id);
    let start = match after {
        Some(after) => Ok(i64::try_from(after).unwrap_or(i64::MAX)),
        None => store::last_sequence(&pool, &user_id).await,
    };
    let mut last = match start {
        Ok(last) => last,
        Err(error) => {
            let _ = sink.send(Err(ApiError::from(error))).await;
            return;
        }
    };
    let mut watcher = Watcher {
        pool: &pool,
        user_id: &user_id,
        sink: &sink,
    };
    if !watcher.catch_up(&mut last).await {
        return;
    }
    let mut tick = tokio::time::interval(poll.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        let keep_going = tokio::select! {
            () = shutdown.cancelled() => false,
            () = sink.closed() => false,
            received = live.recv() => match received {
                Ok(notification) => {
                    let sequence = i64::try_from(notification.sequence).unwrap_or(i64::MAX);
                    if sequence <= last {
                        true
                    } else if sequence == last + 1 {
                        last = sequence;
                        sink.send(Ok((*notification).clone())).await.is_ok()
                    } else {
                        watcher.catch_up(&mut last).await
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => watcher.catch_up(&mut last).await,
                Err(broadcast::error::RecvError::Closed) => false,
            },
            _ = tick.tick() => watcher.catch_up(&mut last).await,
        };
        if !keep_going {
            return;
        }
    }
}

struct Watcher<'a> {
    pool: &'a PgPool,
    user_id: &'a str,
    sink: &'a mpsc::Sender<Result<pb::Notification, ApiError>>,
}

impl Watcher<'_> {
    /// Sends everything in the store after `last`; false when the stream
    /// should end (the client left, or the store failed and was reported).
    async fn catch_up(&mut self, last: &mut i64) -> bool {
        loop {
            let rows =
                match store::notifications_after(self.pool, self.user_id, *last, CATCH_UP_BATCH)
                    .await
                {
                    Ok(rows) => rows,
                    Err(error) => {
                        let _ = self.sink.send(Err(ApiError::from(error))).await;
                        return false;
                    }
                };
            let full = rows.len() as i64 == CATCH_UP_BATCH;
            for row in rows {
                *last = row.sequence;
                if self.sink.send(Ok(row.to_proto())).await.is_err() {
                    return false;
                }
            }
            if !full {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_with_dots_make_one_subject_token() {
        let subject = user_subject("skileez", "jane.doe@x:y");
        assert_eq!(subject, "skileez.notify.v1.user.jane%2Edoe@x:y");
        assert_eq!(subject.split('.').count(), 5);
        assert_eq!(user_of_subject(&subject).as_deref(), Some("jane.doe@x:y"));
        assert_eq!(all_users_subject("t1"), "t1.notify.v1.user.*");
    }

    #[tokio::test]
    async fn the_hub_reaches_only_the_users_watchers_and_forgets_idle_users() {
        let hub = LiveHub::new();
        let mut a = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        hub.dispatch(pb::Notification {
            user_id: "a".into(),
            sequence: 1,
            ..Default::default()
        });
        assert_eq!(a.recv().await.unwrap().sequence, 1);
        assert!(b.try_recv().is_err());
        drop(b);
        hub.dispatch(pb::Notification {
            user_id: "b".into(),
            ..Default::default()
        });
        assert_eq!(hub.users(), 1);
    }
}
