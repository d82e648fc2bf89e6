//! E-mails with calendar invites, end to end: scheduling books, moves and
//! cancels a call; its relay publishes the events; the notifications service
//! consumes them and hands the mails to a real SMTP server (aiosmtpd), which
//! parses them back as a mail client would.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use icalendar::Component;
use skileez_domain::ActorRole;
use support::smtp::Mail;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn ics_of(mail: &Mail) -> icalendar::Calendar {
    let part = mail.calendar().expect("a text/calendar part");
    calendar(part.text.as_deref().unwrap_or_default())
}

/// Checks the MIME shape of an invite mail (RFC 6047) and its invite's
/// core properties; returns the parsed calendar.
#[track_caller]
fn check_invite(
    mail: &Mail,
    method: &str,
    uid: &str,
    sequence: u32,
    start: DateTime<Utc>,
    minutes: i64,
) -> icalendar::Calendar {
    let tree = &mail.tree;
    assert_eq!(tree.content_type, "multipart/mixed", "{mail:#?}");
    let alternative = &tree.parts[0];
    assert_eq!(alternative.content_type, "multipart/alternative");
    let inner: Vec<&str> = alternative
        .parts
        .iter()
        .map(|p| p.content_type.as_str())
        .collect();
    assert_eq!(inner, ["text/plain", "text/html", "text/calendar"]);
    let calendar_part = &alternative.parts[2];
    assert_eq!(
        calendar_part.params.get("method").map(String::as_str),
        Some(method)
    );
    let attachment = mail.ics_attachment().expect("an .ics attachment");
    assert_eq!(attachment.filename.as_deref(), Some("invite.ics"));
    assert_eq!(
        attachment.text, calendar_part.text,
        "the attachment is the same invite"
    );

    let cal = ics_of(mail);
    assert_eq!(
        cal.property_value("METHOD"),
        Some(method),
        "METHOD matches the MIME type"
    );
    let events: Vec<_> = cal.events().collect();
    assert_eq!(events.len(), 1);
    let event = events[0];
    assert_eq!(event.get_uid(), Some(uid));
    assert_eq!(event.get_sequence(), Some(sequence));
    assert!(event.get_timestamp().is_some(), "DTSTAMP");
    assert_eq!(
        event.property_value("DTSTART"),
        Some(ical_utc(start).as_str()),
        "DTSTART in UTC"
    );
    assert_eq!(
        event.property_value("DTEND"),
        Some(ical_utc(start + chrono::Duration::minutes(minutes)).as_str()),
        "DTEND in UTC"
    );
    let organizer = event.property_value("ORGANIZER").unwrap_or_default();
    assert_eq!(organizer, "mailto:noreply@skileez.test");
    assert_eq!(event.get_attendees().len(), 2, "both participants attend");
    cal
}

async fn two_people(env: &TestEnv) {
    env.add_participant("stu-1", "Asha Rao", "Asia/Kolkata", "en-IN")
        .await;
    env.add_participant("coach-1", "Bo Lee", "America/Los_Angeles", "en-US")
        .await;
}

fn for_address<'a>(mails: &'a [Mail], address: &str) -> Vec<&'a Mail> {
    mails.iter().filter(|m| m.to() == address).collect()
}

#[tokio::test]
async fn a_booking_moved_then_cancelled_sends_request_update_and_cancel_under_one_uid() {
    let env = TestEnv::start().await;
    two_people(&env).await;

    // Booked: a confirmation with a REQUEST invite to each.
    let start = day_at(3, 10, 0);
    let call = env.book_free("stu-1", "coach-1", start).await;
    let uid = format!("{}@skileez", card(&call).chain_id);
    let mails = env.smtp.wait_for(2, WAIT).await;
    let recipients: HashSet<&str> = mails.iter().map(Mail::to).collect();
    assert_eq!(
        recipients,
        HashSet::from(["stu-1@example.com", "coach-1@example.com"])
    );
    for mail in &mails {
        assert!(mail.subject().starts_with("Booked:"), "{}", mail.subject());
        assert_eq!(mail.mail_from, "noreply@skileez.test");
        assert_eq!(mail.header("Auto-Submitted"), "auto-generated");
        let cal = check_invite(mail, "REQUEST", &uid, 0, start, 15);
        let event = cal.events().next().unwrap();
        assert_eq!(event.property_value("STATUS"), Some("CONFIRMED"));
    }

    // Moved: an update with the same UID and SEQUENCE 1 at the new time.
    let new_start = day_at(3, 11, 30);
    let moved = env.reschedule("stu-1", &call_id(&call), new_start).await;
    assert_eq!(card(&moved).chain_id, card(&call).chain_id);
    let mails = env.smtp.wait_for(4, WAIT).await;
    for mail in &mails[2..] {
        assert!(mail.subject().starts_with("Moved:"), "{}", mail.subject());
        check_invite(mail, "REQUEST", &uid, 1, new_start, 15);
    }
    let student_update = for_address(&mails[2..], "stu-1@example.com")[0];
    // Where from and where to, in the student's zone (10:00 and 11:30 UTC).
    assert!(
        student_update.text().contains("from "),
        "{}",
        student_update.text()
    );
    assert!(
        student_update.text().contains("3:30 PM IST"),
        "{}",
        student_update.text()
    );
    assert!(
        student_update.text().contains("5:00 PM IST"),
        "{}",
        student_update.text()
    );

    // Cancelled: the same UID, a higher SEQUENCE, STATUS:CANCELLED, METHOD:CANCEL.
    env.cancel("coach-1", ActorRole::Coach, &call_id(&moved), "ill")
        .await;
    let mails = env.smtp.wait_for(6, WAIT).await;
    for mail in &mails[4..] {
        assert!(
            mail.subject().starts_with("Cancelled:"),
            "{}",
            mail.subject()
        );
        let cal = check_invite(mail, "CANCEL", &uid, 2, new_start, 15);
        let event = cal.events().next().unwrap();
        assert_eq!(event.property_value("STATUS"), Some("CANCELLED"));
    }
    let to_student = for_address(&mails[4..], "stu-1@example.com")[0];
    assert!(
        to_student.text().contains("Bo Lee cancelled"),
        "{}",
        to_student.text()
    );
    assert!(to_student.text().contains("ill"));

    // Nothing more, and every message its own Message-ID.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails = env.smtp.mails();
    assert_eq!(mails.len(), 6, "{mails:#?}");
    let ids: HashSet<&str> = mails.iter().map(Mail::message_id).collect();
    assert_eq!(ids.len(), 6);
    assert!(
        ids.iter()
            .all(|id| id.starts_with('<') && id.ends_with("@skileez.test>"))
    );

    // Each person also has the three in the app, in order.
    for user in ["stu-1", "coach-1"] {
        let kinds: Vec<String> = env
            .stored_notifications(user)
            .await
            .into_iter()
            .map(|(_, kind, _)| kind)
            .collect();
        assert_eq!(kinds, ["booked", "rescheduled", "cancelled"], "{user}");
    }
}

#[tokio::test]
async fn recipients_in_kolkata_and_los_angeles_see_the_same_call_at_their_own_times() {
    let env = TestEnv::start().await;
    two_people(&env).await;
    let start = day_at(4, 10, 0);
    env.book_free("stu-1", "coach-1", start).await;
    let mails = env.smtp.wait_for(2, WAIT).await;

    let kolkata = start.with_timezone(&chrono_tz::Asia::Kolkata);
    let los_angeles = start.with_timezone(&chrono_tz::America::Los_Angeles);
    let expect = [
        (
            "stu-1@example.com",
            kolkata.format("%-I:%M %p %Z").to_string(),
            kolkata.format("%B %-d, %Y").to_string(),
            "Asia/Kolkata",
        ),
        (
            "coach-1@example.com",
            los_angeles.format("%-I:%M %p %Z").to_string(),
            los_angeles.format("%B %-d, %Y").to_string(),
            "America/Los_Angeles",
        ),
    ];
    assert_eq!(expect[0].1, "3:30 PM IST");
    assert!(expect[1].1.ends_with("PST") || expect[1].1.ends_with("PDT"));
    for (address, time, date, zone) in expect {
        let mail = for_address(&mails, address)[0];
        for body in [mail.text(), mail.html()] {
            assert!(body.contains(&time), "{address}: {time} not in\n{body}");
            assert!(body.contains(&date), "{address}: {date} not in\n{body}");
        }
        // (The HTML writes the zone's `/` as `&#x2f;`.)
        assert!(
            mail.text().contains(zone),
            "{address}: {zone} not in\n{}",
            mail.text()
        );
        assert!(mail.subject().contains(&time), "{}", mail.subject());
        // The invite itself stays in UTC: one instant for both calendars.
        let cal = ics_of(mail);
        let event = cal.events().next().unwrap();
        assert_eq!(
            event.property_value("DTSTART"),
            Some(ical_utc(start).as_str())
        );
    }
}

#[tokio::test]
async fn e_mail_off_or_unknown_participants_are_skipped_and_recorded() {
    let env = TestEnv::start().await;
    env.upsert_participant("stu-1", "Asha", "stu-1@example.com", "UTC", "en-GB", false)
        .await;
    // coach-9 is not in the directory at all.
    let call = env.book_free("stu-1", "coach-9", day_at(2, 9, 0)).await;
    let rows = env
        .wait_for_deliveries(WAIT, "four deliveries", |rows| rows.len() == 4)
        .await;
    for row in &rows {
        assert_eq!(row.call_id, call_id(&call));
        match row.channel.as_str() {
            "in_app" => assert_eq!(row.state, "sent", "{row:?}"),
            _ => {
                assert_eq!(row.state, "skipped", "{row:?}");
                let why = row.last_error.clone().unwrap_or_default();
                let expected = if row.recipient_id == "stu-1" {
                    "turned e-mail off"
                } else {
                    "not in the directory"
                };
                assert!(why.contains(expected), "{row:?}");
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.smtp.mails().is_empty());
    // In the app both still hear of it, the unknown coach in plain words.
    assert_eq!(env.stored_notifications("coach-9").await.len(), 1);
}
