//! The `skileez` command: `dev` runs the services in one process against
//! local PostgreSQL and NATS; `migrate` applies the schema; `token` mints a
//! development token; `call …`, `coach …` and `directory …` talk to a
//! running scheduling service, `notifications …` to the notification
//! service.

/// mimalloc rather than glibc's malloc: the services allocate many small,
/// short-lived buffers per request, spread over the runtime's threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod client;
mod coach;
mod events;
mod notifications;
mod output;
mod timers;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::ExposeSecret;
use skileez_scheduling::{
    auth::{TokenIssuer, parse_role},
    config::{self, Config, JwtKey},
};
use skileez_telemetry::process;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "skileez",
    version,
    about = "Skileez call scheduling: run the services, book and follow calls"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Runs every service in one process (applies migrations first).
    Dev,
    /// Runs one service as its own process, as a deployment does (no
    /// migrations: run `skileez migrate` first).
    Serve {
        #[arg(value_enum)]
        service: Service,
    },
    /// Applies the database migrations and exits.
    Migrate,
    /// Mints a development token (HS256, with SKILEEZ_JWT_SECRET[_FILE]).
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// student, coach, admin or service.
        #[arg(long)]
        role: String,
        /// How long the token is valid, e.g. 12h.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Book, change and follow calls.
    Call(client::CallArgs),
    /// Participants and contracts (admin or service token).
    Directory(client::DirectoryArgs),
    /// Coaches' published hours and their bookable slots.
    Coach(coach::CoachArgs),
    /// Call events on NATS JetStream: tail live, replay from a sequence.
    Events(events::EventsArgs),
    /// The timer service's durable timers.
    Timers(timers::TimersArgs),
    /// E-mails that could not be delivered: list and retry them (admin or service token).
    Notifications(notifications::NotificationsArgs),
    /// Benchmarks against a real PostgreSQL and NATS (scratch database, private NATS).
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Service {
    Scheduling,
    Timers,
    Notifications,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Dev => {
            let telemetry = skileez_telemetry::init("skileez")?;
            let result = dev().await;
            telemetry.shutdown().await;
            result
        }
        Commands::Serve { service } => {
            let name = match service {
                Service::Scheduling => "skileez-scheduling",
                Service::Timers => "skileez-timers",
                Service::Notifications => "skileez-notifications",
            };
            let telemetry = skileez_telemetry::init(name)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(process::cancel_on_signal(shutdown.clone()));
            let result = match service {
                Service::Scheduling => skileez_scheduling::serve_from_env(shutdown)
                    .await
                    .map_err(anyhow::Error::from),
                Service::Timers => skileez_timers::serve_from_env(shutdown)
                    .await
                    .map_err(anyhow::Error::from),
                Service::Notifications => skileez_notifications::serve_from_env(shutdown)
                    .await
                    .map_err(anyhow::Error::from),
            };
            telemetry.shutdown().await;
            result
        }
        Commands::Migrate => {
            let _telemetry = skileez_telemetry::init("skileez")?;
            // Only the database: a migration Job holds no other secret.
            let url = skileez_config::Env::process().database_url(config::DEFAULT_DATABASE_URL)?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url.expose_secret())
                .await
                .context("connecting to PostgreSQL (DATABASE_URL or DATABASE_URL_FILE)")?;
            skileez_eventstore::MIGRATOR
                .run(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Commands::Token { sub, role, ttl } => {
            let role =
                parse_role(&role).context("--role must be student, coach, admin or service")?;
            let key = config::jwt_key_from_lookup(|name| std::env::var(name).ok())?;
            let JwtKey::Secret(secret) = key else {
                anyhow::bail!(
                    "tokens can only be minted with an HS256 secret (SKILEEZ_JWT_SECRET or SKILEEZ_JWT_SECRET_FILE)"
                );
            };
            let env = |name: &str, default: &str| {
                std::env::var(name).unwrap_or_else(|_| default.to_owned())
            };
            let issuer = TokenIssuer::new(
                secret.expose_secret(),
                &env("SKILEEZ_JWT_ISSUER", config::DEFAULT_JWT_ISSUER),
                &env("SKILEEZ_JWT_AUDIENCE", config::DEFAULT_JWT_AUDIENCE),
            );
            println!("{}", issuer.mint(&sub, role, ttl));
            Ok(())
        }
        Commands::Call(args) => client::call(args).await,
        Commands::Directory(args) => client::directory(args).await,
        Commands::Coach(args) => coach::run(args).await,
        Commands::Events(args) => events::run(args).await,
        Commands::Timers(args) => timers::run(args).await,
        Commands::Notifications(args) => notifications::run(args).await,
        Commands::Bench(args) => bench::run(args).await,
    }
}

/// What `skileez dev` gives the notification service unless the
/// environment says otherwise: the WebSocket on (the service alone leaves
/// it off), and the local mail catcher of `deploy/local/run.sh`.
const NOTIFICATIONS_DEV_DEFAULTS: &[(&str, &str)] = &[
    ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:50052"),
    ("SKILEEZ_WS_ADDR", "127.0.0.1:50053"),
    ("SKILEEZ_SMTP_URL", "smtp://127.0.0.1:1025"),
    ("SKILEEZ_MAIL_FROM", "Skileez <calls@skileez.localhost>"),
];

/// Whether `var` (`SKILEEZ_TIMERS`, `SKILEEZ_NOTIFICATIONS`) leaves that
/// service on: anything but `false` does.
fn service_on(var: &str) -> bool {
    std::env::var(var).map_or(true, |v| v != "false")
}

/// `skileez dev`: migrations, then the services, until Ctrl-C or SIGTERM.
async fn dev() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let pool = skileez_scheduling::connect(&config).await?;
    skileez_eventstore::MIGRATOR
        .run(&pool)
        .await
        .context("applying migrations")?;
    tracing::info!("migrations applied");
    let shutdown = CancellationToken::new();
    // One admin port for the three services: the metrics recorder and the
    // readiness checks are the process's.
    let admin = process::start_admin(&shutdown).await?;
    let app = skileez_scheduling::Application::build_with_pool(config, pool.clone()).await?;
    // Scripts and tests read the bound addresses from these lines.
    println!("scheduling service on {}", app.local_addr());
    if let Some(admin) = admin {
        println!("admin on {admin}");
    }
    let timers = if service_on("SKILEEZ_TIMERS") {
        let mut timers_config = skileez_timers::Config::from_env()?;
        timers_config.scheduling_url = format!("http://{}", app.local_addr());
        Some(skileez_timers::Application::build_with_pool(
            timers_config,
            pool.clone(),
        )?)
    } else {
        None
    };
    let notifications = if service_on("SKILEEZ_NOTIFICATIONS") {
        let config = skileez_notifications::Config::from_lookup(|name| {
            std::env::var(name).ok().or_else(|| {
                NOTIFICATIONS_DEV_DEFAULTS
                    .iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        })?;
        let app = skileez_notifications::Application::build_with_pool(config, pool).await?;
        // Scripts and tests read the bound addresses from these lines.
        println!("notifications service on {}", app.local_addr());
        if let Some(ws) = app.ws_addr() {
            println!("live WebSocket on {}", skileez_notifications::ws::url(ws));
        }
        Some(app)
    } else {
        None
    };
    tokio::spawn(process::cancel_on_signal(shutdown.clone()));
    // One failing stops the others: the process runs all or nothing.
    let until_done = |result: anyhow::Result<()>| {
        shutdown.cancel();
        result
    };
    let (scheduling, timers, notifications) = tokio::join!(
        async { until_done(app.run(shutdown.clone()).await.map_err(anyhow::Error::from)) },
        async {
            match timers {
                Some(timers) => until_done(
                    timers
                        .run(shutdown.clone())
                        .await
                        .map_err(anyhow::Error::from),
                ),
                None => Ok(()),
            }
        },
        async {
            match notifications {
                Some(notifications) => until_done(
                    notifications
                        .run(shutdown.clone())
                        .await
                        .map_err(anyhow::Error::from),
                ),
                None => Ok(()),
            }
        }
    );
    scheduling.context("the scheduling service")?;
    timers.context("the timer service")?;
    notifications.context("the notification service")?;
    Ok(())
}
