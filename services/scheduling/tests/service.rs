//! Standard services and whole-service behaviour: health, reflection, paging,
//! scheduling options and availability.

mod support;

use skileez_proto::scheduling as pb;
use support::*;
use tonic::Code;

#[tokio::test]
async fn health_reports_serving_while_postgres_answers() {
    let app = TestApp::spawn().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel());
    let mut status = 0;
    for _ in 0..50 {
        status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "skileez.scheduling.v1.SchedulingService".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(0);
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn reflection_lists_our_services_in_both_protocol_versions() {
    use tokio_stream::StreamExt;
    let app = TestApp::spawn().await;
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(app.channel());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1 reflection")
            .into_inner();
        let Some(Ok(answer)) = answers.next().await else {
            panic!("no answer")
        };
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "skileez.scheduling.v1.SchedulingService",
            "skileez.scheduling.v1.CallTimerService",
            "skileez.scheduling.v1.DirectoryService",
            "skileez.scheduling.v1.AvailabilityService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(app.channel());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1alpha reflection")
            .into_inner();
        let Some(Ok(answer)) = answers.next().await else {
            panic!("no answer")
        };
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a list")
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "skileez.scheduling.v1.SchedulingService")
        );
    }
}

/// The names on ListCalls' cards, read once and then held in memory: a page
/// shows each name as the directory has it when the page is read, whoever
/// changed it (an upsert here, another instance or the projection writing
/// the table).
#[tokio::test]
async fn list_calls_shows_every_change_of_a_name_at_once() {
    let app = TestApp::spawn().await;
    app.add_participant("coach-1", "Europe/Berlin").await;
    app.add_participant("stu-1", "Europe/Berlin").await;
    app.book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    app.book_free("stu-2", "coach-1", day_at(4, 10, 0))
        .await
        .expect("booked");
    // (coach's name, stu-1's, stu-2's) on the coach's page.
    let names = || {
        let mut coach = app.coach("coach-1");
        async move {
            let page = coach
                .list_calls(pb::ListCallsRequest::default())
                .await
                .expect("page")
                .into_inner();
            assert_eq!(page.calls.len(), 2);
            let (first, second) = (card(&page.calls[0]), card(&page.calls[1]));
            assert_eq!(
                first.coach.as_ref().unwrap().display_name,
                second.coach.as_ref().unwrap().display_name
            );
            [
                first.coach.as_ref().unwrap().display_name.clone(),
                first.student.as_ref().unwrap().display_name.clone(),
                second.student.as_ref().unwrap().display_name.clone(),
            ]
        }
    };
    assert_eq!(names().await, ["Name of coach-1", "Name of stu-1", ""]);
    assert_eq!(names().await, ["Name of coach-1", "Name of stu-1", ""]);

    // A participant the directory learns of shows at once (nobody is held
    // as unknown).
    app.add_participant("stu-2", "Europe/Berlin").await;
    assert_eq!(
        names().await,
        ["Name of coach-1", "Name of stu-1", "Name of stu-2"]
    );

    // Renamed through this service's directory API.
    app.directory()
        .upsert_participant(pb::UpsertParticipantRequest {
            participant: Some(pb::Participant {
                user_id: "coach-1".into(),
                display_name: "Coach One".into(),
                email: "coach-1@example.com".into(),
                time_zone: "Europe/Berlin".into(),
                locale: "en-US".into(),
                email_enabled: true,
            }),
        })
        .await
        .expect("renamed");
    assert_eq!(
        names().await,
        ["Coach One", "Name of stu-1", "Name of stu-2"]
    );

    // Renamed and removed in the table by someone else: another instance,
    // the projection of the platform's facts.
    let pool = app.db.pool();
    sqlx::query("UPDATE participants SET display_name = 'Student One' WHERE user_id = 'stu-1'")
        .execute(pool)
        .await
        .expect("renamed in the table");
    assert_eq!(names().await, ["Coach One", "Student One", "Name of stu-2"]);
    sqlx::query("DELETE FROM participants WHERE user_id = 'stu-2'")
        .execute(pool)
        .await
        .expect("removed");
    assert_eq!(names().await, ["Coach One", "Student One", ""]);

    // Proof that the counterparts' names come from memory, and that the
    // epoch alone says when they are stale: once every name of the page is
    // known (a page with an unknown person reads its names), a change that
    // does not count is not seen. (The listed user's own name is read with
    // the page.)
    app.add_participant("stu-2", "Europe/Berlin").await;
    assert_eq!(names().await, ["Coach One", "Student One", "Name of stu-2"]);
    sqlx::raw_sql(
        "ALTER TABLE participants DISABLE TRIGGER participants_renamed;
         UPDATE participants SET display_name = 'Unseen' WHERE user_id = 'stu-1';
         ALTER TABLE participants ENABLE TRIGGER participants_renamed;",
    )
    .execute(pool)
    .await
    .expect("renamed without counting");
    assert_eq!(names().await, ["Coach One", "Student One", "Name of stu-2"]);
}

#[tokio::test]
async fn list_calls_pages_through_upcoming_and_past_calls() {
    let app = TestApp::spawn().await;
    app.add_participant("coach-1", "Europe/Berlin").await;
    let mut booked = Vec::new();
    for i in 0..5 {
        let call = app
            .book_free(&format!("stu-{i}"), "coach-1", day_at(3 + i, 10, 0))
            .await
            .expect("booked");
        booked.push(card(&call).call_id.clone());
    }
    for i in [0, 4] {
        app.student(&format!("stu-{i}"))
            .cancel_call(pb::CancelCallRequest {
                call_id: booked[i].clone(),
                ..Default::default()
            })
            .await
            .expect("cancelled");
    }
    let mut coach = app.coach("coach-1");
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = coach
            .list_calls(pb::ListCallsRequest {
                filter: pb::CallFilter::Upcoming as i32,
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.calls.len() <= 2);
        seen.extend(page.calls.iter().map(|c| card(c).call_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        booked[1..4].to_vec(),
        "upcoming calls, soonest first, each once"
    );
    let names = coach
        .list_calls(pb::ListCallsRequest {
            filter: pb::CallFilter::Past as i32,
            ..Default::default()
        })
        .await
        .expect("past")
        .into_inner();
    assert_eq!(
        names
            .calls
            .iter()
            .map(|c| card(c).call_id.clone())
            .collect::<Vec<_>>(),
        vec![booked[4].clone(), booked[0].clone()],
        "past calls, latest first"
    );
    for call in &names.calls {
        assert_eq!(
            card(call).coach.as_ref().unwrap().display_name,
            "Name of coach-1",
            "every card of the page carries the names"
        );
    }
    // GetCall reads the names along with the call.
    let one = coach
        .get_call(pb::GetCallRequest {
            call_id: booked[1].clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let one = card(&one);
    assert_eq!(one.coach.as_ref().unwrap().display_name, "Name of coach-1");
    assert_eq!(
        one.student.as_ref().unwrap().display_name,
        "",
        "stu-1 is not in the directory: no name"
    );

    let other = coach
        .list_calls(pb::ListCallsRequest {
            user_id: "stu-1".into(),
            ..Default::default()
        })
        .await;
    assert_code(&other, Code::PermissionDenied);
    let bad = coach
        .list_calls(pb::ListCallsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(fields(&bad.unwrap_err()), vec!["page_token"]);
}

#[tokio::test]
async fn scheduling_options_show_the_free_consultation_and_paid_contracts_with_sessions_left() {
    let app = TestApp::spawn().await;
    app.add_contract(
        "k-paid",
        "stu-1",
        "coach-1",
        pb::ContractStatus::Paid,
        45,
        Some(2),
    )
    .await;
    app.add_contract(
        "k-unlimited",
        "stu-1",
        "coach-1",
        pb::ContractStatus::Paid,
        60,
        None,
    )
    .await;
    app.add_contract(
        "k-accepted",
        "stu-1",
        "coach-1",
        pb::ContractStatus::Accepted,
        60,
        Some(3),
    )
    .await;
    let options = |app: &TestApp| {
        let mut client = app.student("stu-1");
        async move {
            client
                .get_scheduling_options(pb::GetSchedulingOptionsRequest {
                    student_id: "stu-1".into(),
                    coach_id: "coach-1".into(),
                })
                .await
                .expect("options")
                .into_inner()
        }
    };
    let before = options(&app).await;
    assert!(before.free_consultation.as_ref().unwrap().available);
    let contracts: Vec<(String, Option<u32>)> = before
        .paid_sessions
        .iter()
        .map(|p| (p.contract_id.clone(), p.sessions_left))
        .collect();
    assert_eq!(
        contracts,
        [
            ("k-paid".to_owned(), Some(2)),
            ("k-unlimited".to_owned(), None)
        ]
    );

    let free = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    app.book_paid("stu-1", "coach-1", "k-paid", day_at(4, 10, 0))
        .await
        .expect("booked");
    app.book_paid("stu-1", "coach-1", "k-paid", day_at(5, 10, 0))
        .await
        .expect("booked");
    let after = options(&app).await;
    let option = after.free_consultation.unwrap();
    assert!(!option.available);
    assert_eq!(
        card(option.existing.as_ref().unwrap()).call_id,
        card(&free).call_id
    );
    assert_eq!(
        after
            .paid_sessions
            .iter()
            .map(|p| p.contract_id.as_str())
            .collect::<Vec<_>>(),
        ["k-unlimited"],
        "a contract with no sessions left is not offered"
    );
    let nosy = app
        .student("stu-2")
        .get_scheduling_options(pb::GetSchedulingOptionsRequest {
            student_id: "stu-1".into(),
            coach_id: "coach-1".into(),
        })
        .await;
    assert_code(&nosy, Code::PermissionDenied);
}

#[tokio::test]
async fn check_availability_names_the_clash_and_the_rules() {
    let app = TestApp::spawn().await;
    let booked = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    let mut other = app.student("stu-2");
    let check = |start| pb::CheckAvailabilityRequest {
        coach_id: "coach-1".into(),
        start: Some(utc(start)),
        duration_minutes: 30,
        student_id: String::new(),
    };
    let busy = other
        .check_availability(check(day_at(3, 9, 50)))
        .await
        .expect("answer")
        .into_inner();
    assert!(!busy.available);
    assert_eq!(busy.conflicts.len(), 1);
    assert_eq!(busy.conflicts[0].start, card(&booked).start);
    assert!(
        busy.conflicts[0].call_id.is_empty(),
        "someone else's call id is not revealed"
    );
    let free = other
        .check_availability(check(day_at(3, 10, 15)))
        .await
        .expect("answer")
        .into_inner();
    assert!(free.available, "back to back is free: {free:?}");
    let past = other
        .check_availability(check(day_at(-1, 10, 0)))
        .await
        .expect("answer")
        .into_inner();
    assert!(!past.available);
    assert_eq!(past.violations[0].reason, "NOT_ENOUGH_NOTICE");
}
