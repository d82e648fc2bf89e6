//! `skileez-notifications`: the notifications service as its own process.
//! Reads its configuration from the environment (see `config.rs`), serves
//! the admin port (`SKILEEZ_METRICS_ADDR`), runs until SIGTERM or Ctrl-C,
//! then drains and flushes its last spans.

use skileez_telemetry::process;
use tokio_util::sync::CancellationToken;

/// As in `skileez` (see its main.rs): mimalloc rather than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = skileez_telemetry::init("skileez-notifications")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(process::cancel_on_signal(shutdown.clone()));
    let result = skileez_notifications::serve_from_env(shutdown).await;
    telemetry.shutdown().await;
    Ok(result?)
}
