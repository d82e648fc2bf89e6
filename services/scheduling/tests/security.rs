//! The gRPC port's edge: TLS and mTLS from configuration, the per-user rate
//! limit on booking and change RPCs, and the message size limit.

mod support;

use std::time::Duration as StdDuration;

use skileez_domain::{ActorRole, Policy};
use skileez_proto::scheduling as pb;
use skileez_testkit::pki::{Pair, TestPki};
use support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};
use tonic_types::StatusExt;

fn path(p: &std::path::Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

fn tls_env(pki: &TestPki, client_auth: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SKILEEZ_TLS_CERT_FILE", path(&pki.server.cert_file)),
        ("SKILEEZ_TLS_KEY_FILE", path(&pki.server.key_file)),
        ("SKILEEZ_TLS_CLIENT_CA_FILE", path(&pki.ca_file)),
        ("SKILEEZ_TLS_CLIENT_AUTH", client_auth.to_owned()),
    ]
}

/// A TLS channel to the app that trusts the test CA, with `identity` as
/// its client certificate when given.
async fn tls_channel(
    app: &TestApp,
    pki: &TestPki,
    identity: Option<&Pair>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert_pem, &pair.key_pem));
    }
    Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .expect("url")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(StdDuration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// One authenticated read; Ok or the status code.
async fn list_calls(channel: Channel, token: &str) -> Result<(), Code> {
    pb::scheduling_service_client::SchedulingServiceClient::new(channel)
        .list_calls(authed(pb::ListCallsRequest::default(), token))
        .await
        .map(|_| ())
        .map_err(|status| status.code())
}

#[tokio::test]
async fn with_client_auth_required_only_clients_with_a_certificate_of_our_ca_are_served() {
    let pki = TestPki::new();
    let app = TestApp::spawn_with_env(Policy::default(), None, &tls_env(&pki, "required")).await;
    let student = app.token("ada", ActorRole::Student);

    let served = tls_channel(&app, &pki, Some(&pki.client))
        .await
        .expect("a client with our CA's certificate connects");
    assert_eq!(list_calls(served, &student).await, Ok(()));

    // No certificate, or one of another CA: the handshake fails, so no
    // request is ever answered.
    for (who, identity) in [
        ("no certificate", None),
        ("another CA's", Some(&pki.rogue_client)),
    ] {
        let refused = match tls_channel(&app, &pki, identity).await {
            Err(_) => true,
            // TLS 1.3 reports a refused client certificate only on the first
            // request.
            Ok(channel) => list_calls(channel, &student).await.is_err(),
        };
        assert!(refused, "a client with {who} was served");
    }

    // Plaintext to a TLS port is not gRPC it understands.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", app.addr.port()))
        .expect("url")
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(
            list_calls(plain, &student).await.is_err(),
            "plaintext was served"
        );
    }
}

#[tokio::test]
async fn with_client_auth_optional_a_service_token_needs_a_certificate_and_users_do_not() {
    let pki = TestPki::new();
    let app = TestApp::spawn_with_env(Policy::default(), None, &tls_env(&pki, "optional")).await;
    let student = app.token("ada", ActorRole::Student);
    let service = app.token("timers", ActorRole::Service);
    let without = tls_channel(&app, &pki, None)
        .await
        .expect("TLS without a certificate");
    let with = tls_channel(&app, &pki, Some(&pki.client))
        .await
        .expect("TLS with a certificate");

    assert_eq!(list_calls(without.clone(), &student).await, Ok(()));
    let fire = |channel: Channel, token: String| async move {
        pb::call_timer_service_client::CallTimerServiceClient::new(channel)
            .mark_call_ready(authed(
                pb::TimerCommandRequest {
                    call_id: uuid::Uuid::now_v7().to_string(),
                },
                &token,
            ))
            .await
    };
    let status = fire(without, service.clone()).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("client certificate"),
        "{status:?}"
    );
    // With the certificate the token is honoured: the call simply does not
    // exist.
    let status = fire(with, service).await.expect_err("unknown call");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_burst_above_the_rate_limit_gets_resource_exhausted_with_a_retry_delay_and_others_are_unaffected()
 {
    let app = TestApp::spawn_with_env(
        Policy::default(),
        None,
        &[
            ("SKILEEZ_RATE_LIMIT_PER_MINUTE", "60".to_owned()),
            ("SKILEEZ_RATE_LIMIT_BURST", "3".to_owned()),
        ],
    )
    .await;
    let cancel = |client: &mut Scheduling| {
        let mut client = client.clone();
        async move {
            client
                .cancel_call(pb::CancelCallRequest {
                    call_id: uuid::Uuid::now_v7().to_string(),
                    ..Default::default()
                })
                .await
        }
    };
    let mut ada = app.student("ada");
    // Within the burst: answered on the merits (the call is unknown).
    for _ in 0..3 {
        let status = cancel(&mut ada).await.expect_err("unknown call");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let status = cancel(&mut ada).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo with a delay");
    assert!(
        retry > StdDuration::ZERO && retry <= StdDuration::from_secs(1),
        "{retry:?}"
    );
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "RATE_LIMITED");

    // Reads are not limited; other people and staff are not affected.
    let mut ada_reads = app.student("ada");
    assert!(
        ada_reads
            .list_calls(pb::ListCallsRequest::default())
            .await
            .is_ok()
    );
    let mut grace = app.coach("grace");
    let status = cancel(&mut grace).await.expect_err("unknown call");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut admin = app.admin();
    for _ in 0..5 {
        let status = cancel(&mut admin).await.expect_err("unknown call");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    // The allowance comes back with time.
    tokio::time::sleep(retry + StdDuration::from_millis(50)).await;
    let status = cancel(&mut ada).await.expect_err("unknown call");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn a_request_above_the_message_size_limit_is_refused_before_any_handler() {
    let app = TestApp::spawn_with_env(
        Policy::default(),
        None,
        &[("SKILEEZ_GRPC_MAX_MESSAGE_BYTES", "2048".to_owned())],
    )
    .await;
    let mut ada = app.student("ada");
    let status = ada
        .cancel_call(pb::CancelCallRequest {
            call_id: uuid::Uuid::now_v7().to_string(),
            reason: "x".repeat(4096),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
}

#[tokio::test]
async fn a_deadline_that_passes_while_the_booking_waits_in_the_database_stops_it_there() {
    let app = TestApp::spawn().await;
    // Another transaction holds the coach's stream lock (as a change of her
    // hours would): the booking's append waits for it inside PostgreSQL.
    let mut holder = app.db.pool().begin().await.expect("a transaction");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('skileez.stream:' || $1, 0))")
        .bind("coach-grace")
        .execute(&mut *holder)
        .await
        .expect("the coach's lock");

    let mut ada = app.student("ada");
    let mut request = Request::new(free_request(
        "ada",
        "grace",
        chrono::DurationRound::duration_trunc(
            chrono::Utc::now() + chrono::Duration::days(2),
            chrono::Duration::minutes(1),
        )
        .expect("a whole minute"),
    ));
    request.set_timeout(StdDuration::from_millis(800));
    let started = std::time::Instant::now();
    let status = ada
        .schedule_free_consultation(request)
        .await
        .expect_err("the lock is never granted in time");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < StdDuration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Nothing of the booking still waits in the database once its deadline
    // has passed: the statement was cancelled there, not just abandoned.
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(app.db.pool())
        .await
        .expect("pg_stat_activity")
    };
    let deadline = std::time::Instant::now() + StdDuration::from_secs(2);
    while waiting().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the booking still waits on the lock after its deadline"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    holder.rollback().await.expect("rollback");
    // And nothing was booked.
    let calls = app
        .student("ada")
        .list_calls(pb::ListCallsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .calls;
    assert!(calls.is_empty(), "{calls:?}");
}
