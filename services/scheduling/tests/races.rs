//! Double booking and duplicate requests under real concurrency: the database
//! settles every race.

mod support;

use std::collections::HashSet;

use chrono::Duration;
use futures::future::join_all;
use skileez_proto::scheduling as pb;
use support::*;
use tonic::Code;

/// Active calls of one person that overlap, straight from the read model.
async fn overlaps(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM calls a JOIN calls b
           ON a.call_id < b.call_id
          AND (a.coach_id = b.coach_id OR a.student_id = b.student_id)
          AND tstzrange(a.starts_at, a.ends_at, '[)') && tstzrange(b.starts_at, b.ends_at, '[)')
        WHERE a.status IN ('scheduled', 'ready', 'active')
          AND b.status IN ('scheduled', 'ready', 'active')",
    )
    .fetch_one(app.db.pool())
    .await
    .expect("overlap query")
}

fn lost_race(status: &tonic::Status) -> bool {
    (status.code() == Code::FailedPrecondition && reason(status) == "SLOT_TAKEN")
        || status.code() == Code::Aborted
}

#[tokio::test]
async fn fifty_students_racing_for_five_slots_of_one_coach_get_exactly_one_call_per_slot() {
    let app = TestApp::spawn().await;
    let first = day_at(3, 10, 0);
    // Five back-to-back slots (10:00, 10:15, …), ten students racing for each.
    let attempts = (0..50).map(|i| {
        let start = first + Duration::minutes(15 * (i % 5));
        let student = format!("stu-{i}");
        let app = &app;
        async move { (start, app.book_free(&student, "coach-1", start).await) }
    });
    let results = join_all(attempts).await;

    let mut won = Vec::new();
    for (start, result) in &results {
        match result {
            Ok(_) => won.push(*start),
            Err(status) => assert!(lost_race(status), "unexpected error {status:?}"),
        }
    }
    won.sort();
    let expected: Vec<_> = (0..5).map(|i| first + Duration::minutes(15 * i)).collect();
    assert_eq!(
        won, expected,
        "exactly one booking per slot, back-to-back slots all accepted"
    );
    assert_eq!(overlaps(&app).await, 0);
    // The losers were told which call they clash with.
    let told = results
        .iter()
        .filter_map(|(start, r)| r.as_ref().err().map(|s| (start, s)))
        .filter(|(_, s)| s.code() == Code::FailedPrecondition)
        .all(|(start, s)| {
            s.get_error_details_metadata("clashing_start").as_deref()
                == Some(
                    start
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        .as_str(),
                )
        });
    assert!(told, "SLOT_TAKEN names the clashing call's start");
}

#[tokio::test]
async fn overlapping_requests_at_staggered_starts_never_leave_an_overlap() {
    let app = TestApp::spawn().await;
    let first = day_at(4, 9, 0);
    let attempts = (0..50).map(|i| {
        let start = first + Duration::minutes(5 * (i % 10));
        let student = format!("stu-{i}");
        let app = &app;
        async move { app.book_free(&student, "coach-2", start).await }
    });
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok >= 1);
    for result in &results {
        if let Err(status) = result {
            assert!(lost_race(status), "unexpected error {status:?}");
        }
    }
    assert_eq!(overlaps(&app).await, 0);
}

#[tokio::test]
async fn one_student_racing_with_fifty_coaches_for_one_slot_gets_one_call() {
    let app = TestApp::spawn().await;
    let start = day_at(5, 14, 0);
    let attempts = (0..50).map(|i| {
        let coach = format!("coach-{i}");
        let app = &app;
        async move { app.book_free("stu-solo", &coach, start).await }
    });
    let results = join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for result in &results {
        if let Err(status) = result {
            assert!(lost_race(status), "unexpected error {status:?}");
        }
    }
    assert_eq!(overlaps(&app).await, 0);
}

#[tokio::test]
async fn the_same_request_id_sent_twenty_times_at_once_books_one_call() {
    let app = TestApp::spawn().await;
    let start = day_at(6, 11, 0);
    let request = pb::ScheduleFreeConsultationRequest {
        request_id: "book-once-3f1c".to_owned(),
        ..free_request("stu-retry", "coach-retry", start)
    };
    let attempts = (0..20).map(|_| {
        let mut client = app.student("stu-retry");
        let request = request.clone();
        async move { client.schedule_free_consultation(request).await }
    });
    let results = join_all(attempts).await;
    let ids: HashSet<String> = results
        .iter()
        .map(|r| {
            let call = r
                .as_ref()
                .expect("every retry answers OK")
                .get_ref()
                .call
                .as_ref()
                .expect("call");
            card(call).call_id.clone()
        })
        .collect();
    assert_eq!(ids.len(), 1, "all 20 answers name the same call");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM calls")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(events, 1, "one CallScheduled, nothing twice");
}

/// A booking does not look its request id up before it runs (one round
/// trip less): a retry must still get the first answer, whatever stops it
/// — the pair's free consultation, the slot its first attempt took, or,
/// once that call was cancelled and its slot is free again, the request
/// id's own row — and must never book a second call.
#[tokio::test]
async fn a_booking_retried_later_gets_its_first_answer_even_after_the_call_was_cancelled() {
    let app = TestApp::spawn().await;
    app.add_contract(
        "k-retry",
        "stu-late",
        "coach-late",
        pb::ContractStatus::Paid,
        30,
        Some(5),
    )
    .await;
    let free = pb::ScheduleFreeConsultationRequest {
        request_id: "free-later-1".to_owned(),
        ..free_request("stu-late", "coach-late", day_at(6, 9, 0))
    };
    let paid = pb::SchedulePaidSessionRequest {
        request_id: "paid-later-1".to_owned(),
        student_id: "stu-late".to_owned(),
        coach_id: "coach-late".to_owned(),
        contract_id: "k-retry".to_owned(),
        start: Some(utc(day_at(6, 11, 0))),
        note: String::new(),
    };
    let mut client = app.student("stu-late");
    let first_free = client
        .schedule_free_consultation(free.clone())
        .await
        .expect("free consultation")
        .into_inner()
        .call
        .expect("call");
    let first_paid = client
        .schedule_paid_session(paid.clone())
        .await
        .expect("paid session")
        .into_inner()
        .call
        .expect("call");
    for round in ["while booked", "after the cancellations"] {
        let again_free = client
            .schedule_free_consultation(free.clone())
            .await
            .unwrap_or_else(|e| panic!("free retry {round}: {e:?}"))
            .into_inner()
            .call
            .expect("call");
        let again_paid = client
            .schedule_paid_session(paid.clone())
            .await
            .unwrap_or_else(|e| panic!("paid retry {round}: {e:?}"))
            .into_inner()
            .call
            .expect("call");
        assert_eq!(
            again_free, first_free,
            "free retry {round}: the first answer"
        );
        assert_eq!(
            again_paid, first_paid,
            "paid retry {round}: the first answer"
        );
        if round == "while booked" {
            for call in [&first_free, &first_paid] {
                client
                    .cancel_call(pb::CancelCallRequest {
                        request_id: String::new(),
                        call_id: card(call).call_id.clone(),
                        reason: String::new(),
                    })
                    .await
                    .expect("cancelled");
            }
        }
    }
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM calls")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(calls, 2, "no retry booked a call");
    let used: i32 =
        sqlx::query_scalar("SELECT sessions_used FROM contracts WHERE contract_id = 'k-retry'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(
        used, 0,
        "the cancelled session was given back, and no retry took one"
    );
}

#[tokio::test]
async fn a_request_id_reused_for_another_request_is_rejected() {
    let app = TestApp::spawn().await;
    let mut client = app.student("stu-reuse");
    let first = pb::ScheduleFreeConsultationRequest {
        request_id: "r-1".to_owned(),
        ..free_request("stu-reuse", "coach-a", day_at(6, 9, 0))
    };
    client
        .schedule_free_consultation(first.clone())
        .await
        .expect("first booking");
    let other = pb::ScheduleFreeConsultationRequest {
        request_id: "r-1".to_owned(),
        ..free_request("stu-reuse", "coach-b", day_at(6, 9, 0))
    };
    let result = client.schedule_free_consultation(other).await;
    assert_code(&result, Code::InvalidArgument);
    assert_eq!(fields(&result.unwrap_err()), vec!["request_id"]);
}

trait MetadataOf {
    fn get_error_details_metadata(&self, key: &str) -> Option<String>;
}

impl MetadataOf for tonic::Status {
    fn get_error_details_metadata(&self, key: &str) -> Option<String> {
        use tonic_types::StatusExt;
        self.get_error_details()
            .error_info()?
            .metadata
            .get(key)
            .cloned()
    }
}
