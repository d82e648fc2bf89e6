//! Client commands: `skileez call …` and `skileez directory …` against a
//! running scheduling service.

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use skileez_proto::scheduling as pb;
use tonic::{
    Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};

use crate::{OutputFormat, output};

#[derive(Args)]
pub struct Connection {
    /// The scheduling service.
    #[arg(
        long,
        env = "SKILEEZ_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// A bearer token (see `skileez token`).
    #[arg(long, env = "SKILEEZ_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// text (readable) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,
    /// Show times in this IANA zone (default UTC).
    #[arg(long, global = true)]
    pub tz: Option<String>,
}

#[derive(Args)]
pub struct CallArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: CallCommand,
}

#[derive(Args)]
pub struct When {
    /// The start as a UTC instant (RFC 3339), e.g. 2026-12-01T15:00:00Z.
    #[arg(long, conflicts_with = "local")]
    at: Option<String>,
    /// The start as a local date-time, e.g. 2026-12-01T16:00 (with --zone).
    #[arg(long)]
    local: Option<String>,
    /// The IANA zone of --local; default: your profile's zone.
    #[arg(long)]
    zone: Option<String>,
    /// Which of two instants an ambiguous local time means.
    #[arg(long, value_enum)]
    fold: Option<FoldArg>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FoldArg {
    Earlier,
    Later,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FilterArg {
    Upcoming,
    Past,
    All,
}

#[derive(Subcommand)]
enum CallCommand {
    /// Books a free consultation, or a paid session with --contract.
    Schedule {
        #[arg(long)]
        student: String,
        #[arg(long)]
        coach: String,
        #[arg(long)]
        contract: Option<String>,
        #[command(flatten)]
        when: When,
        #[arg(long, default_value = "")]
        note: String,
        /// A retry with the same id books nothing twice.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Shows a call.
    Get { call_id: String },
    /// Lists your calls (or a user's, for admins).
    List {
        #[arg(long, value_enum, default_value_t = FilterArg::Upcoming)]
        filter: FilterArg,
        #[arg(long, default_value = "")]
        user: String,
        #[arg(long, default_value_t = 20)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Cancels a call.
    Cancel {
        call_id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Moves a call to a new time.
    Reschedule {
        call_id: String,
        #[command(flatten)]
        when: When,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Joins a call (records attendance; the first join starts it).
    Join { call_id: String },
    /// Ends an active call.
    End { call_id: String },
    /// Every event of a call, in order.
    History { call_id: String },
    /// Follows your calls' changes live (Ctrl-C to stop).
    Watch {
        /// Resume after this position (printed with each change).
        #[arg(long, default_value = "")]
        after: String,
    },
}

#[derive(Args)]
pub struct DirectoryArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: DirectoryCommand,
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Adds or updates a participant.
    Participant {
        user_id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        zone: String,
        #[arg(long, default_value = "en")]
        locale: String,
        #[arg(long)]
        no_email: bool,
    },
    /// Adds or updates a contract.
    Contract {
        contract_id: String,
        #[arg(long)]
        student: String,
        #[arg(long)]
        coach: String,
        /// accepted, paid, cancelled or completed.
        #[arg(long, default_value = "paid")]
        status: String,
        #[arg(long, default_value_t = 60)]
        minutes: u32,
        /// Number of sessions; omit for unlimited.
        #[arg(long)]
        sessions: Option<u32>,
    },
}

pub type Authed = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub async fn channel(conn: &Connection) -> anyhow::Result<(Channel, Bearer)> {
    let channel = Channel::from_shared(conn.server.clone())
        .context("--server must be a URL such as http://127.0.0.1:50051")?
        .connect()
        .await
        .with_context(|| format!("cannot reach the scheduling service at {}", conn.server))?;
    let bearer = match &conn.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .context("the token is not valid ASCII")?,
        ),
        None => None,
    };
    Ok((channel, Bearer(bearer)))
}

fn start_time(when: &When) -> anyhow::Result<pb::StartTime> {
    let time = match (&when.at, &when.local) {
        (Some(at), None) => {
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .context("--at must be RFC 3339, e.g. 2026-12-01T15:00:00Z")?;
            pb::start_time::Time::Utc(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            })
        }
        (None, Some(local)) => pb::start_time::Time::Local(pb::LocalDateTime {
            date_time: local.clone(),
            time_zone: when.zone.clone().unwrap_or_default(),
            fold: when.fold.map(|f| match f {
                FoldArg::Earlier => pb::Fold::Earlier as i32,
                FoldArg::Later => pb::Fold::Later as i32,
            }),
        }),
        _ => anyhow::bail!("give the start with --at (UTC) or --local (with --zone)"),
    };
    Ok(pb::StartTime { time: Some(time) })
}

fn scheduling(
    channel: Channel,
    bearer: Bearer,
) -> pb::scheduling_service_client::SchedulingServiceClient<Authed> {
    pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(channel, bearer)
}

pub async fn call(args: CallArgs) -> anyhow::Result<()> {
    let conn = &args.conn;
    let (channel, bearer) = channel(conn).await?;
    let mut client = scheduling(channel, bearer);
    let out = output::Printer::new(conn.output, conn.tz.as_deref())?;
    match args.command {
        CallCommand::Schedule {
            student,
            coach,
            contract,
            when,
            note,
            request_id,
        } => {
            let start = Some(start_time(&when)?);
            let response = match contract {
                None => {
                    client
                        .schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
                            request_id,
                            student_id: student,
                            coach_id: coach,
                            start,
                            note,
                        })
                        .await
                }
                Some(contract_id) => {
                    client
                        .schedule_paid_session(pb::SchedulePaidSessionRequest {
                            request_id,
                            student_id: student,
                            coach_id: coach,
                            contract_id,
                            start,
                            note,
                        })
                        .await
                }
            };
            out.schedule(&output::ok(response)?)
        }
        CallCommand::Get { call_id } => out.call(&output::ok(
            client.get_call(pb::GetCallRequest { call_id }).await,
        )?),
        CallCommand::List {
            filter,
            user,
            page_size,
            page_token,
        } => {
            let filter = match filter {
                FilterArg::Upcoming => pb::CallFilter::Upcoming,
                FilterArg::Past => pb::CallFilter::Past,
                FilterArg::All => pb::CallFilter::All,
            };
            let response = client
                .list_calls(pb::ListCallsRequest {
                    user_id: user,
                    filter: filter as i32,
                    page_size,
                    page_token,
                })
                .await;
            out.list(&output::ok(response)?)
        }
        CallCommand::Cancel {
            call_id,
            reason,
            request_id,
        } => out.call_response(&output::ok(
            client
                .cancel_call(pb::CancelCallRequest {
                    request_id,
                    call_id,
                    reason,
                })
                .await,
        )?),
        CallCommand::Reschedule {
            call_id,
            when,
            reason,
            request_id,
        } => {
            let response = client
                .reschedule_call(pb::RescheduleCallRequest {
                    request_id,
                    call_id,
                    new_start: Some(start_time(&when)?),
                    reason,
                })
                .await;
            out.reschedule(&output::ok(response)?)
        }
        CallCommand::Join { call_id } => out.call_response(&output::ok(
            client
                .join_call(pb::JoinCallRequest {
                    request_id: String::new(),
                    call_id,
                })
                .await,
        )?),
        CallCommand::End { call_id } => out.call_response(&output::ok(
            client
                .end_call(pb::EndCallRequest {
                    request_id: String::new(),
                    call_id,
                })
                .await,
        )?),
        CallCommand::History { call_id } => out.history(&output::ok(
            client
                .get_call_history(pb::GetCallHistoryRequest { call_id })
                .await,
        )?),
        CallCommand::Watch { after } => {
            let mut stream = output::ok(client.watch_calls(pb::WatchCallsRequest { after }).await)?;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    change = stream.message() => match change.map_err(output::status_error)? {
                        Some(change) => out.change(&change)?,
                        None => return Ok(()),
                    },
                }
            }
        }
    }
}

pub async fn directory(args: DirectoryArgs) -> anyhow::Result<()> {
    let conn = &args.conn;
    let (channel, bearer) = channel(conn).await?;
    let mut client =
        pb::directory_service_client::DirectoryServiceClient::with_interceptor(channel, bearer);
    let out = output::Printer::new(conn.output, conn.tz.as_deref())?;
    match args.command {
        DirectoryCommand::Participant {
            user_id,
            name,
            email,
            zone,
            locale,
            no_email,
        } => {
            let response = client
                .upsert_participant(pb::UpsertParticipantRequest {
                    participant: Some(pb::Participant {
                        user_id,
                        display_name: name,
                        email,
                        time_zone: zone,
                        locale,
                        email_enabled: !no_email,
                    }),
                })
                .await;
            out.message(&output::ok(response)?, "skileez.scheduling.v1.Participant")
        }
        DirectoryCommand::Contract {
            contract_id,
            student,
            coach,
            status,
            minutes,
            sessions,
        } => {
            let status = match status.as_str() {
                "accepted" => pb::ContractStatus::Accepted,
                "paid" => pb::ContractStatus::Paid,
                "cancelled" => pb::ContractStatus::Cancelled,
                "completed" => pb::ContractStatus::Completed,
                _ => anyhow::bail!("--status must be accepted, paid, cancelled or completed"),
            };
            let response = client
                .upsert_contract(pb::UpsertContractRequest {
                    contract: Some(pb::Contract {
                        contract_id,
                        student_id: student,
                        coach_id: coach,
                        status: status as i32,
                        session_minutes: minutes,
                        sessions: Some(match sessions {
                            Some(n) => pb::contract::Sessions::SessionsTotal(n),
                            None => pb::contract::Sessions::Unlimited(true),
                        }),
                        sessions_used: 0,
                    }),
                })
                .await;
            out.message(&output::ok(response)?, "skileez.scheduling.v1.Contract")
        }
    }
}
