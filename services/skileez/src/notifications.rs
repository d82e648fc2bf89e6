//! `skileez notifications deadletters|retry`: the e-mails the notification
//! service gave up on (refused for good, or out of attempts), and putting
//! them back in its queue. Calls `DeliveryService` with an admin or service
//! token.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand};
use skileez_proto::notifications as pb;
use tonic::{
    Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};

use crate::{OutputFormat, output};

#[derive(Args)]
pub struct NotificationsArgs {
    /// The notifications service.
    #[arg(
        long,
        env = "SKILEEZ_NOTIFICATIONS_SERVER",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    server: String,
    /// A bearer token of role admin or service (see `skileez token`).
    #[arg(long, env = "SKILEEZ_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// text (readable) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
    #[command(subcommand)]
    command: NotificationsCommand,
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// Lists dead letters, newest first.
    Deadletters {
        /// Only this call's.
        #[arg(long)]
        call: Option<String>,
        /// Only this recipient's (a user id).
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// From a previous page's end.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Queues dead letters again (same message, fresh attempts): the ones
    /// named by id, or --all.
    #[command(group(ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Retry {
        /// Delivery ids, as `deadletters` prints them.
        ids: Vec<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

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

type Deliveries =
    pb::delivery_service_client::DeliveryServiceClient<InterceptedService<Channel, Bearer>>;

async fn client(args: &NotificationsArgs) -> anyhow::Result<Deliveries> {
    let channel = Channel::from_shared(args.server.clone())
        .context("--server must be a URL such as http://127.0.0.1:50052")?
        .connect()
        .await
        .with_context(|| format!("cannot reach the notifications service at {}", args.server))?;
    let bearer = match &args.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .context("the token is not valid ASCII")?,
        ),
        None => None,
    };
    Ok(
        pb::delivery_service_client::DeliveryServiceClient::with_interceptor(
            channel,
            Bearer(bearer),
        ),
    )
}

pub async fn run(args: NotificationsArgs) -> anyhow::Result<()> {
    let mut deliveries = client(&args).await?;
    let out = output::Printer::new(args.output, None)?;
    match args.command {
        NotificationsCommand::Deadletters {
            call,
            recipient,
            page_size,
            page_token,
        } => {
            let response = output::ok(
                deliveries
                    .list_deliveries(pb::ListDeliveriesRequest {
                        states: vec![pb::DeliveryState::Dead as i32],
                        call_id: call.unwrap_or_default(),
                        recipient_id: recipient.unwrap_or_default(),
                        channel: pb::Channel::Unspecified as i32,
                        page_size,
                        page_token,
                    })
                    .await,
            )?;
            match args.output {
                OutputFormat::Json => {
                    out.json(&response, "skileez.notifications.v1.ListDeliveriesResponse")?
                }
                OutputFormat::Text => print_dead_letters(&response),
            }
        }
        NotificationsCommand::Retry { ids, all: _ } => {
            // clap's group makes it ids or --all; none means every one.
            let response = output::ok(
                deliveries
                    .retry_dead_letters(pb::RetryDeadLettersRequest { delivery_ids: ids })
                    .await,
            )?;
            match args.output {
                OutputFormat::Json => out.json(
                    &response,
                    "skileez.notifications.v1.RetryDeadLettersResponse",
                )?,
                OutputFormat::Text => println!(
                    "{} dead letter{} queued again",
                    response.retried,
                    if response.retried == 1 { "" } else { "s" }
                ),
            }
        }
    }
    Ok(())
}

fn print_dead_letters(response: &pb::ListDeliveriesResponse) {
    if response.deliveries.is_empty() {
        println!("no dead letters");
    }
    for d in &response.deliveries {
        let kind = pb::NotificationKind::try_from(d.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("NOTIFICATION_KIND_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| d.kind.to_string());
        let when = d
            .updated_at
            .as_ref()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        println!(
            "#{:<6} {:<12} to {} <{}>  call {}  attempts {}  {}\n        {}",
            d.delivery_id,
            kind,
            d.recipient_id,
            d.address,
            d.call_id,
            d.attempts,
            when,
            if d.last_error.is_empty() {
                "(no error recorded)"
            } else {
                d.last_error.as_str()
            },
        );
    }
    if !response.next_page_token.is_empty() {
        println!("more: --page-token {}", response.next_page_token);
    }
}
