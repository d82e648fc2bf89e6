//! `skileez-timers`: the timers service as its own process. Reads its
//! configuration from the environment (see `config.rs`), serves the admin
//! port (`SKILEEZ_METRICS_ADDR`), runs until SIGTERM or Ctrl-C, then drains.
//! `skileez-timers bench …` runs the benchmark (see `bench.rs`) instead.

mod bench;

use clap::Parser as _;
use skileez_telemetry::process;
use tokio_util::sync::CancellationToken;

/// As in `skileez` (see its main.rs): mimalloc rather than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("bench") {
        let args = bench::BenchArgs::parse_from(std::env::args().skip(1));
        return bench::run(args).await;
    }
    let telemetry = skileez_telemetry::init("skileez-timers")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(process::cancel_on_signal(shutdown.clone()));
    let result = skileez_timers::serve_from_env(shutdown).await;
    telemetry.shutdown().await;
    Ok(result?)
}
