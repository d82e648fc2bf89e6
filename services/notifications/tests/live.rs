//! The WebSocket `/v1/live`, with a protocol-level client (tokio-tungstenite):
//! the feed's items, in order, resumed after a position without repeats;
//! the token checked before any data; heartbeats, slow clients and the
//! connection limit. `browser.rs` runs the same story in Chromium.

mod support;

use std::time::Duration;

use serde_json::Value;
use skileez_domain::ActorRole;
use support::ws::{LiveClient, positions, types};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_socket_pushes_calls_and_notifications_in_order_and_resumes_after_a_position() {
    let env = TestEnv::start().await;
    let ws = env.instances[0].ws_addr.expect("the WebSocket is on");
    env.add_participant("stu-1", "Asha", "Asia/Kolkata", "en-GB")
        .await;
    env.add_participant("coach-1", "Bo", "America/Los_Angeles", "en-US")
        .await;

    // The student with the token in the handshake, the coach with it in
    // the first message: both before anything happened.
    let mut student =
        LiveClient::with_token(ws, &env.token("stu-1", ActorRole::Student), None).await;
    assert_eq!(student.protocol.as_deref(), Some("skileez.v1"));
    let welcome = student.welcome().await;
    assert_eq!(welcome["userId"], "stu-1");
    assert_eq!(welcome["after"], 0);
    assert_eq!(welcome["reset"], false);
    let mut coach = LiveClient::connect(ws, "", &[]).await;
    assert_eq!(coach.protocol, None);
    coach
        .send_text(&format!(
            r#"{{"token": "{}", "after": 0}}"#,
            env.token("coach-1", ActorRole::Coach)
        ))
        .await;
    assert_eq!(coach.welcome().await["userId"], "coach-1");

    let call = env.book_free("stu-1", "coach-1", day_at(3, 10, 0)).await;
    let id = call_id(&call);
    for client in [&mut student, &mut coach] {
        let items = client.items_until(WAIT, |items| items.len() == 2).await;
        assert_eq!(
            types(&items),
            ["call.new", "notification:NOTIFICATION_KIND_BOOKED"]
        );
        assert_eq!(positions(&items), [1, 2]);
        assert_eq!(items[0]["callId"], id.as_str());
        assert_eq!(items[0]["event"], "CallScheduled");
        assert_eq!(items[0]["card"]["callId"], id.as_str());
        assert_eq!(items[0]["card"]["status"], "CALL_STATUS_SCHEDULED");
        assert_eq!(items[1]["notification"]["callId"], id.as_str());
        assert_eq!(
            items[1]["notification"]["card"]["status"],
            "CALL_STATUS_SCHEDULED"
        );
    }
    coach.close().await;

    // The student goes away; the coach cancels meanwhile.
    student.close().await;
    env.cancel("coach-1", ActorRole::Coach, &id, "Something came up")
        .await;
    env.smtp.wait_for(4, WAIT).await;

    // Back with the last position seen: only what came after, once.
    let token = env.token("stu-1", ActorRole::Student);
    let mut student = LiveClient::with_token(ws, &token, Some(2)).await;
    assert_eq!(student.welcome().await["after"], 2);
    let items = student.items_until(WAIT, |items| items.len() == 2).await;
    assert_eq!(
        types(&items),
        ["call.changed", "notification:NOTIFICATION_KIND_CANCELLED"]
    );
    assert_eq!(positions(&items), [3, 4]);
    assert_eq!(items[0]["event"], "CallCancelled");
    assert_eq!(items[0]["card"]["status"], "CALL_STATUS_CANCELLED");
    student.assert_quiet(Duration::from_millis(500)).await;
    student.close().await;

    // From 0: the whole feed again, in order; from a position the feed
    // never reached (another database): a reset and the whole feed.
    for (after, reset) in [(0, false), (99, true)] {
        let mut student = LiveClient::with_token(ws, &token, Some(after)).await;
        let welcome = student.welcome().await;
        assert_eq!(
            (welcome["after"].as_i64(), welcome["reset"].as_bool()),
            (Some(0), Some(reset))
        );
        let items = student.items_until(WAIT, |items| items.len() == 4).await;
        assert_eq!(positions(&items), [1, 2, 3, 4]);
        student.close().await;
    }

    // The notifications API still lists notifications only, numbered on
    // their own.
    let listed = env
        .notifications("stu-1")
        .list_notifications(skileez_proto::notifications::ListNotificationsRequest::default())
        .await
        .expect("listed")
        .into_inner();
    let sequences: Vec<u64> = listed.notifications.iter().map(|n| n.sequence).collect();
    assert_eq!(sequences, [2, 1]);
}

#[tokio::test]
async fn a_bad_or_missing_token_gets_a_policy_close_and_no_data() {
    let env = TestEnv::start().await;
    let quick = env
        .start_instance_with(&[("SKILEEZ_WS_AUTH_TIMEOUT", "500ms")])
        .await;
    let ws = quick.ws_addr.expect("the WebSocket is on");

    // A token signed with another key, in the handshake.
    let forged = skileez_scheduling::auth::TokenIssuer::new(
        "another-secret-another-secret-another",
        "skileez",
        "skileez-scheduling",
    )
    .mint("stu-1", ActorRole::Student, Duration::from_secs(3600));
    let closed = LiveClient::with_token(ws, &forged, None)
        .await
        .closed_without_data()
        .await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    assert_eq!(
        closed.reason,
        "unauthenticated: the token's signature does not verify"
    );

    // Not a token at all, in the first message.
    let mut client = LiveClient::connect(ws, "", &[]).await;
    client
        .send_text(r#"{"token": "nonsense", "after": 0}"#)
        .await;
    let closed = client.closed_without_data().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1008, "unauthenticated: the token is malformed")
    );

    // A first message without a token.
    let mut client = LiveClient::connect(ws, "?after=0", &[]).await;
    client.send_text(r#"{"after": 0}"#).await;
    let closed = client.closed_without_data().await;
    assert_eq!(closed.code, 1008);
    assert!(closed.reason.starts_with("no token: "), "{closed:?}");

    // Nothing at all.
    let mut client = LiveClient::connect(ws, "", &[]).await;
    let closed = client.closed_without_data().await;
    assert_eq!(
        closed,
        support::ws::Closed {
            code: 1008,
            reason: "unauthenticated: no token within 500ms".into()
        }
    );

    // Protocols offered, but not ours: refused in the handshake.
    let request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{ws}/v1/live").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "chat, bearer.x".parse().unwrap());
        request
    };
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    quick.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_or_reading_is_dropped() {
    let env = TestEnv::start_with(Options::default(), 0).await;

    // Pings every 300 ms: a client that never reads never answers one.
    let pinging = env
        .start_instance_with(&[("SKILEEZ_WS_PING_INTERVAL", "300ms")])
        .await;
    let token = env.token("stu-1", ActorRole::Student);
    let mut silent = LiveClient::with_token(pinging.ws_addr.unwrap(), &token, None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(silent.welcome().await["type"], "welcome");
    let closed = silent.closed_without_data().await;
    assert_eq!(closed.code, 1001, "{closed:?}");
    assert_eq!(closed.reason, "no answer to ping within 300ms");
    // One that reads answers every ping and stays.
    let mut reading = LiveClient::with_token(pinging.ws_addr.unwrap(), &token, None).await;
    reading.welcome().await;
    reading.assert_quiet(Duration::from_secs(2)).await;
    reading.close().await;
    pinging.stop().await;

    // A client that stops reading while it has much to catch up on (more
    // than the kernel buffers between us hold: 4 MiB here): once a message
    // waits over the send timeout, it is dropped, and comes back with its
    // last position.
    const ITEMS: i64 = 600;
    let padding = "x".repeat(16 * 1024);
    sqlx::query(
        "INSERT INTO live_feed (user_id, position, kind, call_id, event_id, item)
         SELECT 'slow-1', n, 'call.changed', gen_random_uuid(), gen_random_uuid(),
                jsonb_build_object('type', 'call.changed', 'padding', $1::text)
         FROM generate_series(1, $2) AS n",
    )
    .bind(&padding)
    .bind(ITEMS)
    .execute(env.db.pool())
    .await
    .expect("feed rows");
    sqlx::query("INSERT INTO notification_users (user_id, last_sequence, last_position) VALUES ('slow-1', 0, $1)")
        .bind(ITEMS)
        .execute(env.db.pool())
        .await
        .expect("counter");
    let strict = env
        .start_instance_with(&[
            ("SKILEEZ_WS_SEND_TIMEOUT", "500ms"),
            ("SKILEEZ_WS_QUEUE", "8"),
        ])
        .await;
    let mut slow = LiveClient::with_small_buffer(
        strict.ws_addr.unwrap(),
        &env.token("slow-1", ActorRole::Student),
        0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0;
    let ended = loop {
        match slow.next(WAIT).await {
            Ok(item) if item["type"] == "welcome" => {}
            Ok(_) => received += 1,
            Err(closed) => break closed,
        }
    };
    assert!(
        received < ITEMS,
        "a stalled client got all {received} items"
    );
    // The close frame comes after what was in the buffers, if it got
    // through at all.
    assert!(
        ended.code == 1006 || (ended.code == 1013 && ended.reason.starts_with("too slow")),
        "{ended:?}"
    );

    // Back, reading this time: everything after its last position.
    let mut back = LiveClient::with_token(
        strict.ws_addr.unwrap(),
        &env.token("slow-1", ActorRole::Student),
        Some(received),
    )
    .await;
    back.welcome().await;
    let rest = back
        .items_until(WAIT, |items| items.len() as i64 == ITEMS - received)
        .await;
    let expected: Vec<i64> = (received + 1..=ITEMS).collect();
    assert_eq!(positions(&rest), expected);
    back.close().await;
    strict.stop().await;
}

#[tokio::test]
async fn sockets_beyond_the_limit_are_told_to_come_back_later() {
    let env = TestEnv::start_with(Options::default(), 0).await;
    let instance = env
        .start_instance_with(&[("SKILEEZ_WS_MAX_CONNECTIONS", "1")])
        .await;
    let ws = instance.ws_addr.unwrap();
    let token = env.token("stu-1", ActorRole::Student);
    let mut first = LiveClient::with_token(ws, &token, None).await;
    first.welcome().await;
    let closed = LiveClient::with_token(ws, &token, None)
        .await
        .closed_without_data()
        .await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1013, "too many connections; retry later")
    );
    first.close().await;
    // The place is free again once the first has gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = LiveClient::with_token(ws, &token, None).await;
        match again.next(WAIT).await {
            Ok(welcome) => {
                assert_eq!(welcome["type"], Value::from("welcome"));
                break;
            }
            Err(closed) if tokio::time::Instant::now() < deadline => {
                assert_eq!(closed.code, 1013);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(closed) => panic!("still refused: {closed:?}"),
        }
    }
    instance.stop().await;
}

#[tokio::test]
async fn a_socket_ends_when_its_token_expires() {
    let env = TestEnv::start().await;
    let ws = env.instances[0].ws_addr.expect("the WebSocket is on");
    let short = env
        .issuer
        .mint("stu-1", ActorRole::Student, Duration::from_secs(2));
    let mut client = LiveClient::with_token(ws, &short, None).await;
    client.welcome().await;
    let closed = client.closed_without_data().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (
            1008,
            "the token has expired: reconnect with a new one and your last position"
        )
    );
}
