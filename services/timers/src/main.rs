//! `skileez-timers`: the timers service as its own process. Reads its
//! configuration from the environment (see `config.rs`), runs until SIGTERM
//! or Ctrl-C, then drains. `skileez-timers bench …` runs the benchmark
//! (see `bench.rs`) instead.

mod bench;

use anyhow::Context as _;
use clap::Parser as _;
use skileez_timers::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("bench") {
        let args = bench::BenchArgs::parse_from(std::env::args().skip(1));
        return bench::run(args).await;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = Config::from_env()?;
    let app = skileez_timers::Application::build(config)
        .await
        .context("starting the timers service")?;
    // Scripts and tests read this line.
    println!("timers instance {}", app.instance_id());
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run(shutdown).await?;
    Ok(())
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
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
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
