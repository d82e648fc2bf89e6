//! Reminders come at their moment, and never for a call that moved on.
//!
//! The reminder events are driven with `CallTimerService.TriggerReminder` on
//! the in-process scheduling service, as the timer service does at the
//! reminder's moment; lead times are seconds (24 h → 20 s, 1 h → 10 s).

mod support;

use std::time::Duration;

use chrono::Utc;
use skileez_domain::ActorRole;
use skileez_proto::call as ev;
use support::smtp::Mail;
use support::*;

/// Reminders are due at their moment; mail reaching the SMTP server later
/// than this after it counts as late.
const PROMPT: Duration = Duration::from_secs(3);

fn reminders_to<'a>(mails: &'a [Mail], address: &str, prefix: &str) -> Vec<&'a Mail> {
    mails
        .iter()
        .filter(|m| m.to() == address && m.subject().starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn reminders_arrive_at_their_moment_and_none_for_a_call_cancelled_before_them() {
    let options = Options {
        policy: fast_policy(),
        ..Options::default()
    };
    let env = TestEnv::start_with(options, 1).await;
    for (id, zone) in [
        ("stu-1", "Asia/Kolkata"),
        ("coach-1", "America/Los_Angeles"),
        ("stu-2", "Europe/Paris"),
        ("coach-2", "UTC"),
    ] {
        env.add_participant(id, &format!("Name {id}"), zone, "en-US")
            .await;
    }
    let start = seconds_ahead(25);
    let kept = env.book_free("stu-1", "coach-1", start).await;
    let dropped = env.book_free("stu-2", "coach-2", start).await;
    env.cancel("stu-2", ActorRole::Student, &call_id(&dropped), "")
        .await;
    env.smtp.wait_for(6, Duration::from_secs(20)).await;

    let policy = fast_policy();
    for (lead, kind, prefix) in [
        (
            policy.reminder_day_lead,
            ev::ReminderKind::ReminderKind24h,
            "Reminder:",
        ),
        (
            policy.reminder_hour_lead,
            ev::ReminderKind::ReminderKind1h,
            "Starting soon:",
        ),
    ] {
        let moment = start - lead;
        sleep_until(moment + chrono::Duration::milliseconds(100)).await;
        assert!(
            env.trigger_reminder(&call_id(&kept), kind).await,
            "{kind:?} applies"
        );
        // Scheduling answers the cancelled call's reminder as stale: no event.
        assert!(!env.trigger_reminder(&call_id(&dropped), kind).await);
        let mails = env
            .smtp
            .wait_until(PROMPT + Duration::from_secs(2), "the reminders", |mails| {
                ["stu-1@example.com", "coach-1@example.com"]
                    .iter()
                    .all(|to| reminders_to(mails, to, prefix).len() == 1)
            })
            .await;
        for to in ["stu-1@example.com", "coach-1@example.com"] {
            let mail = reminders_to(&mails, to, prefix)[0];
            let late = mail.received_at - moment.timestamp_millis() as f64 / 1000.0;
            assert!(
                late >= 0.0 && late < PROMPT.as_secs_f64(),
                "{prefix} to {to} {late:.2}s after its moment"
            );
            assert!(mail.calendar().is_none(), "a reminder carries no invite");
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails = env.smtp.mails();
    for to in ["stu-2@example.com", "coach-2@example.com"] {
        let subjects: Vec<&str> = mails
            .iter()
            .filter(|m| m.to() == to)
            .map(Mail::subject)
            .collect();
        assert_eq!(subjects.len(), 2, "{to}: {subjects:?}");
        assert!(subjects[0].starts_with("Booked:") && subjects[1].starts_with("Cancelled:"));
    }
    // Booked, 24 h and 1 h for the kept call; booked and cancelled for the other.
    assert_eq!(mails.len(), 6 + 4);
    // In the app, too: the kept call's people have both reminders.
    let kinds: Vec<String> = env
        .stored_notifications("stu-1")
        .await
        .into_iter()
        .map(|(_, kind, _)| kind)
        .collect();
    assert_eq!(kinds, ["booked", "reminder_24h", "reminder_1h"]);
}

#[tokio::test]
async fn a_reminder_for_a_call_cancelled_meanwhile_is_dropped_and_recorded_stale() {
    let env = TestEnv::start().await;
    env.add_participant("stu-1", "Asha", "UTC", "en-GB").await;
    env.add_participant("coach-1", "Bo", "UTC", "en-GB").await;

    // A call whose cancellation (version 3) is already in the cards bucket
    // when its reminder (version 2) is handled: scheduling moved on.
    let call = Synthetic::new("stu-1", "coach-1", Utc::now() + chrono::Duration::hours(20));
    publish_event(&env, &call.scheduled(), "s1").await;
    env.smtp.wait_for(2, Duration::from_secs(20)).await;
    call.put_card(&env, 3, ev::CallStatus::Cancelled).await;
    publish_event(
        &env,
        &call.reminder(2, ev::ReminderKind::ReminderKind24h),
        "s2",
    )
    .await;
    let rows = env
        .wait_for_deliveries(Duration::from_secs(20), "the stale reminder", |rows| {
            rows.iter().filter(|r| r.kind == "reminder_24h").count() == 4
        })
        .await;
    for row in rows.iter().filter(|r| r.kind == "reminder_24h") {
        assert_eq!(row.state, "stale", "{row:?}");
        assert!(
            row.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("cancelled"),
            "{row:?}"
        );
    }

    // Another whose reminder was queued while SMTP was down, and which was
    // cancelled before SMTP came back: the queued reminder is dropped at
    // send time, the cancellation goes out.
    let call = Synthetic::new("stu-1", "coach-1", Utc::now() + chrono::Duration::hours(30));
    publish_event(&env, &call.scheduled(), "t1").await;
    env.smtp.wait_for(4, Duration::from_secs(20)).await;
    env.smtp.refuse(true);
    publish_event(
        &env,
        &call.reminder(2, ev::ReminderKind::ReminderKind1h),
        "t2",
    )
    .await;
    env.wait_for_deliveries(
        Duration::from_secs(20),
        "the reminder to be tried",
        |rows| {
            rows.iter()
                .filter(|r| r.kind == "reminder_1h" && r.channel == "email" && r.attempts >= 1)
                .count()
                == 2
        },
    )
    .await;
    publish_event(&env, &call.cancelled(3), "t3").await;
    env.wait_for_deliveries(
        Duration::from_secs(20),
        "the cancellation to be queued",
        |rows| {
            rows.iter()
                .filter(|r| r.kind == "cancelled" && r.call_id == call.call_id)
                .count()
                == 4
        },
    )
    .await;
    env.smtp.refuse(false);
    let rows = env
        .wait_for_deliveries(Duration::from_secs(20), "the queue to settle", |rows| {
            rows.iter()
                .filter(|r| r.call_id == call.call_id && r.channel == "email")
                .all(|r| r.state != "pending" && r.state != "sending")
        })
        .await;
    for row in rows
        .iter()
        .filter(|r| r.call_id == call.call_id && r.channel == "email")
    {
        let expected = if row.kind == "reminder_1h" {
            "stale"
        } else {
            "sent"
        };
        assert_eq!(row.state, expected, "{row:?}");
    }
    let mails = env.smtp.mails();
    assert!(
        mails
            .iter()
            .all(|m| !m.subject().starts_with("Starting soon:"))
    );
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.subject().starts_with("Cancelled:"))
            .count(),
        2
    );
}
