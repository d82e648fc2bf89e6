//! Calendar invites (RFC 5545 objects, RFC 5546 methods), built with the
//! `icalendar` crate.
//!
//! One VCALENDAR with `METHOD` (the same as the MIME type's `method`
//! parameter, see `mail.rs`) and one VEVENT: `UID` of the booking chain
//! (stable across reschedules, so clients update one entry instead of adding
//! a second), `SEQUENCE` raised on every change including the cancellation,
//! `DTSTAMP` the moment of the change (the event's time, so a resend is
//! byte-identical), `DTSTART`/`DTEND` in UTC, the platform as `ORGANIZER` and
//! both participants as `ATTENDEE`s. A CANCEL carries `STATUS:CANCELLED`.
//!
//! Known failures of other tools this avoids: a cancellation sent as a
//! REQUEST (the event stays in calendars), a UID that changes (the invite
//! shows twice), a SEQUENCE that does not rise (clients ignore the update).

use chrono::{DateTime, Utc};
use icalendar::{
    Attendee, Calendar, Component, EventLike, EventStatus, PartStat, Property, Role as AttendeeRole,
};

use crate::model::InviteMethod;

/// A person in an invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub method: InviteMethod,
    pub uid: String,
    pub sequence: u32,
    pub stamp: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub summary: String,
    pub description: String,
    pub organizer: Party,
    pub attendees: Vec<Party>,
}

const PRODID: &str = "-//Skileez//Call Scheduling//EN";

impl Invite {
    /// The iCalendar text, lines ending in CRLF and folded at 75 octets.
    pub fn to_ics(&self) -> String {
        let mut event = icalendar::Event::new();
        event
            .uid(&self.uid)
            .sequence(self.sequence)
            .timestamp(self.stamp)
            .starts(self.start)
            .ends(self.end)
            .summary(&self.summary)
            .description(&self.description)
            .status(match self.method {
                InviteMethod::Request => EventStatus::Confirmed,
                InviteMethod::Cancel => EventStatus::Cancelled,
            })
            .append_property(
                Property::new("ORGANIZER", format!("mailto:{}", self.organizer.email))
                    .add_parameter("CN", &param_text(&self.organizer.name))
                    .done(),
            );
        for attendee in &self.attendees {
            event.attendee(
                Attendee::new(format!("mailto:{}", attendee.email))
                    .cn(param_text(&attendee.name))
                    .role(AttendeeRole::ReqParticipant)
                    .partstat(PartStat::Accepted)
                    .rsvp(false),
            );
        }
        let mut calendar = Calendar::empty();
        calendar
            .append_property(("PRODID", PRODID))
            .append_property(("VERSION", "2.0"))
            .append_property(("CALSCALE", "GREGORIAN"))
            .append_property(("METHOD", self.method.as_str()))
            .push(event.done());
        calendar.to_string()
    }
}

/// A parameter value may not hold a DQUOTE or control characters
/// (RFC 5545 §3.1); the crate quotes the rest.
fn param_text(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '"' && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn invite(method: InviteMethod, sequence: u32) -> Invite {
        let start = Utc.with_ymd_and_hms(2025, 3, 4, 10, 0, 0).unwrap();
        Invite {
            method,
            uid: "0192-chain@skileez".into(),
            sequence,
            stamp: Utc.with_ymd_and_hms(2025, 3, 1, 8, 30, 5).unwrap(),
            start,
            end: start + chrono::Duration::minutes(15),
            summary: "Free consultation: Asha and Bo".into(),
            description: "Booked on Skileez, with a comma; and a semicolon".into(),
            organizer: Party {
                name: "Skileez".into(),
                email: "noreply@skileez.test".into(),
            },
            attendees: vec![
                Party {
                    name: "Asha \"A\" Rao".into(),
                    email: "asha@example.com".into(),
                },
                Party {
                    name: "Bo, Coach".into(),
                    email: "bo@example.com".into(),
                },
            ],
        }
    }

    #[test]
    fn a_request_has_every_required_property_in_utc() {
        let ics = invite(InviteMethod::Request, 0).to_ics();
        for line in [
            "BEGIN:VCALENDAR\r\n",
            "METHOD:REQUEST\r\n",
            "VERSION:2.0\r\n",
            "PRODID:-//Skileez//Call Scheduling//EN\r\n",
            "BEGIN:VEVENT\r\n",
            "UID:0192-chain@skileez\r\n",
            "SEQUENCE:0\r\n",
            "DTSTAMP:20250301T083005Z\r\n",
            "DTSTART:20250304T100000Z\r\n",
            "DTEND:20250304T101500Z\r\n",
            "STATUS:CONFIRMED\r\n",
            "ORGANIZER;CN=Skileez:mailto:noreply@skileez.test\r\n",
            "DESCRIPTION:Booked on Skileez\\, with a comma\\; and a semicolon\r\n",
            "END:VEVENT\r\n",
            "END:VCALENDAR\r\n",
        ] {
            assert!(ics.contains(line), "{line:?} missing in\n{ics}");
        }
        assert_eq!(ics.matches("ATTENDEE").count(), 2, "{ics}");
        assert!(ics.contains("CN=\"Bo, Coach\""), "{ics}");
        assert!(ics.contains("CN=Asha A Rao"), "{ics}");
        assert!(!ics.contains("DTSTAMP:2026") || ics.matches("DTSTAMP").count() == 1);
        assert_eq!(ics.matches("DTSTAMP").count(), 1);
        assert!(ics.lines().all(|l| l.len() <= 75), "{ics}");
    }

    #[test]
    fn a_cancel_keeps_the_uid_raises_the_sequence_and_says_cancelled() {
        let ics = invite(InviteMethod::Cancel, 1).to_ics();
        assert!(ics.contains("METHOD:CANCEL\r\n"), "{ics}");
        assert!(ics.contains("UID:0192-chain@skileez\r\n"), "{ics}");
        assert!(ics.contains("SEQUENCE:1\r\n"), "{ics}");
        assert!(ics.contains("STATUS:CANCELLED\r\n"), "{ics}");
    }

    #[test]
    fn the_same_invite_is_the_same_text() {
        assert_eq!(
            invite(InviteMethod::Request, 2).to_ics(),
            invite(InviteMethod::Request, 2).to_ics()
        );
    }
}
