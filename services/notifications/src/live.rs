//! Live streams per user without gaps: in-app notifications (for
//! `WatchNotifications`) and the live feed (for the WebSocket, see `feed`).
//! Each has a per-user subject on core NATS, a hub that fans its messages
//! out to this instance's watchers, and the one watch loop that turns
//! "everything after n, then live" into a gap-free stream.
//!
//! A new item is committed first and published after: a notification as an
//! encoded `Notification` on `<root>.notify.v1.user.<user_id>`, a feed item
//! as JSON on `<root>.live.v1.user.<user_id>` (each `.` of the user id
//! written `%2E`; see [`user_subject`]). Core NATS is at most once and goes
//! to every instance, so each instance holds one wildcard subscription per
//! stream and the hub passes each message to the watchers of its user.
//!
//! [`watch`] subscribes to the hub first, then reads the store from the
//! client's last position, then follows the live messages. Per-user
//! positions are gap-free and in commit order (the counters in
//! `notification_users`), so a live message that is not the next one means
//! one was lost (or is still on its way): the loop reads the store again.
//! So does a watcher whose hub channel overflowed (a slow client: its
//! memory stays bounded, it catches up from the store), and every `poll`
//! as the net under a message lost with nothing after it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use skileez_proto::notifications as pb;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::feed::FeedItem;
use crate::store;

/// Live messages buffered per user before a slow watcher falls back to the store.
const PER_USER_BUFFER: usize = 64;
/// Items read from the store per round trip while catching up.
const CATCH_UP_BATCH: i64 = 200;

/// `<root>.<stream>.user.<user_id>`, the user id with `.` as `%2E`
/// (`stream`: `notify.v1` or `live.v1`).
pub fn user_subject(root: &str, stream: &str, user_id: &str) -> String {
    format!("{root}.{stream}.user.{}", user_id.replace('.', "%2E"))
}

/// Every user's subject of `stream`.
pub fn all_users_subject(root: &str, stream: &str) -> String {
    format!("{root}.{stream}.user.*")
}

/// The user id of a subject made by [`user_subject`].
pub fn user_of_subject(subject: &str) -> Option<String> {
    subject
        .rsplit('.')
        .next()
        .filter(|token| !token.is_empty())
        .map(|token| token.replace("%2E", "."))
}

/// Something streamed live per user under gap-free positions: how it
/// travels on NATS and how it is read back from the store.
pub trait Live: Clone + Send + Sync + 'static {
    /// The subject family, `<root>.<STREAM>.user.<id>`.
    const STREAM: &'static str;
    fn user_id(&self) -> &str;
    fn position(&self) -> i64;
    /// The NATS payload.
    fn to_payload(&self) -> Vec<u8>;
    fn from_payload(payload: &[u8]) -> Result<Self, String>;
    /// The user's last position (0: none yet).
    fn last_position(
        pool: &PgPool,
        user_id: &str,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    /// The user's items after `after`, oldest first.
    fn read_after(
        pool: &PgPool,
        user_id: &str,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self>, sqlx::Error>> + Send;
}

impl Live for pb::Notification {
    const STREAM: &'static str = "notify.v1";

    fn user_id(&self) -> &str {
        &self.user_id
    }

    fn position(&self) -> i64 {
        i64::try_from(self.sequence).unwrap_or(i64::MAX)
    }

    fn to_payload(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn from_payload(payload: &[u8]) -> Result<Self, String> {
        pb::Notification::decode(payload).map_err(|e| e.to_string())
    }

    async fn last_position(pool: &PgPool, user_id: &str) -> Result<i64, sqlx::Error> {
        store::last_sequence(pool, user_id).await
    }

    async fn read_after(
        pool: &PgPool,
        user_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        let rows = store::notifications_after(pool, user_id, after, limit).await?;
        Ok(rows.iter().map(store::NotificationRow::to_proto).collect())
    }
}

impl Live for FeedItem {
    const STREAM: &'static str = "live.v1";

    fn user_id(&self) -> &str {
        &self.user_id
    }

    fn position(&self) -> i64 {
        self.position
    }

    fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn from_payload(payload: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }

    async fn last_position(pool: &PgPool, user_id: &str) -> Result<i64, sqlx::Error> {
        store::last_position(pool, user_id).await
    }

    async fn read_after(
        pool: &PgPool,
        user_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        store::feed_after(pool, user_id, after, limit).await
    }
}

/// Fans live items out to this instance's watchers, per user.
pub struct LiveHub<T> {
    users: Mutex<HashMap<String, broadcast::Sender<Arc<T>>>>,
}

impl<T: Live> LiveHub<T> {
    pub fn new() -> Arc<LiveHub<T>> {
        Arc::new(LiveHub {
            users: Mutex::new(HashMap::new()),
        })
    }

    /// Live items of `user_id` from now on.
    pub fn subscribe(&self, user_id: &str) -> broadcast::Receiver<Arc<T>> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| broadcast::channel(PER_USER_BUFFER).0)
            .subscribe()
    }

    /// Passes an item to its user's watchers, if any.
    pub fn dispatch(&self, item: T) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = users.get(item.user_id()) else {
            return;
        };
        if sender.receiver_count() == 0 {
            // The last watcher left: forget the user.
            users.remove(item.user_id());
            return;
        }
        let _ = sender.send(Arc::new(item));
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
        let subject = all_users_subject(&root, T::STREAM);
        let mut backoff = Duration::from_millis(200);
        let mut subscription = loop {
            match client.subscribe(subject.clone()).await {
                Ok(subscription) => break subscription,
                Err(error) => {
                    tracing::warn!(%error, %subject, "cannot subscribe to live updates; retrying");
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
                    match T::from_payload(message.payload.as_ref()) {
                        Ok(item) => {
                            if user_of_subject(&message.subject).as_deref() != Some(item.user_id()) {
                                tracing::warn!(subject = %message.subject, "live update on another user's subject; dropped");
                                continue;
                            }
                            self.dispatch(item);
                        }
                        Err(error) => tracing::warn!(subject = %message.subject, %error, "undecodable live update; dropped"),
                    }
                }
            }
        }
        let _ = subscription.unsubscribe().await;
    }
}

/// Publishes committed items for the live watchers of every instance. At
/// most once by design: a watcher that misses one reads it from the store.
pub async fn publish<T: Live>(client: &async_nats::Client, root: &str, items: &[T]) {
    for item in items {
        let subject = user_subject(root, T::STREAM, item.user_id());
        if let Err(error) = client.publish(subject, item.to_payload().into()).await {
            tracing::warn!(%error, user_id = %item.user_id(), stream = T::STREAM, "cannot publish a live update");
        }
    }
}

/// Streams `user_id`'s items to `sink`: every one after `after` (or, with
/// `None`, only those from now on), then live ones, in position order and
/// without gaps, until the client goes away (`sink` closes) or `shutdown`.
/// See the module docs.
pub async fn watch<T: Live>(
    pool: PgPool,
    hub: Arc<LiveHub<T>>,
    user_id: String,
    after: Option<u64>,
    poll: Duration,
    sink: mpsc::Sender<Result<T, ApiError>>,
    shutdown: CancellationToken,
) {
    // Subscribe before reading, so nothing committed meanwhile is missed.
    let mut live = hub.subscribe(&user_id);
    let start = match after {
        Some(after) => Ok(i64::try_from(after).unwrap_or(i64::MAX)),
        None => T::last_position(&pool, &user_id).await,
    };
    let mut last = match start {
        Ok(last) => last,
        Err(error) => {
            let _ = sink.send(Err(ApiError::from(error))).await;
            return;
        }
    };
    let watcher = Watcher {
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
                Ok(item) => {
                    let position = item.position();
                    if position <= last {
                        true
                    } else if position == last + 1 {
                        last = position;
                        sink.send(Ok((*item).clone())).await.is_ok()
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

struct Watcher<'a, T> {
    pool: &'a PgPool,
    user_id: &'a str,
    sink: &'a mpsc::Sender<Result<T, ApiError>>,
}

impl<T: Live> Watcher<'_, T> {
    /// Sends everything in the store after `last`; false when the stream
    /// should end (the client left, or the store failed and was reported).
    async fn catch_up(&self, last: &mut i64) -> bool {
        loop {
            let items = match T::read_after(self.pool, self.user_id, *last, CATCH_UP_BATCH).await {
                Ok(items) => items,
                Err(error) => {
                    let _ = self.sink.send(Err(ApiError::from(error))).await;
                    return false;
                }
            };
            let full = items.len() as i64 == CATCH_UP_BATCH;
            for item in items {
                *last = item.position();
                if self.sink.send(Ok(item)).await.is_err() {
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
        let subject = user_subject("skileez", "notify.v1", "jane.doe@x:y");
        assert_eq!(subject, "skileez.notify.v1.user.jane%2Edoe@x:y");
        assert_eq!(subject.split('.').count(), 5);
        assert_eq!(user_of_subject(&subject).as_deref(), Some("jane.doe@x:y"));
        assert_eq!(all_users_subject("t1", "live.v1"), "t1.live.v1.user.*");
    }

    #[tokio::test]
    async fn the_hub_reaches_only_the_users_watchers_and_forgets_idle_users() {
        let hub = LiveHub::<pb::Notification>::new();
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
