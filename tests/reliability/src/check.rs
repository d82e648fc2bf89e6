//! After the faults: let the system settle, ask again what was never
//! answered, then check the five invariants of issue #10 against
//! PostgreSQL, the JetStream stream and the SMTP server's mailbox.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use prost::Message;
use skileez_auth::Role;
use skileez_proto::call as ev;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::{Answer, Booking, Client};
use crate::smtp::Mail;
use crate::system::System;

/// What a scenario measured; printed by every test and quoted in
/// RELIABILITY.md.
#[derive(Debug, Default)]
pub struct Report {
    pub bookings: usize,
    pub bookings_ok: usize,
    pub bookings_err: BTreeMap<String, usize>,
    pub asked_again: usize,
    pub ops_ok: BTreeMap<&'static str, usize>,
    pub ops_err: BTreeMap<&'static str, usize>,
    pub calls: usize,
    pub calls_by_status: BTreeMap<String, usize>,
    pub events: usize,
    pub stream_messages: usize,
    pub timer_events: BTreeMap<String, usize>,
    pub timers_by_state: BTreeMap<String, usize>,
    pub emails_expected: usize,
    pub emails_sent_rows: usize,
    pub emails_stale_rows: usize,
    pub mails_received: usize,
    pub mail_resends: usize,
    /// E-mails delivered by an attempt killed before its record, then
    /// recorded stale by the next attempt (only where a process was killed).
    pub delivered_unrecorded: usize,
    pub duplicates: usize,
    pub lost: usize,
    pub settle_seconds: f64,
    /// Timer firing lateness (fired − due), median and max, in seconds.
    pub timer_lateness: (f64, f64),
    /// From a booking's commit to its timers in the timer service's table
    /// (relay, JetStream, consumer), median and max, in seconds.
    pub timer_lag: (f64, f64),
    /// From a booking's commit (its transaction's start) to its event in
    /// JetStream: the relay's lag, median and max, in seconds.
    pub publish_lag: (f64, f64),
    /// Definite error answers, one sample message per code and request.
    pub error_samples: BTreeMap<String, String>,
    pub violations: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bookings: {} (OK {}, errors {:?}, asked again after the faults {})",
            self.bookings, self.bookings_ok, self.bookings_err, self.asked_again
        )?;
        writeln!(
            f,
            "other requests OK: {:?}; errors: {:?}",
            self.ops_ok, self.ops_err
        )?;
        writeln!(f, "calls: {} {:?}", self.calls, self.calls_by_status)?;
        writeln!(
            f,
            "events: {} in PostgreSQL, {} in the stream; timer-made events {:?}; timers {:?}",
            self.events, self.stream_messages, self.timer_events, self.timers_by_state
        )?;
        writeln!(
            f,
            "e-mails: {} expected, {} rows sent, {} stale (not sent), {} received, {} re-sent with the same Message-ID, \
             {} delivered by a killed attempt and then recorded stale",
            self.emails_expected,
            self.emails_sent_rows,
            self.emails_stale_rows,
            self.mails_received,
            self.mail_resends,
            self.delivered_unrecorded
        )?;
        writeln!(
            f,
            "lag: events in JetStream {:.2} s (median) / {:.2} s (max) after their transaction began; \
             timers created {:.2} s / {:.2} s after the booking; fired {:.2} s / {:.2} s after due",
            self.publish_lag.0,
            self.publish_lag.1,
            self.timer_lag.0,
            self.timer_lag.1,
            self.timer_lateness.0,
            self.timer_lateness.1
        )?;
        if !self.error_samples.is_empty() {
            writeln!(f, "error answers: {:?}", self.error_samples)?;
        }
        writeln!(
            f,
            "duplicates: {}, lost: {}, settled in {:.1} s",
            self.duplicates, self.lost, self.settle_seconds
        )?;
        if self.violations.is_empty() {
            write!(f, "invariants: all hold")
        } else {
            write!(f, "VIOLATIONS:\n  {}", self.violations.join("\n  "))
        }
    }
}

/// Sends every request that never got a definite answer again, with its
/// request id: the stored answer comes back if it was committed.
pub async fn ask_again(client: &Client, bookings: &mut [Booking]) -> usize {
    let give_up = Duration::from_secs(30);
    let mut asked = 0;
    for booking in bookings.iter_mut() {
        if let Answer::Unknown(_) = booking.answer {
            asked += 1;
            booking.answer = client
                .book(
                    &booking.student,
                    &booking.coach,
                    booking.start,
                    &booking.request_id,
                    give_up,
                    0,
                )
                .await;
        }
        for op in booking.ops.iter_mut() {
            if !matches!(op.answer, Answer::Unknown(_)) {
                continue;
            }
            asked += 1;
            let (student, coach) = (booking.student.as_str(), booking.coach.as_str());
            op.answer = match op.op {
                "cancel" => {
                    let (user, role) = if booking.n.is_multiple_of(2) {
                        (student, Role::Student)
                    } else {
                        (coach, Role::Coach)
                    };
                    client
                        .cancel(user, role, &op.call, &op.request_id, give_up, 0)
                        .await
                }
                "reschedule" => {
                    client
                        .reschedule(
                            student,
                            &op.call,
                            booking.start + chrono::Duration::seconds(4),
                            &op.request_id,
                            give_up,
                            0,
                        )
                        .await
                }
                "end" => {
                    client
                        .end(coach, Role::Coach, &op.call, &op.request_id, give_up, 0)
                        .await
                }
                _ => op.answer.clone(),
            };
        }
    }
    asked
}

/// Waits until every call has ended its lifecycle, the relay has published
/// every event and no e-mail is waiting; returns the seconds it took.
pub async fn settle(system: &System, pool: &PgPool, within: Duration) -> f64 {
    let started = tokio::time::Instant::now();
    let js = jetstream(&system.nats.url()).await;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM calls WHERE status IN ('scheduled', 'ready', 'active')",
        )
        .fetch_one(pool)
        .await
        .expect("open calls");
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notification_deliveries WHERE state IN ('pending', 'sending')",
        )
        .fetch_one(pool)
        .await
        .expect("waiting deliveries");
        let events: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id LIKE 'call-%'")
                .fetch_one(pool)
                .await
                .expect("events");
        let published = match js.get_stream("CALL_EVENTS").await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|i| i.state.messages as i64)
                .unwrap_or(-1),
            Err(_) => -1,
        };
        // The inboxes: every consumer has handled every event.
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events e
             LEFT JOIN (SELECT event_id, count(*) AS n FROM consumer_inbox GROUP BY event_id) i
               USING (event_id)
             WHERE e.stream_id LIKE 'call-%' AND coalesce(i.n, 0) < 2",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(-1);
        if open == 0 && waiting == 0 && published == events && behind == 0 {
            // Room for a late duplicate to show itself.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return started.elapsed().as_secs_f64();
        }
        if started.elapsed() > within {
            eprintln!(
                "not settled after {within:?}: {open} calls open, {waiting} e-mails waiting, \
                 {published} of {events} events published, {behind} events not handled by both consumers"
            );
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let urls: Vec<String> = url.split(',').map(str::to_owned).collect();
    let client = async_nats::connect(urls).await.expect("connect to NATS");
    async_nats::jetstream::new(client)
}

#[derive(sqlx::FromRow)]
struct EventRow {
    event_id: Uuid,
    stream_id: String,
    version: i64,
    event_type: String,
    payload: serde_json::Value,
    recorded_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct CallRow {
    call_id: Uuid,
    student_id: String,
    coach_id: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    coach_busy_until: DateTime<Utc>,
    status: String,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    call_id: Uuid,
    kind: String,
    recipient_id: String,
    state: String,
    message_id: Option<String>,
}

/// (role, person, held from, held until, slot start, slot end, call).
type Held<'a> = (
    &'a str,
    &'a str,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    Uuid,
);

const TERMINAL: &[&str] = &[
    "CallCancelled",
    "CallRescheduled",
    "CallMissed",
    "CallEnded",
];

/// The five invariants; `resends_allowed`: whether a notifications process
/// was killed, so that an e-mail handed to SMTP just before the kill may be
/// handed again with the same Message-ID (one message for the recipient's
/// mail client, counted in the report).
pub async fn check(
    system: &System,
    pool: &PgPool,
    bookings: &[Booking],
    resends_allowed: bool,
) -> Report {
    let mut report = Report {
        bookings: bookings.len(),
        ..Report::default()
    };
    let v = &mut report.violations;

    // What the clients were told.
    let mut ok_calls: HashSet<Uuid> = HashSet::new();
    let mut errored: Vec<&Booking> = Vec::new();
    for booking in bookings {
        match &booking.answer {
            Answer::Ok(id) => {
                report.bookings_ok += 1;
                ok_calls.insert(id.parse().expect("a call id"));
            }
            Answer::Err(code, message) => {
                *report.bookings_err.entry(format!("{code:?}")).or_default() += 1;
                report
                    .error_samples
                    .entry(format!("book {code:?}"))
                    .or_insert_with(|| message.clone());
                errored.push(booking);
            }
            Answer::Unknown(why) => {
                *report.bookings_err.entry("Unknown".to_owned()).or_default() += 1;
                v.push(format!("booking {} never got an answer: {why}", booking.n));
            }
        }
        for op in &booking.ops {
            match &op.answer {
                Answer::Ok(id) => {
                    *report.ops_ok.entry(op.op).or_default() += 1;
                    if op.op == "reschedule" {
                        ok_calls.insert(id.parse().expect("a call id"));
                    }
                }
                Answer::Err(code, message) => {
                    *report.ops_err.entry(op.op).or_default() += 1;
                    report
                        .error_samples
                        .entry(format!("{} {code:?}", op.op))
                        .or_insert_with(|| message.clone());
                }
                Answer::Unknown(why) => {
                    *report.ops_err.entry(op.op).or_default() += 1;
                    v.push(format!(
                        "{} of {} never got an answer: {why}",
                        op.op, op.call
                    ));
                }
            }
        }
    }

    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT event_id, stream_id, version, event_type, payload, recorded_at
         FROM events WHERE stream_id LIKE 'call-%' ORDER BY stream_id, version",
    )
    .fetch_all(pool)
    .await
    .expect("events");
    report.events = events.len();
    let calls: Vec<CallRow> = sqlx::query_as(
        "SELECT call_id, student_id, coach_id, starts_at, ends_at, coach_busy_until, status FROM calls",
    )
    .fetch_all(pool)
    .await
    .expect("calls");
    report.calls = calls.len();
    for call in &calls {
        *report
            .calls_by_status
            .entry(call.status.clone())
            .or_default() += 1;
    }
    let calls_by_id: HashMap<Uuid, &CallRow> = calls.iter().map(|c| (c.call_id, c)).collect();
    let mut by_call: BTreeMap<Uuid, Vec<&EventRow>> = BTreeMap::new();
    for event in &events {
        let id: Uuid = event.stream_id["call-".len()..]
            .parse()
            .expect("call stream");
        by_call.entry(id).or_default().push(event);
    }

    // 1. Every booking answered OK exists once, with its events, which are in
    //    the stream once each, in per-call order.
    for id in &ok_calls {
        if !calls_by_id.contains_key(id) {
            v.push(format!(
                "call {id} was answered OK but is not in PostgreSQL"
            ));
            report.lost += 1;
        }
        match by_call.get(id).and_then(|e| e.first()) {
            Some(first) if first.event_type == "CallScheduled" && first.version == 1 => {}
            _ => {
                v.push(format!(
                    "call {id} was answered OK but has no CallScheduled"
                ));
                report.lost += 1;
            }
        }
    }
    for booking in bookings {
        for op in &booking.ops {
            let Some(call) = op.call.parse::<Uuid>().ok() else {
                continue;
            };
            let Answer::Ok(_) = op.answer else { continue };
            let expected = match op.op {
                "cancel" => "CallCancelled",
                "reschedule" => "CallRescheduled",
                "end" => "CallEnded",
                _ => "ParticipantJoined",
            };
            if !by_call
                .get(&call)
                .is_some_and(|e| e.iter().any(|e| e.event_type == expected))
            {
                v.push(format!("{} of {call} answered OK but no {expected}", op.op));
                report.lost += 1;
            }
        }
    }
    let (messages, stream_dups, stream_violations, publish_lag) =
        stream_matches(&system.nats.url(), &events).await;
    report.stream_messages = messages;
    report.publish_lag = publish_lag;
    report.duplicates += stream_dups;
    v.extend(stream_violations);

    // 2. Every due timer fired once in effect; none for a cancelled or moved
    //    call (nothing follows a terminal event); every lifecycle ended.
    for (id, list) in &by_call {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for event in list {
            let key = match event.event_type.as_str() {
                "CallReminderDue" => format!(
                    "CallReminderDue({})",
                    event.payload["kind"].as_str().unwrap_or("?")
                ),
                other => other.to_owned(),
            };
            *seen.entry(key).or_default() += 1;
        }
        for (key, count) in &seen {
            if key != "ParticipantJoined" && *count > 1 {
                v.push(format!("call {id}: {key} {count} times"));
                report.duplicates += count - 1;
            }
            if key.starts_with("CallReminderDue") || key == "CallReady" || key == "CallMissed" {
                *report.timer_events.entry(key.clone()).or_default() += count;
            }
        }
        if let Some(at) = list
            .iter()
            .position(|e| TERMINAL.contains(&e.event_type.as_str()))
            && at + 1 != list.len()
        {
            v.push(format!(
                "call {id}: {:?} after its terminal {}",
                list[at + 1..]
                    .iter()
                    .map(|e| &e.event_type)
                    .collect::<Vec<_>>(),
                list[at].event_type
            ));
        }
        if !list
            .last()
            .is_some_and(|e| TERMINAL.contains(&e.event_type.as_str()))
        {
            v.push(format!("call {id}: its lifecycle never ended"));
        }
    }
    let timer_states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM timers GROUP BY state ORDER BY state")
            .fetch_all(pool)
            .await
            .expect("timers");
    for (state, count) in timer_states {
        if state == "pending" || state == "failed" {
            v.push(format!("{count} timers {state} after settling"));
        }
        report.timers_by_state.insert(state, count as usize);
    }

    let lateness: (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM fired_at - due_at)::float8),
                max(extract(epoch FROM fired_at - due_at)::float8)
         FROM timers WHERE state = 'fired'",
    )
    .fetch_one(pool)
    .await
    .expect("lateness");
    report.timer_lateness = (lateness.0.unwrap_or(0.0), lateness.1.unwrap_or(0.0));
    let lag: (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), max(l) FROM (
             SELECT extract(epoch FROM t.created_at - e.recorded_at)::float8 AS l
             FROM timers t JOIN events e
               ON e.stream_id = 'call-' || t.call_id::text AND e.version = 1
             WHERE t.kind = 'missed') x",
    )
    .fetch_one(pool)
    .await
    .expect("lag");
    report.timer_lag = (lag.0.unwrap_or(0.0), lag.1.unwrap_or(0.0));

    // 3. Every notification delivered once per recipient; none for a
    //    cancelled or moved call.
    let deliveries: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT call_id, kind, recipient_id, state, message_id
         FROM notification_deliveries WHERE channel = 'email'",
    )
    .fetch_all(pool)
    .await
    .expect("deliveries");
    let mails = system.smtp.mails();
    report.mails_received = mails.len();
    let mut by_message_id: HashMap<&str, Vec<&Mail>> = HashMap::new();
    for mail in &mails {
        by_message_id
            .entry(mail.message_id())
            .or_default()
            .push(mail);
    }
    let mut rows_by_key: HashMap<(Uuid, &str, &str), &DeliveryRow> = HashMap::new();
    for row in &deliveries {
        rows_by_key.insert((row.call_id, &row.kind, &row.recipient_id), row);
        let received = row
            .message_id
            .as_deref()
            .and_then(|id| by_message_id.get(id))
            .map_or(0, Vec::len);
        match row.state.as_str() {
            "sent" => {
                report.emails_sent_rows += 1;
                if received == 0 {
                    v.push(format!(
                        "{} e-mail of {} to {} recorded sent, never received",
                        row.kind, row.call_id, row.recipient_id
                    ));
                    report.lost += 1;
                } else if received > 1 {
                    report.mail_resends += received - 1;
                    if !resends_allowed {
                        v.push(format!(
                            "{} e-mail of {} to {} received {received} times",
                            row.kind, row.call_id, row.recipient_id
                        ));
                        report.duplicates += received - 1;
                    }
                }
            }
            "stale" | "skipped" => {
                report.emails_stale_rows += 1;
                if received == 1 && resends_allowed {
                    // Handed to SMTP by an attempt whose process was killed
                    // before it recorded the outcome; the next attempt found
                    // the moment gone. Delivered once all the same.
                    report.delivered_unrecorded += 1;
                } else if received > 0 {
                    v.push(format!(
                        "{} e-mail of {} to {} was {} yet delivered",
                        row.kind, row.call_id, row.recipient_id, row.state
                    ));
                }
            }
            other => v.push(format!(
                "{} e-mail of {} to {} still {other}",
                row.kind, row.call_id, row.recipient_id
            )),
        }
    }
    let known: HashSet<&str> = deliveries
        .iter()
        .filter_map(|r| r.message_id.as_deref())
        .collect();
    for id in by_message_id.keys() {
        if !known.contains(id) {
            v.push(format!("a mail {id} that no delivery row knows"));
            report.duplicates += 1;
        }
    }
    // Each e-mail moment of each call, to both participants.
    for (id, list) in &by_call {
        let Some(call) = calls_by_id.get(id) else {
            continue;
        };
        let terminal_at = list
            .iter()
            .find(|e| e.event_type == "CallCancelled" || e.event_type == "CallRescheduled")
            .map(|e| e.recorded_at);
        for event in list {
            let kind = match event.event_type.as_str() {
                "CallScheduled" if event.payload["rescheduled_from"].is_null() => "booked",
                "CallScheduled" => "rescheduled",
                "CallCancelled" => "cancelled",
                "CallEnded" => "completed",
                "CallMissed" => "missed",
                "CallReminderDue" if event.payload["kind"] == "day" => "reminder_24h",
                "CallReminderDue" => "reminder_1h",
                _ => continue,
            };
            for recipient in [&call.student_id, &call.coach_id] {
                report.emails_expected += 1;
                match rows_by_key.get(&(*id, kind, recipient.as_str())) {
                    None => {
                        v.push(format!("no {kind} e-mail of {id} for {recipient}"));
                        report.lost += 1;
                    }
                    Some(row) if kind.starts_with("reminder") && row.state == "sent" => {
                        // A reminder handed to SMTP well after the call was
                        // cancelled or moved is one the staleness checks missed.
                        if let (Some(moved), Some(mails)) = (
                            terminal_at,
                            row.message_id.as_deref().and_then(|m| by_message_id.get(m)),
                        ) && mails
                            .iter()
                            .any(|m| m.received_at > moved.timestamp_millis() as f64 / 1000.0 + 5.0)
                        {
                            v.push(format!(
                                "{kind} of {id} reached {recipient} after the call was cancelled or moved"
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }

    // 4. No two active calls of one person overlap: a call holds its slot
    //    from its booking to its terminal event; two calls of one person
    //    holding overlapping slots at the same moment are a double booking.
    let mut held: Vec<Held> = Vec::new();
    for call in &calls {
        let Some(list) = by_call.get(&call.call_id) else {
            continue;
        };
        let from = list[0].recorded_at;
        let until = list
            .iter()
            .find(|e| TERMINAL.contains(&e.event_type.as_str()))
            .map_or(Utc::now(), |e| e.recorded_at);
        held.push((
            "coach",
            &call.coach_id,
            from,
            until,
            call.starts_at,
            call.coach_busy_until,
            call.call_id,
        ));
        held.push((
            "student",
            &call.student_id,
            from,
            until,
            call.starts_at,
            call.ends_at,
            call.call_id,
        ));
    }
    let tolerance = chrono::Duration::milliseconds(500);
    let mut per_person: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, h) in held.iter().enumerate() {
        per_person.entry((h.0, h.1)).or_default().push(i);
    }
    for ((role, person), list) in &per_person {
        for (a, &i) in list.iter().enumerate() {
            for &j in &list[a + 1..] {
                let (x, y) = (&held[i], &held[j]);
                let held_together = x.2.max(y.2) + tolerance < x.3.min(y.3);
                let slots_overlap = x.4.max(y.4) < x.5.min(y.5);
                if held_together && slots_overlap {
                    v.push(format!(
                        "{role} {person} double-booked: {} and {}",
                        x.6, y.6
                    ));
                }
            }
        }
    }

    // 5. A booking answered with an error left no trace.
    for booking in errored {
        let traces: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM calls WHERE student_id = $1)
                  + (SELECT count(*) FROM request_ids WHERE request_id = $2)",
        )
        .bind(&booking.student)
        .bind(&booking.request_id)
        .fetch_one(pool)
        .await
        .expect("traces");
        let mailed = mails
            .iter()
            .filter(|m| {
                m.rcpt_tos
                    .iter()
                    .any(|r| r.starts_with(&format!("{}@", booking.student)))
            })
            .count();
        if traces > 0 || mailed > 0 {
            v.push(format!(
                "booking {} answered {:?} left {traces} rows and {mailed} e-mails",
                booking.n, booking.answer
            ));
        }
    }
    report
}

/// Reads the whole CALL_EVENTS stream: each stored event once, per-call
/// versions in order, nothing else. Returns (messages, duplicates,
/// violations, publish lag median and max).
async fn stream_matches(url: &str, events: &[EventRow]) -> (usize, usize, Vec<String>, (f64, f64)) {
    let recorded: HashMap<String, DateTime<Utc>> = events
        .iter()
        .map(|e| (e.event_id.to_string(), e.recorded_at))
        .collect();
    let mut lags: Vec<f64> = Vec::new();
    let mut violations = Vec::new();
    let js = jetstream(url).await;
    let mut stream = js.get_stream("CALL_EVENTS").await.expect("CALL_EVENTS");
    let total = stream.info().await.expect("info").state.messages as usize;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut seen: HashSet<String> = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut duplicates = 0;
    for _ in 0..total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("message");
        let event = ev::CallEvent::decode(message.payload.as_ref()).expect("a CallEvent");
        if let (Ok(info), Some(at)) = (message.info(), recorded.get(&event.event_id)) {
            let published = info.published.unix_timestamp_nanos() as f64 / 1e9;
            lags.push(published - at.timestamp_micros() as f64 / 1e6);
        }
        if !seen.insert(event.event_id.clone()) {
            duplicates += 1;
            violations.push(format!("event {} twice in the stream", event.event_id));
        }
        let previous = last.entry(event.call_id.clone()).or_default();
        if event.stream_version != *previous + 1 {
            violations.push(format!(
                "call {}: version {} after {} in the stream",
                event.call_id, event.stream_version, previous
            ));
        }
        *previous = event.stream_version;
    }
    let stored: HashSet<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let missing = stored.difference(&seen).count();
    let extra = seen.difference(&stored).count();
    if missing > 0 {
        violations.push(format!("{missing} committed events not in the stream"));
    }
    if extra > 0 {
        violations.push(format!(
            "{extra} events in the stream that were never committed"
        ));
    }
    lags.sort_by(f64::total_cmp);
    let lag = (
        lags.get(lags.len() / 2).copied().unwrap_or(0.0),
        lags.last().copied().unwrap_or(0.0),
    );
    (total, duplicates, violations, lag)
}
