//! What a call event means for notifications, decided without I/O: which
//! moment of SPEC §4 it is, on which channels it goes out, which invite it
//! carries, and whether it has gone stale.
//!
//! **Staleness, decided here and documented once.** A reminder (24 h, 1 h)
//! or a "ready to join" is stale when the call it is about is no longer
//! waiting to happen: cancelled, moved (rescheduled), started, ended or
//! missed, or — for reminders — already at or past its start. The call's
//! state is the newest card known: the event's own card, what this service
//! recorded from the events it handled (`notification_calls`, kept in version
//! order), and the `CALL_CARDS` bucket (written by scheduling's relay, so it
//! may be ahead of this consumer), whichever has the highest version. The
//! check runs when the event is handled and again right before an e-mail is
//! handed to SMTP, so a reminder that waited out an SMTP outage is still
//! dropped if the call was cancelled meanwhile. Either way the delivery is
//! recorded as `stale` with the reason.
//!
//! The invite family (booked, rescheduled, cancelled) is never dropped as
//! stale: each is a fact the person should learn, and the CANCEL needs its
//! REQUEST in the calendar first. Their order is kept instead (a CANCEL
//! never goes out before the REQUESTs of lower SEQUENCE of its chain), and a
//! REQUEST overtaken by an invite of a higher SEQUENCE already sent is
//! dropped as superseded (see `store::claim_due`).

use chrono::{DateTime, Utc};
use skileez_proto::{call as ev, notifications as pb};

/// The moments of SPEC §4's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    Booked,
    Rescheduled,
    Cancelled,
    Reminder24h,
    Reminder1h,
    Ready,
    Completed,
    Missed,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 8] = [
        NotificationKind::Booked,
        NotificationKind::Rescheduled,
        NotificationKind::Cancelled,
        NotificationKind::Reminder24h,
        NotificationKind::Reminder1h,
        NotificationKind::Ready,
        NotificationKind::Completed,
        NotificationKind::Missed,
    ];

    /// The name in the database, in metrics and in templates.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Booked => "booked",
            NotificationKind::Rescheduled => "rescheduled",
            NotificationKind::Cancelled => "cancelled",
            NotificationKind::Reminder24h => "reminder_24h",
            NotificationKind::Reminder1h => "reminder_1h",
            NotificationKind::Ready => "ready",
            NotificationKind::Completed => "completed",
            NotificationKind::Missed => "missed",
        }
    }

    pub fn parse(name: &str) -> Option<NotificationKind> {
        NotificationKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    pub fn to_proto(self) -> pb::NotificationKind {
        match self {
            NotificationKind::Booked => pb::NotificationKind::Booked,
            NotificationKind::Rescheduled => pb::NotificationKind::Rescheduled,
            NotificationKind::Cancelled => pb::NotificationKind::Cancelled,
            NotificationKind::Reminder24h => pb::NotificationKind::Reminder24h,
            NotificationKind::Reminder1h => pb::NotificationKind::Reminder1h,
            NotificationKind::Ready => pb::NotificationKind::Ready,
            NotificationKind::Completed => pb::NotificationKind::Completed,
            NotificationKind::Missed => pb::NotificationKind::Missed,
        }
    }

    /// Whether the moment has an e-mail (all but "ready to join").
    pub fn has_email(self) -> bool {
        self != NotificationKind::Ready
    }

    /// The calendar invite the e-mail carries, if any.
    pub fn invite(self) -> Option<InviteMethod> {
        match self {
            NotificationKind::Booked | NotificationKind::Rescheduled => Some(InviteMethod::Request),
            NotificationKind::Cancelled => Some(InviteMethod::Cancel),
            _ => None,
        }
    }

    /// Whether it can go stale (see the module docs).
    pub fn can_go_stale(self) -> bool {
        matches!(
            self,
            NotificationKind::Reminder24h | NotificationKind::Reminder1h | NotificationKind::Ready
        )
    }
}

/// RFC 5546 methods we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteMethod {
    Request,
    Cancel,
}

impl InviteMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteMethod::Request => "REQUEST",
            InviteMethod::Cancel => "CANCEL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    InApp,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::InApp => "in_app",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "email" => Some(Channel::Email),
            "in_app" => Some(Channel::InApp),
            _ => None,
        }
    }
}

/// A delivery's state (see `migrations/0007_notifications.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Sending,
    Sent,
    Dead,
    Skipped,
    Stale,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Pending,
        DeliveryState::Sending,
        DeliveryState::Sent,
        DeliveryState::Dead,
        DeliveryState::Skipped,
        DeliveryState::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::Dead => "dead",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Stale => "stale",
        }
    }

    pub fn parse(name: &str) -> Option<DeliveryState> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    pub fn to_proto(self) -> pb::DeliveryState {
        match self {
            DeliveryState::Pending => pb::DeliveryState::Pending,
            DeliveryState::Sending => pb::DeliveryState::Sending,
            DeliveryState::Sent => pb::DeliveryState::Sent,
            DeliveryState::Dead => pb::DeliveryState::Dead,
            DeliveryState::Skipped => pb::DeliveryState::Skipped,
            DeliveryState::Stale => pb::DeliveryState::Stale,
        }
    }

    pub fn from_proto(state: pb::DeliveryState) -> Option<DeliveryState> {
        DeliveryState::ALL
            .into_iter()
            .find(|s| s.to_proto() == state)
    }
}

/// The moment a call event stands for, if it has notifications.
pub fn moment_of(event: &ev::CallEvent) -> Option<NotificationKind> {
    use ev::call_event::Event;
    match event.event.as_ref()? {
        Event::Scheduled(scheduled) if scheduled.rescheduled_from.is_empty() => {
            Some(NotificationKind::Booked)
        }
        Event::Scheduled(_) => Some(NotificationKind::Rescheduled),
        Event::ReminderDue(reminder) => match ev::ReminderKind::try_from(reminder.kind) {
            Ok(ev::ReminderKind::ReminderKind24h) => Some(NotificationKind::Reminder24h),
            Ok(ev::ReminderKind::ReminderKind1h) => Some(NotificationKind::Reminder1h),
            _ => None,
        },
        Event::Ready(_) => Some(NotificationKind::Ready),
        Event::Ended(_) => Some(NotificationKind::Completed),
        Event::Missed(_) => Some(NotificationKind::Missed),
        Event::Cancelled(_) => Some(NotificationKind::Cancelled),
        // The moved call says nothing: its successor's CallScheduled carries
        // the update. Joins and starts are no moments of SPEC §4.
        Event::Rescheduled(_) | Event::ParticipantJoined(_) | Event::Started(_) => None,
    }
}

/// The SEQUENCE of a call's invite. RFC 5546 wants it raised on every
/// change of the (chain-wide) event: the n-th call of a chain (n − 1
/// reschedules before it) sends its REQUEST as n − 1, and its CANCEL one
/// higher. Derived from the events alone, so every redelivery and instance
/// computes the same number.
pub fn invite_sequence(method: InviteMethod, reschedule_count: u32) -> u32 {
    match method {
        InviteMethod::Request => reschedule_count,
        InviteMethod::Cancel => reschedule_count.saturating_add(1),
    }
}

/// The calendar UID of a booking chain: stable across every reschedule.
pub fn invite_uid(chain_id: &str) -> String {
    format!("{chain_id}@skileez")
}

/// The state of a call, as far as staleness goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallView {
    pub version: u64,
    pub status: ev::CallStatus,
    pub start: DateTime<Utc>,
}

impl CallView {
    pub fn of_card(card: &ev::CallCard) -> Option<CallView> {
        Some(CallView {
            version: card.version,
            status: ev::CallStatus::try_from(card.status).ok()?,
            start: crate::convert::to_utc(card.start.as_ref()?)?,
        })
    }

    /// The newest of several views (by version).
    pub fn newest(views: impl IntoIterator<Item = CallView>) -> Option<CallView> {
        views.into_iter().max_by_key(|view| view.version)
    }
}

/// Why a notification of `kind` is stale given the call's newest known
/// state, or `None` if it may go out.
pub fn staleness(kind: NotificationKind, call: &CallView, now: DateTime<Utc>) -> Option<String> {
    if !kind.can_go_stale() {
        return None;
    }
    use ev::CallStatus as S;
    let moved_on = match call.status {
        S::Cancelled => Some("the call was cancelled"),
        S::Rescheduled => Some("the call was moved to another time"),
        S::Completed => Some("the call has ended"),
        S::Missed => Some("the call was missed"),
        S::Active if kind != NotificationKind::Ready => Some("the call has started"),
        _ => None,
    };
    if let Some(reason) = moved_on {
        return Some(format!("stale: {reason} (call version {})", call.version));
    }
    if kind != NotificationKind::Ready && now >= call.start {
        return Some(format!(
            "stale: the call started at {} before the reminder went out",
            call.start.to_rfc3339()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn event(body: ev::call_event::Event) -> ev::CallEvent {
        ev::CallEvent {
            event: Some(body),
            ..Default::default()
        }
    }

    #[test]
    fn every_moment_of_the_spec_has_its_event() {
        use ev::call_event::Event as E;
        let cases = [
            (
                E::Scheduled(ev::CallScheduled::default()),
                Some(NotificationKind::Booked),
            ),
            (
                E::Scheduled(ev::CallScheduled {
                    rescheduled_from: "c0".into(),
                    ..Default::default()
                }),
                Some(NotificationKind::Rescheduled),
            ),
            (
                E::ReminderDue(ev::CallReminderDue {
                    kind: ev::ReminderKind::ReminderKind24h as i32,
                }),
                Some(NotificationKind::Reminder24h),
            ),
            (
                E::ReminderDue(ev::CallReminderDue {
                    kind: ev::ReminderKind::ReminderKind1h as i32,
                }),
                Some(NotificationKind::Reminder1h),
            ),
            (E::ReminderDue(ev::CallReminderDue { kind: 0 }), None),
            (
                E::Ready(ev::CallReady::default()),
                Some(NotificationKind::Ready),
            ),
            (
                E::Ended(ev::CallEnded::default()),
                Some(NotificationKind::Completed),
            ),
            (
                E::Missed(ev::CallMissed::default()),
                Some(NotificationKind::Missed),
            ),
            (
                E::Cancelled(ev::CallCancelled::default()),
                Some(NotificationKind::Cancelled),
            ),
            (E::Rescheduled(ev::CallRescheduled::default()), None),
            (E::Started(ev::CallStarted::default()), None),
            (E::ParticipantJoined(ev::ParticipantJoined::default()), None),
        ];
        for (body, expected) in cases {
            assert_eq!(moment_of(&event(body.clone())), expected, "{body:?}");
        }
        assert_eq!(moment_of(&ev::CallEvent::default()), None);
    }

    #[test]
    fn only_ready_has_no_email_and_only_the_booking_family_an_invite() {
        for kind in NotificationKind::ALL {
            assert_eq!(kind.has_email(), kind != NotificationKind::Ready);
            assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            NotificationKind::Booked.invite(),
            Some(InviteMethod::Request)
        );
        assert_eq!(
            NotificationKind::Rescheduled.invite(),
            Some(InviteMethod::Request)
        );
        assert_eq!(
            NotificationKind::Cancelled.invite(),
            Some(InviteMethod::Cancel)
        );
        assert_eq!(NotificationKind::Reminder1h.invite(), None);
    }

    #[test]
    fn sequences_rise_along_the_chain_and_a_cancel_tops_its_request() {
        assert_eq!(invite_sequence(InviteMethod::Request, 0), 0);
        assert_eq!(invite_sequence(InviteMethod::Cancel, 0), 1);
        assert_eq!(invite_sequence(InviteMethod::Request, 1), 1);
        assert_eq!(invite_sequence(InviteMethod::Cancel, 2), 3);
        assert_eq!(invite_uid("chain-1"), "chain-1@skileez");
    }

    #[test]
    fn a_reminder_for_a_call_that_moved_on_is_stale_and_says_why() {
        let now = Utc::now();
        let view = |status| CallView {
            version: 3,
            status,
            start: now + Duration::hours(1),
        };
        use ev::CallStatus as S;
        for (status, reason) in [
            (S::Cancelled, "cancelled"),
            (S::Rescheduled, "moved"),
            (S::Completed, "ended"),
            (S::Missed, "missed"),
            (S::Active, "started"),
        ] {
            let why = staleness(NotificationKind::Reminder1h, &view(status), now).unwrap();
            assert!(why.contains(reason), "{why}");
        }
        for status in [S::Scheduled, S::Ready] {
            assert_eq!(
                staleness(NotificationKind::Reminder24h, &view(status), now),
                None
            );
        }
        // Past its start: stale for a reminder, not for "ready to join".
        let late = now + Duration::hours(2);
        assert!(staleness(NotificationKind::Reminder1h, &view(S::Ready), late).is_some());
        assert_eq!(
            staleness(NotificationKind::Ready, &view(S::Ready), late),
            None
        );
        assert_eq!(
            staleness(NotificationKind::Ready, &view(S::Active), now),
            None
        );
        // The invite family never goes stale.
        assert_eq!(
            staleness(NotificationKind::Booked, &view(S::Cancelled), now),
            None
        );
    }

    #[test]
    fn the_newest_view_wins() {
        let now = Utc::now();
        let v = |version, status| CallView {
            version,
            status,
            start: now,
        };
        let newest = CallView::newest([
            v(2, ev::CallStatus::Scheduled),
            v(4, ev::CallStatus::Cancelled),
            v(3, ev::CallStatus::Ready),
        ]);
        assert_eq!(newest.unwrap().status, ev::CallStatus::Cancelled);
    }
}
