//! The checks behind `/readyz` (and the gRPC health service): each service
//! watches the PostgreSQL pool (required) and its NATS connection
//! (reported) as `<service>/postgres` and `<service>/nats`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin::{set_informational, set_ready};

/// How long a check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Check often while failing, to report the recovery soon.
const EVERY_WHEN_OK: Duration = Duration::from_secs(5);
const EVERY_WHEN_FAILING: Duration = Duration::from_secs(1);

/// The gRPC health service of a server and the service names it reports:
/// serving only while PostgreSQL answers, since no request succeeds
/// without it.
pub struct GrpcHealth {
    pub reporter: HealthReporter,
    pub services: &'static [&'static str],
}

/// Checks PostgreSQL with `SELECT 1` until `shutdown`.
pub async fn watch_postgres(
    pool: PgPool,
    component: &'static str,
    grpc: Option<GrpcHealth>,
    shutdown: CancellationToken,
) {
    let check = format!("{component}/postgres");
    let mut last = None;
    loop {
        let answer =
            tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&pool)).await;
        let (ok, detail) = match answer {
            Ok(Ok(_)) => (true, String::new()),
            Ok(Err(error)) => (false, error.to_string()),
            Err(_) => (false, format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        set_ready(&check, ok, detail);
        if last != Some(ok) {
            if let Some(grpc) = &grpc {
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in grpc.services {
                    grpc.reporter.set_service_status(*name, status).await;
                }
            }
            last = Some(ok);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(if ok { EVERY_WHEN_OK } else { EVERY_WHEN_FAILING }) => {}
        }
    }
}

/// Reports `<component>/nats` down until the bus is connected; the service
/// calls [`watch_nats`] once it is. NATS is informational for `/readyz`:
/// every service keeps its API (and scheduling its bookings) while it is
/// down.
pub fn nats_pending(component: &'static str, detail: &str) {
    set_informational(&format!("{component}/nats"), false, detail);
}

/// Follows the NATS client's connection state until `shutdown`.
pub async fn watch_nats(
    client: async_nats::Client,
    component: &'static str,
    shutdown: CancellationToken,
) {
    let check = format!("{component}/nats");
    loop {
        let state = client.connection_state();
        let ok = state == async_nats::connection::State::Connected;
        set_informational(&check, ok, format!("{state:?}"));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY_WHEN_FAILING) => {}
        }
    }
}
