//! The admin HTTP port of every process (`SKILEEZ_METRICS_ADDR`):
//!
//! - `GET /metrics`: every metric of the process in Prometheus text format;
//! - `GET /livez`: 200 while the process serves at all (a stuck runtime
//!   does not answer, which is what a liveness probe is for);
//! - `GET /readyz`: 200 only while every dependency the process cannot
//!   serve without (PostgreSQL) answered its last check, else 503; the
//!   body lists every check, the informational ones too (NATS: while it is
//!   down bookings still succeed and events wait in the store, so taking
//!   the pods out of their Service would only turn a delay into errors).
//!
//! Readiness is a process-wide registry ([`set_ready`]) because `skileez
//! dev` runs three services in one process behind one port, exactly as the
//! metrics recorder is process-wide.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The variable naming the admin address.
pub const METRICS_ADDR_VAR: &str = "SKILEEZ_METRICS_ADDR";

/// Histogram buckets (seconds) for latencies: from 0.5 ms (an in-memory
/// RPC) to 30 s (a timer far behind, an SMTP server timing out).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "{METRICS_ADDR_VAR}={value:?} is not valid: expected a socket address such as 0.0.0.0:9090, or off"
    )]
    Invalid { value: String },
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
    #[error("cannot bind the admin address {addr} ({METRICS_ADDR_VAR}): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin server failed: {0}")]
    Serve(#[source] std::io::Error),
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the
/// same handle). Until it is installed, `metrics::counter!` and friends
/// record nothing.
pub fn recorder() -> Result<PrometheusHandle, AdminError> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(AdminError::Recorder)
}

/// One dependency's state at its last check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check {
    ready: bool,
    /// Whether readiness depends on it, or it is only reported.
    required: bool,
    detail: String,
}

fn registry() -> &'static Mutex<BTreeMap<String, Check>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<String, Check>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Records the state of a dependency readiness requires, such as
/// (`scheduling/postgres`, true). `detail` says why when it is not ready.
pub fn set_ready(check: &str, ready: bool, detail: impl Into<String>) {
    record(check, ready, true, detail.into());
}

/// Records the state of a dependency `/readyz` only reports.
pub fn set_informational(check: &str, ready: bool, detail: impl Into<String>) {
    record(check, ready, false, detail.into());
}

fn record(check: &str, ready: bool, required: bool, detail: String) {
    let check_state = Check {
        ready,
        required,
        detail,
    };
    let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    if registry.get(check) != Some(&check_state) {
        if ready {
            tracing::info!(check, "ready");
        } else {
            tracing::warn!(check, detail = %check_state.detail, "not ready");
        }
        registry.insert(check.to_owned(), check_state);
    }
}

/// Whether every required check is ready (and at least one exists: a
/// process that has not checked anything yet is not ready), with one line
/// per check.
pub fn readiness() -> (bool, String) {
    let registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut ready = registry.values().any(|check| check.required);
    let mut report = String::new();
    for (name, check) in registry.iter() {
        if check.required {
            ready &= check.ready;
        }
        let state = match (check.ready, check.required) {
            (true, _) => "ok",
            (false, true) => "FAIL",
            (false, false) => "down (not required)",
        };
        report.push_str(&format!("{name}: {state}"));
        if !check.ready && !check.detail.is_empty() {
            report.push_str(&format!(" ({})", check.detail));
        }
        report.push('\n');
    }
    if report.is_empty() {
        report.push_str("nothing checked yet\n");
    }
    (ready, report)
}

/// Binds the admin address; port 0 picks a free one.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Serves `/metrics`, `/livez` and `/readyz` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> Result<(), AdminError> {
    let handle = recorder()?;
    // Histograms keep their samples until upkeep folds them in; without it
    // an idle scrape interval grows memory.
    let upkeep = {
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => handle.run_upkeep(),
                }
            }
        })
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(handle);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(AdminError::Serve);
    upkeep.abort();
    result
}

async fn metrics(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

async fn ready() -> impl IntoResponse {
    let (ready, report) = readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_required_check_and_at_least_one() {
        // The registry is process-wide: this is the only test touching it.
        assert!(!readiness().0, "nothing checked yet is not ready");
        set_informational("a/nats", false, "connection refused");
        assert!(!readiness().0, "only informational checks is not ready");
        set_ready("a/postgres", true, "");
        let (ready, report) = readiness();
        assert!(ready, "an informational check does not count");
        assert_eq!(
            report,
            "a/nats: down (not required) (connection refused)\na/postgres: ok\n"
        );
        set_ready("b/postgres", false, "timed out");
        let (ready, report) = readiness();
        assert!(!ready);
        assert!(report.contains("b/postgres: FAIL (timed out)"), "{report}");
        set_ready("b/postgres", true, "");
        set_informational("a/nats", true, "");
        assert!(readiness().0);
    }
}
