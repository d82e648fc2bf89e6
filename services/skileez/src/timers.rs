//! `skileez timers list --call ID`: a call's durable timers, read from the
//! timer service's table.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sqlx::postgres::PgPoolOptions;

use crate::OutputFormat;

#[derive(Args)]
pub struct TimersArgs {
    /// The database the services use.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// text (readable) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
    #[command(subcommand)]
    command: TimersCommand,
}

#[derive(Subcommand)]
enum TimersCommand {
    /// The timers of one call, in due order.
    List {
        #[arg(long)]
        call: String,
    },
}

pub async fn run(args: TimersArgs) -> anyhow::Result<()> {
    let TimersCommand::List { call } = args.command;
    let call_id = uuid::Uuid::parse_str(&call).context("--call must be a call id (a UUID)")?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await
        .context("cannot reach PostgreSQL (DATABASE_URL)")?;
    let timers = skileez_timers::list_timers(&pool, call_id).await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&timers)?),
        OutputFormat::Text => {
            if timers.is_empty() {
                println!("no timers for call {call_id}");
            }
            for t in &timers {
                println!(
                    "{:<14} {:<8} due {}  attempts {}{}{}",
                    t.kind.as_str(),
                    t.state.as_str(),
                    t.due_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
                    t.attempts,
                    t.outcome
                        .as_deref()
                        .map(|o| format!("  {o}"))
                        .unwrap_or_default(),
                    t.last_error
                        .as_deref()
                        .map(|e| format!("  error: {e}"))
                        .unwrap_or_default(),
                );
            }
        }
    }
    Ok(())
}
