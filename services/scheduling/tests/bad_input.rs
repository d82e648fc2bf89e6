//! Bad input of every kind gets its documented status and a message that names
//! the field or the rule; nothing panics and nothing is booked.

mod support;

use chrono::{Duration, Utc};
use skileez_domain::ActorRole;
use skileez_proto::scheduling as pb;
use skileez_scheduling::auth::{Claims, TokenIssuer};
use support::*;
use tonic::{Code, Status};

/// What an answer must be: its code, and the field violation or ErrorInfo
/// reason it must carry.
enum Expect {
    Field(Code, &'static str),
    Reason(Code, &'static str),
    Code(Code),
}

#[track_caller]
fn check<T: std::fmt::Debug>(case: &str, result: Result<T, Status>, expect: Expect) {
    let status = match result {
        Ok(value) => panic!("{case}: expected an error, got {value:?}"),
        Err(status) => status,
    };
    assert!(!status.message().is_empty(), "{case}: empty message");
    match expect {
        Expect::Field(code, field) => {
            assert_eq!(status.code(), code, "{case}: {status:?}");
            assert!(
                fields(&status).iter().any(|f| f == field),
                "{case}: no violation for {field}: {status:?}"
            );
        }
        Expect::Reason(code, expected) => {
            assert_eq!(status.code(), code, "{case}: {status:?}");
            assert_eq!(reason(&status), expected, "{case}: {status:?}");
        }
        Expect::Code(code) => assert_eq!(status.code(), code, "{case}: {status:?}"),
    }
}

fn local_request(
    student: &str,
    coach: &str,
    start: pb::StartTime,
) -> pb::ScheduleFreeConsultationRequest {
    pb::ScheduleFreeConsultationRequest {
        start: Some(start),
        ..free_request(student, coach, Utc::now())
    }
}

#[tokio::test]
async fn bad_times_are_rejected_with_the_rule_they_break() {
    let app = TestApp::spawn().await;
    let mut stu = app.student("stu-1");
    let book = |start: pb::StartTime| local_request("stu-1", "coach-1", start);

    check(
        "unknown zone",
        stu.schedule_free_consultation(book(local("2026-12-20T10:00", "Mars/Olympus_Mons", None)))
            .await,
        Expect::Field(Code::InvalidArgument, "start.local.time_zone"),
    );
    check(
        "spring-forward gap",
        stu.schedule_free_consultation(book(local("2026-03-08T02:30", "America/New_York", None)))
            .await,
        Expect::Reason(Code::InvalidArgument, "NONEXISTENT_LOCAL_TIME"),
    );
    check(
        "fall-back fold without fold",
        stu.schedule_free_consultation(book(local("2026-11-01T01:30", "America/New_York", None)))
            .await,
        Expect::Reason(Code::InvalidArgument, "AMBIGUOUS_LOCAL_TIME"),
    );
    check(
        "malformed local time",
        stu.schedule_free_consultation(book(local("2026-12-20 10:00", "Europe/Berlin", None)))
            .await,
        Expect::Field(Code::InvalidArgument, "start.local.date_time"),
    );
    check(
        "no start",
        stu.schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
            start: None,
            ..free_request("stu-1", "coach-1", Utc::now())
        })
        .await,
        Expect::Field(Code::InvalidArgument, "start"),
    );
    check(
        "past start",
        app.book_free("stu-1", "coach-1", day_at(-1, 10, 0)).await,
        Expect::Reason(Code::FailedPrecondition, "NOT_ENOUGH_NOTICE"),
    );
    let soon = (Utc::now() + Duration::minutes(5)).duration_round_minute();
    check(
        "inside minimum notice",
        app.book_free("stu-1", "coach-1", soon).await,
        Expect::Reason(Code::FailedPrecondition, "NOT_ENOUGH_NOTICE"),
    );
    check(
        "beyond horizon",
        app.book_free("stu-1", "coach-1", day_at(181, 10, 0)).await,
        Expect::Reason(Code::FailedPrecondition, "BEYOND_HORIZON"),
    );
    check(
        "seconds not zero",
        app.book_free("stu-1", "coach-1", day_at(3, 10, 0) + Duration::seconds(30))
            .await,
        Expect::Reason(Code::InvalidArgument, "START_NOT_WHOLE_MINUTE"),
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(count, 0, "no bad request booked anything");
}

#[tokio::test]
async fn an_ambiguous_local_time_resolves_to_the_fold_asked_for() {
    let app = TestApp::spawn().await;
    let mut stu = app.student("stu-1");
    let mut resolved = Vec::new();
    for fold in [pb::Fold::Earlier, pb::Fold::Later] {
        let answer = stu
            .check_availability(pb::CheckAvailabilityRequest {
                coach_id: "coach-1".into(),
                start: Some(local("2026-11-01T01:30", "America/New_York", Some(fold))),
                duration_minutes: 15,
                student_id: String::new(),
            })
            .await
            .expect("resolves")
            .into_inner();
        resolved.push(answer.start.expect("start").seconds);
    }
    let earlier = chrono::DateTime::parse_from_rfc3339("2026-11-01T05:30:00Z")
        .unwrap()
        .timestamp();
    let later = chrono::DateTime::parse_from_rfc3339("2026-11-01T06:30:00Z")
        .unwrap()
        .timestamp();
    assert_eq!(resolved, vec![earlier, later]);

    // And bookings in a fold still ahead (Sydney's clocks go back on
    // 2027-04-04 at 03:00) land on two different instants.
    let mut booked = Vec::new();
    for (student, fold) in [
        ("stu-syd-1", pb::Fold::Earlier),
        ("stu-syd-2", pb::Fold::Later),
    ] {
        let call = app
            .student(student)
            .schedule_free_consultation(local_request(
                student,
                "coach-syd",
                local("2027-04-04T02:30", "Australia/Sydney", Some(fold)),
            ))
            .await
            .expect("booked")
            .into_inner()
            .call
            .expect("call");
        assert_eq!(call.requested_time_zone, "Australia/Sydney");
        booked.push(card(&call).start.expect("start").seconds);
    }
    assert_eq!(
        booked[1] - booked[0],
        3600,
        "the later fold is an hour after the earlier"
    );
}

#[tokio::test]
async fn bad_ids_notes_and_reasons_name_their_field() {
    let app = TestApp::spawn().await;
    let mut stu = app.student("stu-1");
    check(
        "empty student id",
        stu.schedule_free_consultation(free_request("", "coach-1", day_at(3, 10, 0)))
            .await,
        Expect::Field(Code::InvalidArgument, "student_id"),
    );
    check(
        "oversized coach id",
        stu.schedule_free_consultation(free_request("stu-1", &"c".repeat(129), day_at(3, 10, 0)))
            .await,
        Expect::Field(Code::InvalidArgument, "coach_id"),
    );
    check(
        "oversized note",
        stu.schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
            note: "n".repeat(1001),
            ..free_request("stu-1", "coach-1", day_at(3, 10, 0))
        })
        .await,
        Expect::Field(Code::InvalidArgument, "note"),
    );
    check(
        "oversized request id",
        stu.schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
            request_id: "r".repeat(129),
            ..free_request("stu-1", "coach-1", day_at(3, 10, 0))
        })
        .await,
        Expect::Field(Code::InvalidArgument, "request_id"),
    );
    check(
        "empty call id",
        stu.get_call(pb::GetCallRequest {
            call_id: String::new(),
        })
        .await,
        Expect::Field(Code::InvalidArgument, "call_id"),
    );
    check(
        "malformed call id",
        stu.cancel_call(pb::CancelCallRequest {
            call_id: "42".into(),
            ..Default::default()
        })
        .await,
        Expect::Field(Code::InvalidArgument, "call_id"),
    );
    let call = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    check(
        "oversized reason",
        stu.cancel_call(pb::CancelCallRequest {
            call_id: card(&call).call_id.clone(),
            reason: "r".repeat(501),
            ..Default::default()
        })
        .await,
        Expect::Field(Code::InvalidArgument, "reason"),
    );
    check(
        "student booking for someone else",
        stu.schedule_free_consultation(free_request("stu-2", "coach-1", day_at(3, 12, 0)))
            .await,
        Expect::Code(Code::PermissionDenied),
    );
}

#[tokio::test]
async fn calls_that_are_not_yours_look_the_same_as_calls_that_do_not_exist() {
    let app = TestApp::spawn().await;
    let call = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    let id = card(&call).call_id.clone();
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut other = app.student("stu-2");

    let foreign = other
        .get_call(pb::GetCallRequest {
            call_id: id.clone(),
        })
        .await
        .unwrap_err();
    let missing = other
        .get_call(pb::GetCallRequest {
            call_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
    assert_eq!(missing.code(), Code::PermissionDenied);
    assert_eq!(
        foreign.message().replace(&id, "ID"),
        missing.message().replace(&unknown, "ID"),
        "the answers must not tell the two apart"
    );
    check(
        "another user's call, cancel",
        other
            .cancel_call(pb::CancelCallRequest {
                call_id: id.clone(),
                ..Default::default()
            })
            .await,
        Expect::Code(Code::PermissionDenied),
    );
    check(
        "another coach's call, history",
        app.coach("coach-2")
            .get_call_history(pb::GetCallHistoryRequest {
                call_id: id.clone(),
            })
            .await,
        Expect::Code(Code::PermissionDenied),
    );
    check(
        "unknown call, admin",
        app.admin()
            .get_call(pb::GetCallRequest { call_id: unknown })
            .await,
        Expect::Code(Code::NotFound),
    );
    app.admin()
        .get_call(pb::GetCallRequest { call_id: id })
        .await
        .expect("admins see every call");
}

#[tokio::test]
async fn booking_rules_answer_with_their_reason() {
    let app = TestApp::spawn().await;
    app.add_contract(
        "k-accepted",
        "stu-1",
        "coach-1",
        pb::ContractStatus::Accepted,
        60,
        Some(5),
    )
    .await;
    app.add_contract(
        "k-one",
        "stu-1",
        "coach-1",
        pb::ContractStatus::Paid,
        60,
        Some(1),
    )
    .await;
    app.add_contract(
        "k-other",
        "stu-9",
        "coach-1",
        pb::ContractStatus::Paid,
        60,
        Some(1),
    )
    .await;

    check(
        "contract accepted but not paid",
        app.book_paid("stu-1", "coach-1", "k-accepted", day_at(3, 10, 0))
            .await,
        Expect::Reason(Code::FailedPrecondition, "CONTRACT_NOT_PAID"),
    );
    check(
        "someone else's contract",
        app.book_paid("stu-1", "coach-1", "k-other", day_at(3, 10, 0))
            .await,
        Expect::Field(Code::InvalidArgument, "contract_id"),
    );
    check(
        "unknown contract",
        app.book_paid("stu-1", "coach-1", "k-nope", day_at(3, 10, 0))
            .await,
        Expect::Code(Code::NotFound),
    );
    app.book_paid("stu-1", "coach-1", "k-one", day_at(3, 10, 0))
        .await
        .expect("the one session");
    check(
        "no sessions left",
        app.book_paid("stu-1", "coach-1", "k-one", day_at(4, 10, 0))
            .await,
        Expect::Reason(Code::FailedPrecondition, "NO_SESSIONS_LEFT"),
    );

    app.book_free("stu-1", "coach-1", day_at(5, 10, 0))
        .await
        .expect("first free consultation");
    check(
        "second free consultation",
        app.book_free("stu-1", "coach-1", day_at(6, 10, 0)).await,
        Expect::Reason(Code::AlreadyExists, "FREE_CONSULTATION_EXISTS"),
    );

    let call = app
        .book_free("stu-2", "coach-1", day_at(7, 10, 0))
        .await
        .expect("booked");
    check(
        "join outside the window",
        app.student("stu-2")
            .join_call(pb::JoinCallRequest {
                call_id: card(&call).call_id.clone(),
                ..Default::default()
            })
            .await,
        Expect::Reason(Code::FailedPrecondition, "CALL_NOT_JOINABLE"),
    );
    check(
        "end a call that has not started",
        app.student("stu-2")
            .end_call(pb::EndCallRequest {
                call_id: card(&call).call_id.clone(),
                ..Default::default()
            })
            .await,
        Expect::Reason(Code::FailedPrecondition, "INVALID_TRANSITION"),
    );
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_and_wrong_roles_are_denied() {
    let app = TestApp::spawn().await;
    let now = Utc::now().timestamp() as u64;
    let claims = |aud: &str, exp: u64| Claims {
        sub: "stu-1".into(),
        role: "student".into(),
        iat: now,
        exp,
        iss: app.issuer.issuer().to_owned(),
        aud: aud.to_owned(),
    };
    let cases = [
        ("no token", None),
        ("malformed token", Some("not-a-jwt".to_owned())),
        (
            "expired token",
            Some(
                app.issuer
                    .mint_claims(&claims(app.issuer.audience(), now - 3600)),
            ),
        ),
        (
            "wrong audience",
            Some(
                app.issuer
                    .mint_claims(&claims("another-service", now + 3600)),
            ),
        ),
        (
            "wrong key",
            Some(
                TokenIssuer::new(
                    "a-different-secret-of-enough-length",
                    app.issuer.issuer(),
                    app.issuer.audience(),
                )
                .mint(
                    "stu-1",
                    ActorRole::Student,
                    std::time::Duration::from_secs(60),
                ),
            ),
        ),
    ];
    for (case, token) in cases {
        let result = app
            .scheduling_with(token)
            .list_calls(pb::ListCallsRequest::default())
            .await;
        check(case, result, Expect::Code(Code::Unauthenticated));
    }
    check(
        "a student calling a timer command",
        {
            let mut timers =
                pb::call_timer_service_client::CallTimerServiceClient::with_interceptor(
                    app.channel(),
                    support::Bearer::student(&app, "stu-1"),
                );
            timers
                .mark_call_ready(pb::TimerCommandRequest {
                    call_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
        },
        Expect::Code(Code::PermissionDenied),
    );
    check(
        "a coach upserting a participant",
        {
            let mut directory =
                pb::directory_service_client::DirectoryServiceClient::with_interceptor(
                    app.channel(),
                    support::Bearer::coach(&app, "coach-1"),
                );
            directory
                .upsert_participant(pb::UpsertParticipantRequest::default())
                .await
        },
        Expect::Code(Code::PermissionDenied),
    );
}

trait RoundMinute {
    fn duration_round_minute(self) -> Self;
}

impl RoundMinute for chrono::DateTime<Utc> {
    fn duration_round_minute(self) -> Self {
        use chrono::DurationRound;
        self.duration_trunc(Duration::minutes(1)).expect("truncate")
    }
}
