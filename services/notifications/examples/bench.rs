//! Benchmarks of the notifications service, against a real PostgreSQL and a
//! private NATS, with the service in-process:
//!
//! - **e-mail hand-off**: N rendered e-mails (booking confirmations with
//!   invites) queued, then timed until every one has been accepted by a local
//!   SMTP server — `aiosmtpd` (a real server that also parses each message
//!   and writes it to disk) or `sink` (a minimal in-process SMTP server that
//!   discards, to show the service's own ceiling);
//! - **event → in-app latency**: call events published to JetStream at a
//!   steady rate; for each in-app notification, the time from the publish
//!   to its arrival on the user's live subject (consumed, rendered, stored
//!   with its two e-mails in one transaction, committed, published).
//!
//! ```text
//! CARGO_TARGET_DIR=/root/.cache/skileez/target-release \
//!   cargo run --release -p skileez-notifications --example bench -- --runs 3
//! ```
//!
//! Needs what the tests need: PostgreSQL (`SKILEEZ_TEST_DATABASE_URL` or
//! `DATABASE_URL`), `nats-server` ≥ 2.10, and for `--smtp aiosmtpd` a
//! Python with aiosmtpd (see `tests/support/smtp.rs`). Prints medians.

#[path = "../tests/support/smtp.rs"]
mod smtp;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use clap::Parser;
use futures::StreamExt;
use prost::Message as _;
use skileez_notifications::{Application, Config};
use skileez_proto::{call as ev, notifications as pbn};
use skileez_testkit::stats::{median, percentile};
use skileez_testkit::{TestDatabase, nats::TestNats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Rounds of each benchmark; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// E-mails per hand-off round.
    #[arg(long, default_value_t = 2000)]
    emails: usize,
    /// The SMTP server for the hand-off: aiosmtpd, sink or both.
    #[arg(long, default_value = "both")]
    smtp: String,
    /// Call events per latency round.
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Events per second in the latency rounds.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// E-mails in flight per instance (SKILEEZ_DELIVERY_CONCURRENCY).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// SMTP connections (SKILEEZ_SMTP_POOL_SIZE).
    #[arg(long, default_value_t = 4)]
    pool: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    println!("# notifications bench: {args:?}");
    let servers: Vec<&str> = match args.smtp.as_str() {
        "both" => vec!["sink", "aiosmtpd"],
        one => vec![one],
    };
    for server in servers {
        let mut rates = Vec::new();
        for run in 1..=args.runs {
            let rate = handoff(&args, server).await?;
            println!("handoff[{server}] run {run}: {rate:.0} e-mails/s");
            rates.push(rate);
        }
        println!(
            "handoff[{server}]: median {:.0} e-mails/s over {} runs of {} (concurrency {}, pool {})",
            median(&mut rates),
            args.runs,
            args.emails,
            args.concurrency,
            args.pool
        );
    }
    let (mut p50s, mut p99s, mut maxes) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let mut latencies = latency(&args).await?;
        latencies.sort_by(f64::total_cmp);
        let p50 = percentile(&latencies, 0.50);
        let p99 = percentile(&latencies, 0.99);
        let max = percentile(&latencies, 1.0);
        println!(
            "latency run {run}: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({} notifications)",
            latencies.len()
        );
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(max);
    }
    println!(
        "event → in-app latency: median p50 {:.1} ms, median p99 {:.1} ms, median max {:.1} ms over {} runs of {} events at {}/s",
        median(&mut p50s),
        median(&mut p99s),
        median(&mut maxes),
        args.runs,
        args.events,
        args.rate
    );
    Ok(())
}

/// A scratch database and a private NATS, with the service in-process.
struct Env {
    db: TestDatabase,
    nats: TestNats,
    service: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Env {
    async fn new() -> Env {
        let (db, nats) = tokio::join!(TestDatabase::new(), TestNats::new());
        Env {
            db,
            nats,
            service: None,
        }
    }

    async fn start_service(&mut self, args: &Args, smtp_url: &str) -> anyhow::Result<()> {
        let vars: HashMap<&str, String> = HashMap::from([
            (
                "SKILEEZ_JWT_SECRET",
                "bench-secret-bench-secret-bench-secret".to_owned(),
            ),
            ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", self.db.url()),
            ("SKILEEZ_DATABASE_MAX_CONNECTIONS", "24".to_owned()),
            ("NATS_URL", self.nats.url()),
            ("SKILEEZ_SMTP_URL", smtp_url.to_owned()),
            (
                "SKILEEZ_MAIL_FROM",
                "Skileez <noreply@skileez.test>".to_owned(),
            ),
            ("SKILEEZ_DELIVERY_CONCURRENCY", args.concurrency.to_string()),
            ("SKILEEZ_SMTP_POOL_SIZE", args.pool.to_string()),
            ("SKILEEZ_DELIVERY_POLL", "100ms".to_owned()),
        ]);
        let config = Config::from_lookup(|name| vars.get(name).cloned())?;
        let app = Application::build(config).await?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = app.run(token).await {
                eprintln!("service failed: {error}");
            }
        });
        self.service = Some((shutdown, task));
        Ok(())
    }

    async fn stop_service(&mut self) {
        if let Some((shutdown, task)) = self.service.take() {
            shutdown.cancel();
            let _ = task.await;
        }
    }

    async fn add_people(&self, students: usize) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO participants (user_id, display_name, email, time_zone, locale)
             SELECT 'stu-' || n, 'Student ' || n, 'stu-' || n || '@example.com', 'Asia/Kolkata', 'en-IN'
             FROM generate_series(0, $1 - 1) AS n
             UNION ALL SELECT 'coach-1', 'Bo Lee', 'coach-1@example.com', 'America/Los_Angeles', 'en-US'",
        )
        .bind(i64::try_from(students)?)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

/// A booking of `stu-<n>` with `coach-1`, as the relay would publish it.
fn booking(n: usize) -> ev::CallEvent {
    let call_id = uuid::Uuid::now_v7().to_string();
    let start = Utc::now() + chrono::Duration::days(2) + chrono::Duration::minutes(n as i64 * 15);
    let ts = |at: chrono::DateTime<Utc>| prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    };
    let student = format!("stu-{n}");
    ev::CallEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        call_id: call_id.clone(),
        stream_version: 1,
        occurred_at: Some(ts(Utc::now())),
        actor: Some(ev::Actor {
            user_id: student.clone(),
            role: ev::ActorRole::Student as i32,
        }),
        card: Some(ev::CallCard {
            call_id: call_id.clone(),
            kind: ev::CallKind::FreeConsultation as i32,
            student: Some(ev::Person {
                user_id: student.clone(),
                display_name: String::new(),
            }),
            coach: Some(ev::Person {
                user_id: "coach-1".into(),
                display_name: String::new(),
            }),
            start: Some(ts(start)),
            duration_minutes: 15,
            end: Some(ts(start + chrono::Duration::minutes(15))),
            status: ev::CallStatus::Scheduled as i32,
            chain_id: call_id.clone(),
            version: 1,
            ..Default::default()
        }),
        event: Some(ev::call_event::Event::Scheduled(ev::CallScheduled {
            kind: ev::CallKind::FreeConsultation as i32,
            student_id: student,
            coach_id: "coach-1".into(),
            chain_id: call_id,
            duration_minutes: 15,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// One hand-off round: e-mails per second.
async fn handoff(args: &Args, server: &str) -> anyhow::Result<f64> {
    let (url, _aiosmtpd, sink) = match server {
        "aiosmtpd" => {
            let smtp = smtp::TestSmtp::start().await;
            (smtp.url(), Some(smtp), None)
        }
        "sink" => {
            let sink = Sink::start().await?;
            (sink.url(), None, Some(sink))
        }
        other => anyhow::bail!("unknown SMTP server {other:?}: aiosmtpd, sink or both"),
    };
    // Fill the queue with the service's own pipeline (the consumer renders
    // each booking into two pending e-mails) while its SMTP server is a
    // closed port, so nothing leaves yet…
    let mut env = Env::new().await;
    env.start_service(args, "smtp://127.0.0.1:9").await?;
    let bookings = args.emails.div_ceil(2);
    env.add_people(bookings).await?;
    let client = async_nats::connect(env.nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    wait_for_stream(&js).await?;
    let mut acks = Vec::with_capacity(bookings);
    for n in 0..bookings {
        let event = booking(n);
        let subject = format!("skileez.call.v1.CallScheduled.{}", event.call_id);
        acks.push(js.publish(subject, event.encode_to_vec().into()).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let queued = bookings * 2;
    wait_count(
        &env,
        "SELECT count(*) FROM notification_deliveries WHERE channel = 'email' AND state IN ('pending', 'sending')",
        queued,
        Duration::from_secs(300),
    )
    .await
    .context("queueing the e-mails")?;
    env.stop_service().await;
    // …then time a service on the real server draining the full queue.
    sqlx::query(
        "UPDATE notification_deliveries SET attempts = 0, next_attempt_at = now(), state = 'pending'
         WHERE channel = 'email'",
    )
    .execute(env.db.pool())
    .await?;
    let started = Instant::now();
    env.start_service(args, &url).await?;
    wait_count(
        &env,
        "SELECT count(*) FROM notification_deliveries WHERE channel = 'email' AND state = 'sent'",
        queued,
        Duration::from_secs(600),
    )
    .await
    .context("sending the e-mails")?;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(sink) = &sink {
        anyhow::ensure!(
            sink.count() >= queued as u64,
            "the sink got {}",
            sink.count()
        );
    }
    env.stop_service().await;
    Ok(queued as f64 / elapsed)
}

async fn wait_for_stream(js: &async_nats::jetstream::Context) -> anyhow::Result<()> {
    for _ in 0..200 {
        if js.get_stream("CALL_EVENTS").await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no CALL_EVENTS stream")
}

async fn wait_count(
    env: &Env,
    sql: &'static str,
    target: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(env.db.pool()).await?;
        if count as usize >= target {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{count} of {target} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One latency round: milliseconds from publish to the live notification.
async fn latency(args: &Args) -> anyhow::Result<Vec<f64>> {
    let sink = Sink::start().await?;
    let mut env = Env::new().await;
    env.start_service(args, &sink.url()).await?;
    env.add_people(args.events).await?;
    let client = async_nats::connect(env.nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    wait_for_stream(&js).await?;
    let mut live = client.subscribe("skileez.notify.v1.user.*").await?;
    client.flush().await?;
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let expected = args.events * 2;
    let publisher = {
        let sent = sent.clone();
        let js = js.clone();
        let events = args.events;
        let every = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for n in 0..events {
                tick.tick().await;
                let event = booking(n);
                let subject = format!("skileez.call.v1.CallScheduled.{}", event.call_id);
                sent.lock()
                    .unwrap()
                    .insert(event.call_id.clone(), Instant::now());
                match js.publish(subject, event.encode_to_vec().into()).await {
                    Ok(ack) => {
                        tokio::spawn(async move {
                            let _ = ack.await;
                        });
                    }
                    Err(error) => eprintln!("publish failed: {error}"),
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(expected);
    let deadline =
        Instant::now() + Duration::from_secs(args.events as u64 / args.rate.max(1) + 120);
    while latencies.len() < expected {
        let message = tokio::time::timeout_at(deadline.into(), live.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{} of {expected} notifications in time", latencies.len())
            })?
            .context("subscription ended")?;
        let now = Instant::now();
        let notification = pbn::Notification::decode(message.payload.as_ref())?;
        if let Some(at) = sent.lock().unwrap().get(&notification.call_id) {
            latencies.push(now.duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    publisher.await?;
    env.stop_service().await;
    drop(sink);
    Ok(latencies)
}

/// A minimal SMTP server that accepts everything and keeps nothing.
struct Sink {
    port: u16,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start() -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let count = Arc::new(AtomicU64::new(0));
        let counter = count.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, counter).await;
                });
            }
        });
        Ok(Sink { port, count, task })
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: tokio::net::TcpStream, count: Arc<AtomicU64>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250-8BITMIME\r\n250 PIPELINING\r\n",
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
                b"250 OK queued\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"500 what\r\n",
        };
        write.write_all(reply).await?;
    }
}
