//! What every service process does around its service: stop on Ctrl-C or
//! SIGTERM, and serve the admin port from `SKILEEZ_METRICS_ADDR`.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminError, METRICS_ADDR_VAR};

/// The admin address when `SKILEEZ_METRICS_ADDR` is not set.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9090";

/// Reads `SKILEEZ_METRICS_ADDR` through `lookup`: a socket address (port 0
/// picks a free one), or `off`; unset means [`DEFAULT_METRICS_ADDR`].
pub fn metrics_addr(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<SocketAddr>, AdminError> {
    let value = lookup(METRICS_ADDR_VAR).unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_owned());
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| AdminError::Invalid {
        value: value.to_owned(),
    })
}

/// Binds the admin port (unless it is off) and serves it on a task until
/// `shutdown`; returns the bound address. A failing admin server stops the
/// process: probes that cannot reach it would restart it anyway.
pub async fn start_admin(shutdown: &CancellationToken) -> Result<Option<SocketAddr>, AdminError> {
    let Some(addr) = metrics_addr(|var| std::env::var(var).ok())? else {
        tracing::info!("admin port off ({METRICS_ADDR_VAR}=off): no /metrics, /livez, /readyz");
        return Ok(None);
    };
    admin::recorder()?;
    let (listener, local) = admin::bind(addr).await?;
    tracing::info!(addr = %local, "admin port: /metrics, /livez, /readyz");
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = admin::serve(listener, shutdown.clone()).await {
            tracing::error!(%error, "stopping the process");
            shutdown.cancel();
        }
    });
    Ok(Some(local))
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
        () = shutdown.cancelled() => return,
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_defaults_can_be_off_and_must_parse() {
        let addr = |value: Option<&str>| metrics_addr(|_| value.map(str::to_owned));
        assert_eq!(
            addr(None).unwrap(),
            Some(DEFAULT_METRICS_ADDR.parse().unwrap())
        );
        assert_eq!(addr(Some("off")).unwrap(), None);
        assert_eq!(
            addr(Some("0.0.0.0:9090")).unwrap(),
            Some("0.0.0.0:9090".parse().unwrap())
        );
        let error = addr(Some("localhost")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "SKILEEZ_METRICS_ADDR=\"localhost\" is not valid: expected a socket address such as 0.0.0.0:9090, or off"
        );
    }
}
