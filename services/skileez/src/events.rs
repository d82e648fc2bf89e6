//! Operator commands over the CALL_EVENTS stream: `events tail` follows call
//! events live, `events replay` re-reads the stream from a sequence; both
//! decode the protobuf envelopes.

use anyhow::Context as _;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use clap::{Args, Subcommand};
use futures::StreamExt;
use prost::Message;
use skileez_bus::{Bus, BusConfig};
use skileez_proto::call as ev;

use crate::{OutputFormat, output};

#[derive(Args)]
pub struct EventsArgs {
    /// The NATS server.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    nats_url: String,
    /// text (readable) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
    /// Show times in this IANA zone (default UTC).
    #[arg(long, global = true)]
    tz: Option<String>,
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Prints call events as they are published (Ctrl-C to stop).
    Tail {
        /// Only this call's events.
        #[arg(long)]
        call: Option<String>,
        /// Only this event type, e.g. CallScheduled.
        #[arg(long = "type")]
        event_type: Option<String>,
    },
    /// Re-reads the stream from a sequence up to its current end.
    Replay {
        /// The first stream sequence to read.
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        call: Option<String>,
        #[arg(long = "type")]
        event_type: Option<String>,
    },
}

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let bus = Bus::connect(&BusConfig {
        url: args.nats_url.clone(),
        security: skileez_bus::NatsSecurity::from_env(&skileez_config::Env::process())?,
        ..BusConfig::default()
    })
    .await
    .with_context(|| format!("cannot reach NATS at {}", args.nats_url))?;
    let printer = output::Printer::new(args.output, args.tz.as_deref())?;
    let (call, event_type, deliver, stop_at_end) = match args.command {
        EventsCommand::Tail { call, event_type } => (call, event_type, DeliverPolicy::New, false),
        EventsCommand::Replay {
            from,
            call,
            event_type,
        } => (
            call,
            event_type,
            DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            true,
        ),
    };
    let filter = bus.call_subject(
        event_type.as_deref().unwrap_or("*"),
        call.as_deref().unwrap_or("*"),
    );
    let stream = bus
        .jetstream()
        .get_stream(&bus.names().call_stream)
        .await
        .context(
            "the CALL_EVENTS stream does not exist yet (is the scheduling service running?)",
        )?;
    if stop_at_end && stream.cached_info().state.messages == 0 {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    let mut messages = consumer.messages().await.context("reading the stream")?;
    loop {
        let message = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            message = messages.next() => message,
        };
        let Some(message) = message else {
            return Ok(());
        };
        let message = message.context("reading the stream")?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        match ev::CallEvent::decode(message.payload.as_ref()) {
            Ok(event) => printer.stream_event(sequence, &message.subject, &event)?,
            Err(error) => eprintln!("#{sequence} {}: does not decode: {error}", message.subject),
        }
        if stop_at_end && pending == 0 {
            return Ok(());
        }
    }
}
