//! NATS over TLS with client certificates, and user authentication: a bus
//! configured with the CA, its certificate and its user connects and
//! works; without the certificate, over plaintext, or with a wrong
//! password it does not.

use std::time::Duration;

use skileez_bus::{Bus, BusConfig, NatsAuth, NatsSecurity};
use skileez_testkit::nats::TestNats;
use skileez_testkit::pki::TestPki;

async fn tls_server(pki: &TestPki, dir: &tempfile::TempDir) -> TestNats {
    let config = dir.path().join("tls.conf");
    std::fs::write(
        &config,
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n\
             authorization {{\n  users = [ {{ user: svc, password: $SVC_PASSWORD }} ]\n}}\n",
            pki.server.cert_file, pki.server.key_file, pki.ca_file
        ),
    )
    .expect("write config");
    TestNats::with_config(&config, &[("SVC_PASSWORD", "s3cret-pw")]).await
}

fn config(nats: &TestNats, security: NatsSecurity) -> BusConfig {
    BusConfig {
        security,
        ..BusConfig::new(nats.url())
    }
}

async fn connect(config: &BusConfig) -> Result<Bus, String> {
    match tokio::time::timeout(Duration::from_secs(10), Bus::connect(config)).await {
        Ok(Ok(bus)) => Ok(bus),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

#[tokio::test]
async fn a_bus_with_the_ca_its_certificate_and_its_user_connects_and_nothing_less_does() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("dir");
    let nats = tls_server(&pki, &dir).await;
    let user = || NatsAuth::UserPassword {
        user: "svc".to_owned(),
        password: "s3cret-pw".to_owned().into(),
    };
    let full = NatsSecurity {
        auth: user(),
        tls_ca: Some(pki.ca_file.clone()),
        tls_client: Some((pki.client.cert_file.clone(), pki.client.key_file.clone())),
        tls_required: true,
    };
    let bus = connect(&config(&nats, full.clone()))
        .await
        .expect("connects over mTLS with its user");
    bus.ensure_topology().await.expect("and works");

    let without_cert = NatsSecurity {
        tls_client: None,
        ..full.clone()
    };
    assert!(connect(&config(&nats, without_cert)).await.is_err());
    let rogue_cert = NatsSecurity {
        tls_client: Some((
            pki.rogue_client.cert_file.clone(),
            pki.rogue_client.key_file.clone(),
        )),
        ..full.clone()
    };
    assert!(connect(&config(&nats, rogue_cert)).await.is_err());
    let wrong_password = NatsSecurity {
        auth: NatsAuth::UserPassword {
            user: "svc".to_owned(),
            password: "guess".to_owned().into(),
        },
        ..full.clone()
    };
    let error = connect(&config(&nats, wrong_password)).await.unwrap_err();
    assert!(!error.contains("guess"), "the password shows in: {error}");
    assert!(
        connect(&config(&nats, NatsSecurity::default()))
            .await
            .is_err(),
        "plaintext and anonymous"
    );
}
