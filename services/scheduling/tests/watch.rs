//! WatchCalls: a client sees its calls' changes live, and after a disconnect
//! resumes from the last position it saw without missing or repeating one.

mod support;

use std::time::Duration as StdDuration;

use skileez_proto::{call as ev, scheduling as pb};
use support::*;
use tokio_stream::StreamExt;
use tonic::Streaming;

async fn next(stream: &mut Streaming<pb::CallChange>) -> pb::CallChange {
    tokio::time::timeout(StdDuration::from_secs(10), stream.next())
        .await
        .expect("a change within 10 s")
        .expect("stream open")
        .expect("no error")
}

fn event_name(change: &pb::CallChange) -> &'static str {
    match change.event.as_ref().and_then(|e| e.event.as_ref()) {
        Some(ev::call_event::Event::Scheduled(_)) => "scheduled",
        Some(ev::call_event::Event::Cancelled(_)) => "cancelled",
        Some(ev::call_event::Event::Rescheduled(_)) => "rescheduled",
        _ => "other",
    }
}

#[tokio::test]
async fn a_watcher_sees_its_own_changes_live_and_resumes_without_gaps() {
    let app = TestApp::spawn().await;
    let mut watch = app
        .student("stu-1")
        .watch_calls(pb::WatchCallsRequest::default())
        .await
        .expect("watch")
        .into_inner();

    // Someone else's booking is not shown; our own is, with its card.
    app.book_free("stu-2", "coach-1", day_at(3, 9, 0))
        .await
        .expect("booked");
    let call = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    let first = next(&mut watch).await;
    assert_eq!(event_name(&first), "scheduled");
    let card = first.event.as_ref().unwrap().card.as_ref().unwrap();
    assert_eq!(card.call_id, support::card(&call).call_id);
    assert_eq!(card.status, ev::CallStatus::Scheduled as i32);
    drop(watch);

    // While disconnected: a cancellation and two more bookings.
    let id = support::card(&call).call_id.clone();
    app.student("stu-1")
        .cancel_call(pb::CancelCallRequest {
            call_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("cancelled");
    app.book_free("stu-1", "coach-2", day_at(4, 10, 0))
        .await
        .expect("booked");
    app.book_free("stu-1", "coach-3", day_at(5, 10, 0))
        .await
        .expect("booked");

    let mut resumed = app
        .student("stu-1")
        .watch_calls(pb::WatchCallsRequest {
            after: first.position.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let missed: Vec<_> = [
        next(&mut resumed).await,
        next(&mut resumed).await,
        next(&mut resumed).await,
    ]
    .into();
    assert_eq!(
        missed.iter().map(event_name).collect::<Vec<_>>(),
        ["cancelled", "scheduled", "scheduled"]
    );
    // Then live again, and nothing repeated.
    app.book_free("stu-1", "coach-4", day_at(6, 10, 0))
        .await
        .expect("booked");
    let live = next(&mut resumed).await;
    assert_eq!(event_name(&live), "scheduled");
    let positions: Vec<&str> = missed
        .iter()
        .chain([&live])
        .map(|c| c.position.as_str())
        .collect();
    let mut unique = positions.clone();
    unique.dedup();
    assert_eq!(positions, unique);
    assert!(
        tokio::time::timeout(StdDuration::from_millis(500), resumed.next())
            .await
            .is_err(),
        "no duplicates follow"
    );
}

#[tokio::test]
async fn a_malformed_resume_position_is_invalid_argument() {
    let app = TestApp::spawn().await;
    let result = app
        .student("stu-1")
        .watch_calls(pb::WatchCallsRequest {
            after: "yesterday".into(),
        })
        .await;
    assert_eq!(fields(&result.unwrap_err()), vec!["after"]);
}

/// With nobody watching, the change feed's tailer does not read the store on
/// every commit, it only keeps up with the head. A watcher that resumes
/// while bookings keep committing must still get every one of them once, in
/// order: the catch-up from the store and the live feed meet without a gap.
#[tokio::test]
async fn a_watcher_resuming_during_a_burst_after_nobody_watched_misses_and_repeats_nothing() {
    let app = TestApp::spawn().await;
    let mut first = app
        .student("stu-burst")
        .watch_calls(pb::WatchCallsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    app.book_free("stu-burst", "coach-b0", day_at(3, 8, 0))
        .await
        .expect("booked");
    let from = next(&mut first).await.position;
    drop(first);
    // Nobody watches for a while, and calls are booked meanwhile.
    for i in 1..=5u32 {
        app.book_free("stu-burst", &format!("coach-b{i}"), day_at(3, 8 + i, 0))
            .await
            .expect("booked");
    }
    tokio::time::sleep(StdDuration::from_millis(200)).await;

    // More bookings, while the watcher resumes.
    let burst = {
        let app = &app;
        async move {
            let mut ids = Vec::new();
            for i in 6..=20u32 {
                let call = app
                    .book_free(
                        "stu-burst",
                        &format!("coach-b{i}"),
                        day_at(4, 0, 0) + chrono::Duration::minutes(20 * i64::from(i)),
                    )
                    .await
                    .expect("booked");
                ids.push(support::card(&call).call_id.clone());
            }
            ids
        }
    };
    let resume = async {
        app.student("stu-burst")
            .watch_calls(pb::WatchCallsRequest { after: from })
            .await
            .expect("watch")
            .into_inner()
    };
    let (_, mut resumed) = tokio::join!(burst, resume);
    let mut positions = Vec::new();
    for _ in 1..=20 {
        let change = next(&mut resumed).await;
        assert_eq!(event_name(&change), "scheduled");
        positions.push(change.position);
    }
    let parsed: Vec<(u64, i64)> = positions
        .iter()
        .map(|p| {
            let (tx, pos) = p.split_once('-').expect("tx-position");
            (tx.parse().expect("tx"), pos.parse().expect("position"))
        })
        .collect();
    assert!(
        parsed.windows(2).all(|w| w[0] < w[1]),
        "in feed order, each once: {positions:?}"
    );
    assert!(
        tokio::time::timeout(StdDuration::from_millis(500), resumed.next())
            .await
            .is_err(),
        "nothing repeated after the twenty"
    );
}
