//! Timers → scheduling over mTLS: scheduling verifies client certificates
//! of its CA (`optional`, so people still call it with their token alone)
//! and honours a `service` token only with one. A timers instance with the
//! certificate fires; one without is refused and never applies anything.

mod support;

use std::time::Duration as StdDuration;

use skileez_testkit::pki::TestPki;
use skileez_timers::TimerKind;
use support::*;

fn path(p: &std::path::Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

async fn world_with_tls(pki: &TestPki) -> World {
    World::start_with(
        fast_policy(),
        &[
            ("SKILEEZ_TLS_CERT_FILE", path(&pki.server.cert_file)),
            ("SKILEEZ_TLS_KEY_FILE", path(&pki.server.key_file)),
            ("SKILEEZ_TLS_CLIENT_CA_FILE", path(&pki.ca_file)),
            ("SKILEEZ_TLS_CLIENT_AUTH", "optional".to_owned()),
        ],
        Some(&pki.ca_pem),
    )
    .await
}

#[tokio::test]
async fn timers_with_a_client_certificate_fire_over_mtls_and_without_one_are_refused() {
    let pki = TestPki::new();

    let mut world = world_with_tls(&pki).await;
    let url = format!("https://localhost:{}", world.scheduling_addr.port());
    let (ca, cert, key) = (
        path(&pki.ca_file),
        path(&pki.client.cert_file),
        path(&pki.client.key_file),
    );
    world
        .add_timers(
            "with-cert",
            &[
                ("SKILEEZ_SCHEDULING_URL", &url),
                ("SKILEEZ_SCHEDULING_TLS_CA_FILE", &ca),
                ("SKILEEZ_SCHEDULING_TLS_CERT_FILE", &cert),
                ("SKILEEZ_SCHEDULING_TLS_KEY_FILE", &key),
            ],
        )
        .await;
    let call = world.book("stu-1", "coach-1", seconds_ahead(4)).await;
    world
        .wait_for_event(call, "CallReady", StdDuration::from_secs(20))
        .await;
    world.stop_timers().await;

    // The same, with TLS but no client certificate: the ready timer's
    // command is refused as unauthenticated, and retried, never applied.
    let mut world = world_with_tls(&pki).await;
    let url = format!("https://localhost:{}", world.scheduling_addr.port());
    world
        .add_timers(
            "without-cert",
            &[
                ("SKILEEZ_SCHEDULING_URL", &url),
                ("SKILEEZ_SCHEDULING_TLS_CA_FILE", &ca),
            ],
        )
        .await;
    let call = world.book("stu-1", "coach-1", seconds_ahead(4)).await;
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(20);
    let error = loop {
        let timers = world.timers(call).await;
        if let Some(error) = timer(&timers, TimerKind::Ready).and_then(|t| t.last_error.clone()) {
            break error;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ready timer never tried: {timers:#?}"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    };
    assert!(
        error.contains("Unauthenticated") && error.contains("client certificate"),
        "{error}"
    );
    assert_eq!(world.count(call, "CallReady").await, 0);
    world.stop_timers().await;
}
