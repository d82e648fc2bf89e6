//! The path from a committed event to JetStream: every event on its subject,
//! in order, once, decoded from protobuf, with the latest card of each call in
//! the CALL_CARDS bucket; and the platform's contract and participant facts
//! flowing back into the directory.

mod support;

use std::{collections::HashMap, time::Duration as StdDuration};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use prost::Message;
use skileez_proto::{call as ev, contract as ct, scheduling as pb, user as us};
use support::*;

struct Received {
    subject: String,
    event: ev::CallEvent,
    headers: HashMap<String, String>,
}

fn nats_url(app: &TestApp) -> String {
    app.nats.as_ref().expect("nats").url()
}

/// Reads CALL_EVENTS from the start until `count` messages arrived.
async fn read_stream(app: &TestApp, count: usize) -> Vec<Received> {
    let client = async_nats::connect(nats_url(app)).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(15);
    let stream = loop {
        match js.get_stream("CALL_EVENTS").await {
            Ok(stream) => break stream,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(StdDuration::from_millis(50)).await
            }
            Err(error) => panic!("no CALL_EVENTS stream: {error}"),
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut received = Vec::new();
    while received.len() < count {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {count} events reached the stream",
                    received.len()
                )
            })
            .expect("open")
            .expect("message");
        let headers = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            v.first().map(|v| v.to_string()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        received.push(Received {
            subject: message.subject.to_string(),
            event: ev::CallEvent::decode(message.payload.as_ref()).expect("a CallEvent"),
            headers,
        });
    }
    // Nothing more than expected (no duplicates) within a moment.
    let extra = tokio::time::timeout(StdDuration::from_millis(500), messages.next()).await;
    assert!(extra.is_err(), "unexpected extra message in the stream");
    received
}

fn id(call: &pb::Call) -> String {
    card(call).call_id.clone()
}

#[tokio::test]
async fn booked_moved_and_cancelled_calls_reach_their_subjects_in_order_once() {
    let app = TestApp::spawn_with_nats(fast_policy()).await;
    let call = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    let moved = app
        .student("stu-1")
        .reschedule_call(pb::RescheduleCallRequest {
            call_id: id(&call),
            new_start: Some(utc(day_at(3, 11, 0))),
            ..Default::default()
        })
        .await
        .expect("moved")
        .into_inner();
    let new_call = moved.call.expect("new call");
    app.coach("coach-1")
        .cancel_call(pb::CancelCallRequest {
            call_id: id(&new_call),
            reason: "ill".into(),
            ..Default::default()
        })
        .await
        .expect("cancelled");

    let received = read_stream(&app, 4).await;
    let subjects: Vec<&str> = received.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            format!("skileez.call.v1.CallScheduled.{}", id(&call)),
            format!("skileez.call.v1.CallRescheduled.{}", id(&call)),
            format!("skileez.call.v1.CallScheduled.{}", id(&new_call)),
            format!("skileez.call.v1.CallCancelled.{}", id(&new_call)),
        ]
    );
    // The envelope: ids, versions, actor and card.
    let first = &received[0];
    assert_eq!(first.event.call_id, id(&call));
    assert_eq!(first.event.stream_version, 1);
    assert_eq!(
        first.headers.get("Nats-Msg-Id"),
        Some(&first.event.event_id)
    );
    assert_eq!(
        first.headers.get("ce-type").map(String::as_str),
        Some("skileez.call.v1.CallScheduled")
    );
    assert_eq!(first.headers.get("ce-subject"), Some(&id(&call)));
    assert_eq!(
        first.headers.get("ce-specversion").map(String::as_str),
        Some("1.0")
    );
    assert!(
        first
            .headers
            .get("Content-Type")
            .is_some_and(|c| c.starts_with("application/protobuf"))
    );
    let cancelled = &received[3].event;
    let Some(ev::call_event::Event::Cancelled(body)) = &cancelled.event else {
        panic!("not a cancellation")
    };
    assert_eq!(body.reason, "ill");
    assert_eq!(
        cancelled.card.as_ref().unwrap().status,
        ev::CallStatus::Cancelled as i32
    );
    assert_eq!(cancelled.actor.as_ref().unwrap().user_id, "coach-1");
    let ids: std::collections::HashSet<&str> =
        received.iter().map(|r| r.event.event_id.as_str()).collect();
    assert_eq!(ids.len(), 4, "each event once");

    // The bucket holds each call's final card.
    let client = async_nats::connect(nats_url(&app)).await.expect("connect");
    let kv = async_nats::jetstream::new(client)
        .get_key_value("CALL_CARDS")
        .await
        .expect("bucket");
    for (call_id, status, version) in [
        (id(&call), ev::CallStatus::Rescheduled, 2),
        (id(&new_call), ev::CallStatus::Cancelled, 2),
    ] {
        let mut card = None;
        for _ in 0..100 {
            if let Some(bytes) = kv.get(&call_id).await.expect("kv get") {
                let decoded = ev::CallCard::decode(bytes.as_ref()).expect("a card");
                if decoded.version == version {
                    card = Some(decoded);
                    break;
                }
            }
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        let card = card.unwrap_or_else(|| panic!("no final card for {call_id}"));
        assert_eq!(card.status, status as i32);
    }
}

async fn publish(app: &TestApp, subject: String, msg_id: &str, payload: Vec<u8>) {
    let client = async_nats::connect(nats_url(app)).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    // The stream may still be being created by the service.
    for attempt in 0..100 {
        let acked = match js
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match acked {
            Ok(()) => return,
            Err(_) if attempt < 99 => tokio::time::sleep(StdDuration::from_millis(50)).await,
            Err(error) => panic!("publish: {error}"),
        }
    }
}

fn contract(version: u64, total: u32, status: ct::ContractStatus) -> Vec<u8> {
    ct::ContractUpdated {
        contract_id: "k-9".into(),
        student_id: "stu-1".into(),
        coach_id: "coach-1".into(),
        status: status as i32,
        session_minutes: 45,
        sessions: Some(ct::contract_updated::Sessions::SessionsTotal(total)),
        version,
        updated_at: None,
    }
    .encode_to_vec()
}

async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!("condition not reached within 10 s");
}

#[tokio::test]
async fn platform_facts_update_the_directory_and_older_ones_never_win() {
    let app = TestApp::spawn_with_nats(fast_policy()).await;
    let subject = "skileez.contract.v1.ContractUpdated.k-9".to_owned();
    publish(
        &app,
        subject.clone(),
        "c-1",
        contract(1, 2, ct::ContractStatus::Accepted),
    )
    .await;
    publish(
        &app,
        subject.clone(),
        "c-3",
        contract(3, 5, ct::ContractStatus::Paid),
    )
    .await;
    // Late and older: must not overwrite version 3.
    publish(
        &app,
        subject.clone(),
        "c-2",
        contract(2, 1, ct::ContractStatus::Cancelled),
    )
    .await;
    let get = || async {
        app.directory()
            .get_contract(pb::GetContractRequest {
                contract_id: "k-9".into(),
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    let seen = eventually(|| async {
        get()
            .await
            .filter(|c| c.status == pb::ContractStatus::Paid as i32)
    })
    .await;
    assert_eq!(
        seen.sessions,
        Some(pb::contract::Sessions::SessionsTotal(5))
    );
    // A marker published after the old message proves it was processed.
    publish(
        &app,
        "skileez.user.v1.ParticipantUpdated.stu-1".into(),
        "u-1",
        us::ParticipantUpdated {
            user_id: "stu-1".into(),
            display_name: "Ada".into(),
            email: "ada@example.com".into(),
            time_zone: "Europe/Berlin".into(),
            locale: "en-GB".into(),
            email_enabled: true,
            version: 7,
            updated_at: None,
        }
        .encode_to_vec(),
    )
    .await;
    let participant = eventually(|| async {
        app.directory()
            .get_participant(pb::GetParticipantRequest {
                user_id: "stu-1".into(),
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    })
    .await;
    assert_eq!(participant.time_zone, "Europe/Berlin");
    let after = get().await.expect("contract");
    assert_eq!(
        after.status,
        pb::ContractStatus::Paid as i32,
        "the older fact did not win"
    );
    // The ingested contract is bookable.
    app.book_paid("stu-1", "coach-1", "k-9", day_at(3, 10, 0))
        .await
        .expect("booked under the ingested contract");
}

/// Only the leading relay publishes, and its own instance wakes it
/// directly: the leader's commits send no `NOTIFY` (it would cost a
/// transaction per wake-up), while another instance's commits do, so the
/// leader hears of them at once instead of at its next poll.
#[tokio::test]
async fn only_commits_of_instances_that_do_not_lead_the_relay_notify() {
    use skileez_domain::{
        ActorRole, CallId, CallKind, Command, RequestedStart, ScheduleCall, UserId,
    };
    use skileez_scheduling::{app::Scheduler, auth::Principal};

    let app = TestApp::spawn_with_nats(fast_policy()).await;
    // The leader has relayed a first booking: it leads.
    app.book_free("stu-lead-0", "coach-lead", day_at(3, 9, 0))
        .await
        .expect("booked");
    read_stream(&app, 1).await;

    let mut listener = sqlx::postgres::PgListener::connect_with(app.db.pool())
        .await
        .expect("listener");
    listener
        .listen(skileez_scheduling::relay::WAKE_CHANNEL)
        .await
        .expect("listen");
    for i in 1..=5 {
        app.book_free(&format!("stu-lead-{i}"), "coach-lead", day_at(3, 9 + i, 0))
            .await
            .expect("booked");
    }
    let heard = tokio::time::timeout(StdDuration::from_millis(500), listener.recv()).await;
    assert!(heard.is_err(), "the leader's own commits sent a NOTIFY");
    read_stream(&app, 6).await;

    // Another instance: its command handler and its waker, no relay lead.
    let other = Scheduler::new(app.db.pool().clone(), fast_policy());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let waker = tokio::spawn(skileez_scheduling::relay::wake_other_instances(
        app.db.pool().clone(),
        other.committed(),
        other.relay_leading(),
        shutdown.clone(),
    ));
    let admin = Principal {
        user_id: UserId::parse("admin-other").unwrap(),
        role: ActorRole::Admin,
    };
    let call_id = CallId::new();
    let command = Command::Schedule(ScheduleCall {
        call_id,
        kind: CallKind::FreeConsultation,
        student_id: UserId::parse("stu-other").unwrap(),
        coach_id: UserId::parse("coach-lead").unwrap(),
        contract: None,
        start: RequestedStart::utc(day_at(4, 9, 0)),
        by: admin.actor(),
        existing_free_consultation: None,
        note: None,
    });
    // The waker must be waiting before the commit it is to hear of.
    tokio::time::sleep(StdDuration::from_millis(50)).await;
    other
        .execute_new(&admin, call_id, None, |_| Ok(command.clone()), |_| ())
        .await
        .expect("booked by the other instance");
    let heard = tokio::time::timeout(StdDuration::from_secs(5), listener.recv())
        .await
        .expect("the other instance's commit sent a NOTIFY")
        .expect("notification");
    assert_eq!(heard.channel(), skileez_scheduling::relay::WAKE_CHANNEL);
    let events = read_stream(&app, 7).await;
    assert_eq!(events[6].event.call_id, call_id.to_string());
    shutdown.cancel();
    waker.await.expect("waker");
}
