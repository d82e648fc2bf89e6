//! The live feed: per user, everything the web app is pushed over the
//! WebSocket (`ws`), each item under a per-user `position` (1, 2, 3, … in
//! commit order, without gaps).
//!
//! | `type` | when | carries |
//! |---|---|---|
//! | `call.new` | a call of the user was booked (or is the new call of a reschedule) | `card` |
//! | `call.changed` | any other change of one of the user's calls | `card` |
//! | `call.ready` | joining has opened (a ready-to-join alert) | `card` |
//! | `notification` | a new in-app notification | `notification` |
//!
//! Call items also carry `callId`, `eventId`, `event` (the event's name,
//! e.g. `CallCancelled`) and `occurredAt`. `card` is the call's
//! `skileez.call.v1.CallCard` and `notification` a
//! `skileez.notifications.v1.Notification`, both in the proto3 JSON mapping
//! (lowerCamelCase names, enums by name, 64-bit integers as strings,
//! timestamps in RFC 3339), so a web client can read them with the same
//! schema as the gRPC API.
//!
//! The consumer renders an item once, when it handles the event, stores it
//! in `live_feed` in that event's transaction, and after the commit
//! publishes it on core NATS `<root>.live.v1.user.<user_id>` (the user id
//! written as in [`crate::live::user_subject`]) as JSON [`FeedItem`]s; the
//! live hub and `live::watch` do the rest, as for `WatchNotifications`.

use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use skileez_proto::{call as ev, notifications as pb};
use uuid::Uuid;

/// What a feed item is about (`type` in its JSON; `kind` in `live_feed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedKind {
    CallNew,
    CallChanged,
    CallReady,
    Notification,
}

impl FeedKind {
    pub const ALL: [FeedKind; 4] = [
        FeedKind::CallNew,
        FeedKind::CallChanged,
        FeedKind::CallReady,
        FeedKind::Notification,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::CallNew => "call.new",
            FeedKind::CallChanged => "call.changed",
            FeedKind::CallReady => "call.ready",
            FeedKind::Notification => "notification",
        }
    }

    pub fn parse(name: &str) -> Option<FeedKind> {
        FeedKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// The feed item a call event makes for each participant, if any.
/// `ready_is_stale`: the event is a `CallReady` whose "ready to join" has
/// gone stale (the call moved on before it was handled): it is then told as
/// a plain change, not as an alert to join.
pub fn call_item_kind(event: &ev::CallEvent, ready_is_stale: bool) -> Option<FeedKind> {
    use ev::call_event::Event;
    match event.event.as_ref()? {
        Event::Scheduled(_) => Some(FeedKind::CallNew),
        Event::Ready(_) if !ready_is_stale => Some(FeedKind::CallReady),
        // A reminder changes nothing a client draws; its notification is
        // the item.
        Event::ReminderDue(_) => None,
        Event::Ready(_)
        | Event::Rescheduled(_)
        | Event::ParticipantJoined(_)
        | Event::Started(_)
        | Event::Ended(_)
        | Event::Cancelled(_)
        | Event::Missed(_) => Some(FeedKind::CallChanged),
    }
}

/// The event's name, as in its NATS subject (`CallScheduled`, …).
pub fn event_name(event: &ev::CallEvent) -> &'static str {
    use ev::call_event::Event;
    match event.event.as_ref() {
        Some(Event::Scheduled(_)) => "CallScheduled",
        Some(Event::Rescheduled(_)) => "CallRescheduled",
        Some(Event::ReminderDue(_)) => "CallReminderDue",
        Some(Event::Ready(_)) => "CallReady",
        Some(Event::ParticipantJoined(_)) => "ParticipantJoined",
        Some(Event::Started(_)) => "CallStarted",
        Some(Event::Ended(_)) => "CallEnded",
        Some(Event::Cancelled(_)) => "CallCancelled",
        Some(Event::Missed(_)) => "CallMissed",
        None => "Unknown",
    }
}

/// A call item's body (everything but `position`).
pub fn call_body(
    kind: FeedKind,
    event: &ev::CallEvent,
    call_id: Uuid,
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    card: &ev::CallCard,
) -> Value {
    serde_json::json!({
        "type": kind.as_str(),
        "callId": call_id.to_string(),
        "eventId": event_id.to_string(),
        "event": event_name(event),
        "occurredAt": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "card": proto_json(card, "skileez.call.v1.CallCard"),
    })
}

/// A notification item's body.
pub fn notification_body(notification: &pb::Notification, event_id: Uuid) -> Value {
    serde_json::json!({
        "type": FeedKind::Notification.as_str(),
        "callId": notification.call_id,
        "eventId": event_id.to_string(),
        "notification": proto_json(notification, "skileez.notifications.v1.Notification"),
    })
}

/// `message` in the proto3 JSON mapping; `null` if the descriptors lack
/// `full_name` (a build error; the descriptors are compiled in).
fn proto_json<M: prost::Message>(message: &M, full_name: &str) -> Value {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| DescriptorPool::decode(skileez_proto::FILE_DESCRIPTOR_SET).ok());
    let Some(descriptor) = pool
        .as_ref()
        .and_then(|pool| pool.get_message_by_name(full_name))
    else {
        tracing::error!(full_name, "no descriptor for a feed message");
        return Value::Null;
    };
    let dynamic = match DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()) {
        Ok(dynamic) => dynamic,
        Err(error) => {
            tracing::error!(full_name, %error, "cannot re-read a feed message");
            return Value::Null;
        }
    };
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .unwrap_or(Value::Null)
}

/// One item of one user's feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedItem {
    pub user_id: String,
    pub position: i64,
    /// A JSON object with at least `type`.
    pub body: Value,
}

impl FeedItem {
    pub fn kind(&self) -> Option<FeedKind> {
        self.body
            .get("type")
            .and_then(Value::as_str)
            .and_then(FeedKind::parse)
    }

    /// The WebSocket message: the body with `position` in it.
    pub fn to_message(&self) -> String {
        let mut object = match &self.body {
            Value::Object(object) => object.clone(),
            other => {
                let mut object = Map::new();
                object.insert("body".to_owned(), other.clone());
                object
            }
        };
        object.insert("position".to_owned(), Value::from(self.position));
        Value::Object(object).to_string()
    }
}

/// The first message on a WebSocket once its token is verified: whose feed
/// it is and where it resumes (items after `after` follow). `reset`: the
/// client's position is ahead of the feed (it belongs to another
/// database): the client should drop what it has, as the feed starts over
/// from `after`.
pub fn welcome_message(user_id: &str, after: i64, reset: bool) -> String {
    serde_json::json!({
        "type": "welcome",
        "userId": user_id,
        "after": after,
        "reset": reset,
    })
    .to_string()
}

/// Where a watch resumes given the position a client asked for and the
/// user's last position: `(after, reset)`. No position: from now on. A
/// position ahead of the feed cannot be honoured: from the start, with
/// `reset`.
pub fn resume_point(requested: Option<i64>, last: i64) -> (i64, bool) {
    match requested {
        None => (last, false),
        Some(after) if after > last => (0, true),
        Some(after) => (after.max(0), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: ev::call_event::Event) -> ev::CallEvent {
        ev::CallEvent {
            event: Some(body),
            ..Default::default()
        }
    }

    #[test]
    fn every_change_of_a_call_is_an_item_and_a_reminder_is_not() {
        use ev::call_event::Event as E;
        let cases = [
            (E::Scheduled(Default::default()), Some(FeedKind::CallNew)),
            (E::Ready(Default::default()), Some(FeedKind::CallReady)),
            (E::ReminderDue(Default::default()), None),
            (
                E::Cancelled(Default::default()),
                Some(FeedKind::CallChanged),
            ),
            (
                E::Rescheduled(Default::default()),
                Some(FeedKind::CallChanged),
            ),
            (E::Started(Default::default()), Some(FeedKind::CallChanged)),
            (E::Ended(Default::default()), Some(FeedKind::CallChanged)),
            (E::Missed(Default::default()), Some(FeedKind::CallChanged)),
            (
                E::ParticipantJoined(Default::default()),
                Some(FeedKind::CallChanged),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                call_item_kind(&event(body.clone()), false),
                expected,
                "{body:?}"
            );
        }
        assert_eq!(
            call_item_kind(&event(E::Ready(Default::default())), true),
            Some(FeedKind::CallChanged)
        );
        assert_eq!(call_item_kind(&ev::CallEvent::default(), false), None);
        for kind in FeedKind::ALL {
            assert_eq!(FeedKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn a_resume_point_ahead_of_the_feed_starts_over() {
        assert_eq!(resume_point(None, 7), (7, false));
        assert_eq!(resume_point(Some(3), 7), (3, false));
        assert_eq!(resume_point(Some(7), 7), (7, false));
        assert_eq!(resume_point(Some(9), 7), (0, true));
        assert_eq!(resume_point(Some(-2), 7), (0, false));
    }

    #[test]
    fn items_are_proto3_json_with_their_position() {
        let call_id = Uuid::now_v7();
        let card = ev::CallCard {
            call_id: call_id.to_string(),
            status: ev::CallStatus::Ready as i32,
            version: 3,
            duration_minutes: 15,
            start: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let event = event(ev::call_event::Event::Ready(Default::default()));
        let body = call_body(
            FeedKind::CallReady,
            &event,
            call_id,
            Uuid::nil(),
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            &card,
        );
        let item = FeedItem {
            user_id: "stu-1".into(),
            position: 12,
            body,
        };
        assert_eq!(item.kind(), Some(FeedKind::CallReady));
        let message: Value = serde_json::from_str(&item.to_message()).unwrap();
        assert_eq!(message["position"], 12);
        assert_eq!(message["type"], "call.ready");
        assert_eq!(message["event"], "CallReady");
        assert_eq!(message["occurredAt"], "2027-01-15T08:00:00.000Z");
        assert_eq!(message["card"]["status"], "CALL_STATUS_READY");
        assert_eq!(message["card"]["callId"], call_id.to_string());
        assert_eq!(message["card"]["durationMinutes"], 15);
        assert_eq!(message["card"]["version"], "3");
        assert_eq!(message["card"]["start"], "2027-01-15T08:00:00Z");

        let notification = pb::Notification {
            user_id: "stu-1".into(),
            sequence: 4,
            kind: pb::NotificationKind::Ready as i32,
            title: "Ready to join".into(),
            ..Default::default()
        };
        let body = notification_body(&notification, Uuid::nil());
        assert_eq!(body["type"], "notification");
        assert_eq!(body["notification"]["kind"], "NOTIFICATION_KIND_READY");
        assert_eq!(body["notification"]["sequence"], "4");
        assert_eq!(body["notification"]["title"], "Ready to join");
    }
}
