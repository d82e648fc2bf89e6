//! `skileez bench`: benchmarks against a real PostgreSQL and NATS, printing
//! their figures (readable, or JSON with `--output json`).
//!
//! Each run uses a scratch database (created from the migrated template on
//! the server named by `SKILEEZ_TEST_DATABASE_URL` or `DATABASE_URL`, dropped
//! afterwards) and a private nats-server, so it never touches real data.
//!
//! Scenarios:
//! - `e2e`: commit → consumer receipt latency. Call events are committed at
//!   a fixed rate; the relay (woken by `NOTIFY`, as for a commit on another
//!   instance) publishes them; a JetStream consumer records when each
//!   arrives. Measured from the commit's answer, and beside it from the
//!   start of the work that committed it. `--load bookings` (default):
//!   whole bookings through the scheduling command handler (read models,
//!   conflict checks and all); `--load appends`: the same `CallScheduled`
//!   events, decided by the domain and appended to the event store alone, so
//!   that the figure is the bus path's and not the booking path's (on two
//!   cores, bookings at 1,000/s leave little CPU to anything else).
//! - `book`: bookings through gRPC at several concurrencies beside the same
//!   statements run straight at the database (see [`book`]).
//! - `read`, `scale`: reads, and bookings, on a seeded store of 1,000,000
//!   calls (see [`read`], [`seed`]).
//! - `memory`: each service's RSS as a process, idle and under the `book`
//!   load (see [`memory`]).
//! - `findslots`: `FindSlots` latency through gRPC, one request at a time,
//!   for a coach with published hours (Europe/Berlin, 07:00–22:00 every day,
//!   buffers, a daily maximum) and 500 booked calls, over 30 days, shown to
//!   a viewer in America/New_York.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use chrono::{DurationRound, Utc};
use clap::{Args, Subcommand};
use futures::StreamExt;
use prost::Message;
use skileez_domain::{
    Actor, ActorRole, CallId, CallKind, Command, RequestedStart, ScheduleCall, UserId,
};
use skileez_proto::call as ev;
use skileez_scheduling::{
    Application, Config,
    app::Scheduler,
    auth::{Principal, TokenIssuer},
};
use skileez_testkit::stats::{median, percentile};
use skileez_testkit::{TestDatabase, nats::TestNats};
use tokio_util::sync::CancellationToken;

use crate::OutputFormat;

mod book;
mod h2;
mod memory;
mod read;
mod seed;

#[derive(Args)]
pub struct BenchArgs {
    /// text (readable) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Bookings through gRPC beside the same statements run straight at the
    /// database, at each concurrency: throughput, latency, and their ratio.
    Book {
        /// Concurrent clients; one level per value (e.g. `--concurrency 16`).
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
        concurrency: Vec<usize>,
        /// Seconds of timed load per side and run (after a 1 s warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Runs per level; the figures are the medians over them.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Service settings for this run, as `NAME=VALUE` (repeatable), e.g.
        /// `--set SKILEEZ_DATABASE_MAX_CONNECTIONS=32`; the raw side's pool
        /// follows that setting too.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Commit → consumer receipt latency at fixed event rates.
    E2e {
        /// Events per second; one run per rate.
        #[arg(long, value_delimiter = ',', default_values_t = [100u32, 1000])]
        rates: Vec<u32>,
        /// Seconds of load per rate.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Runs per rate; the figures are the medians over them.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// What commits the events: whole bookings, or bare event appends.
        #[arg(long, value_enum, default_value_t = Load::Bookings)]
        load: Load,
    },
    /// GetCall, ListCalls and CheckAvailability on a large seeded store.
    Read {
        /// Which RPCs, one after another.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [read::Rpc::GetCall, read::Rpc::ListCalls, read::Rpc::CheckAvailability])]
        rpcs: Vec<read::Rpc>,
        /// Seconds of untimed load of each RPC before its runs, so that they
        /// meet a service that has been up for a while: its names held in
        /// memory (ListCalls) and PostgreSQL's cache filled. 0 measures a
        /// service from its start.
        #[arg(long = "warm-up-seconds", default_value_t = 30)]
        warm_up: u64,
        #[command(flatten)]
        store: read::StoreLoad,
    },
    /// The booking rate on a large seeded store against an empty one.
    Scale {
        #[command(flatten)]
        store: read::StoreLoad,
    },
    /// Each service's resident memory as its own process, idle and under the book load.
    Memory {
        /// Seconds of idleness before the load (and of draining after it).
        #[arg(long, default_value_t = 5)]
        idle_seconds: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds of booking load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// FindSlots over a range for a coach with published hours and booked calls.
    Findslots {
        /// The coach's booked calls (15 minutes each, every 86 minutes).
        #[arg(long, default_value_t = 500)]
        calls: usize,
        /// Days the query spans.
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// Timed requests per run (after a warm-up of 20).
        #[arg(long, default_value_t = 500)]
        requests: usize,
        /// Runs; the figures are the medians over them.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
struct Latency {
    rate: u32,
    events: usize,
    achieved_rate: f64,
    /// From the booking's COMMIT (the command handler's answer) to receipt.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// From the start of the booking, so including its own transaction.
    booking_p50_ms: f64,
    booking_p99_ms: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::E2e {
            rates,
            seconds,
            runs,
            load,
        } => {
            let mut results = Vec::new();
            for rate in rates {
                let mut samples = Vec::new();
                for run in 0..runs.max(1) {
                    let result = e2e_once(rate, Duration::from_secs(seconds), load).await?;
                    if matches!(args.output, OutputFormat::Text) {
                        println!(
                            "e2e ({load:?}) rate {rate}/s run {}: {} events at {:.0}/s, from commit p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; from start p50 {:.2} ms, p99 {:.2} ms",
                            run + 1,
                            result.events,
                            result.achieved_rate,
                            result.p50_ms,
                            result.p99_ms,
                            result.max_ms,
                            result.booking_p50_ms,
                            result.booking_p99_ms,
                        );
                    }
                    samples.push(result);
                }
                results.push(median_of(&samples));
            }
            match args.output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({ "scenario": "e2e", "load": format!("{load:?}").to_lowercase(), "medians": results, "date": Utc::now().to_rfc3339() })
                ),
                OutputFormat::Text => {
                    println!("\ncommit → consumer receipt, load {load:?} (medians of the runs)");
                    println!(
                        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>16} {:>16}",
                        "rate/s",
                        "events",
                        "p50 ms",
                        "p99 ms",
                        "max ms",
                        "start p50 ms",
                        "start p99 ms"
                    );
                    for r in &results {
                        println!(
                            "{:>8} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>16.2} {:>16.2}",
                            r.rate,
                            r.events,
                            r.p50_ms,
                            r.p99_ms,
                            r.max_ms,
                            r.booking_p50_ms,
                            r.booking_p99_ms
                        );
                    }
                }
            }
            Ok(())
        }
        Scenario::Findslots {
            calls,
            days,
            requests,
            runs,
        } => findslots(args.output, calls, days, requests, runs).await,
        Scenario::Book {
            concurrency,
            seconds,
            runs,
            settings,
        } => book::run(args.output, &concurrency, seconds, runs, &settings).await,
        Scenario::Read {
            rpcs,
            warm_up,
            store,
        } => read::read(args.output, &rpcs, warm_up, &store).await,
        Scenario::Memory {
            idle_seconds,
            concurrency,
            seconds,
        } => memory::run(args.output, idle_seconds, concurrency, seconds).await,
        Scenario::Scale { store } => read::scale(args.output, &store).await,
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct SlotsLatency {
    calls: usize,
    days: i64,
    requests: usize,
    slots: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn findslots(
    output: OutputFormat,
    calls: usize,
    days: i64,
    requests: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for run in 0..runs.max(1) {
        let result = findslots_once(calls, days, requests).await?;
        if matches!(output, OutputFormat::Text) {
            println!(
                "findslots run {}: {} requests, {} slots each, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                run + 1,
                result.requests,
                result.slots,
                result.p50_ms,
                result.p99_ms,
                result.max_ms
            );
        }
        samples.push(result);
    }
    let pick = |f: fn(&SlotsLatency) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    let medians = SlotsLatency {
        p50_ms: pick(|s| s.p50_ms),
        p99_ms: pick(|s| s.p99_ms),
        max_ms: pick(|s| s.max_ms),
        ..samples[0].clone()
    };
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "scenario": "findslots",
                "runs": samples,
                "medians": medians,
                "date": Utc::now().to_rfc3339(),
            })
        ),
        OutputFormat::Text => println!(
            "\nFindSlots over {} days, {} booked calls (medians of {} runs): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            medians.days,
            medians.calls,
            samples.len(),
            medians.p50_ms,
            medians.p99_ms,
            medians.max_ms
        ),
    }
    Ok(())
}

async fn findslots_once(calls: usize, days: i64, requests: usize) -> anyhow::Result<SlotsLatency> {
    use skileez_proto::scheduling as pb;

    let db = TestDatabase::new().await;
    let vars: HashMap<&str, String> = HashMap::from([
        (
            "SKILEEZ_JWT_SECRET",
            "bench-secret-bench-secret-bench-secret".to_owned(),
        ),
        ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url()),
        ("SKILEEZ_RELAY", "false".to_owned()),
        ("SKILEEZ_INGEST", "false".to_owned()),
    ]);
    let config = Config::from_lookup(|name| vars.get(name).cloned())?;
    let policy = config.policy.clone();
    let issuer = TokenIssuer::from_config(&config.jwt).context("an HS256 secret")?;
    let app = Application::build_with_pool(config, db.pool().clone()).await?;
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));

    // The calls, booked before the hours are published (as calls booked
    // under earlier hours would be): one every 86 minutes, round the clock.
    let scheduler = Scheduler::new(db.pool().clone(), policy);
    let admin = Principal {
        user_id: UserId::parse("bench-admin")?,
        role: ActorRole::Admin,
    };
    let coach = UserId::parse("bench-coach")?;
    let from =
        (Utc::now() + chrono::Duration::days(1)).duration_trunc(chrono::Duration::days(1))?;
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..calls {
        let scheduler = scheduler.clone();
        let admin = admin.clone();
        let coach = coach.clone();
        pending.push(async move {
            let call_id = CallId::new();
            let command = Command::Schedule(ScheduleCall {
                call_id,
                kind: CallKind::FreeConsultation,
                student_id: UserId::parse(&format!("bench-stu-{i}"))?,
                coach_id: coach,
                contract: None,
                start: RequestedStart::utc(from + chrono::Duration::minutes(86 * i as i64)),
                by: admin.actor(),
                existing_free_consultation: None,
                note: None,
            });
            scheduler
                .execute(&admin, call_id, None, |_| Ok(command.clone()), |_| ())
                .await
                .map_err(|e| anyhow::anyhow!("booking {i}: {e}"))
        });
        while pending.len() >= 16 {
            if let Some(done) = pending.next().await {
                done?;
            }
        }
    }
    while let Some(done) = pending.next().await {
        done?;
    }

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!(
        "Bearer {}",
        issuer.mint(coach.as_str(), ActorRole::Coach, Duration::from_secs(3600))
    )
    .parse()?;
    let mut client = pb::availability_service_client::AvailabilityServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    client
        .set_coach_availability(pb::SetCoachAvailabilityRequest {
            request_id: String::new(),
            coach_id: coach.to_string(),
            availability: Some(pb::Availability {
                time_zone: "Europe/Berlin".to_owned(),
                weekly: (1..=7)
                    .map(|day| pb::WeeklyInterval {
                        weekday: day,
                        start: "07:00".to_owned(),
                        end: "22:00".to_owned(),
                    })
                    .collect(),
                overrides: Vec::new(),
                buffer_before_minutes: 5,
                buffer_after_minutes: 5,
                min_notice_minutes: None,
                daily_max: Some(30),
            }),
        })
        .await?;

    let request = pb::FindSlotsRequest {
        coach_id: coach.to_string(),
        from: Some(prost_types::Timestamp {
            seconds: from.timestamp(),
            nanos: 0,
        }),
        to: Some(prost_types::Timestamp {
            seconds: (from + chrono::Duration::days(days)).timestamp(),
            nanos: 0,
        }),
        duration_minutes: 30,
        viewer_time_zone: "America/New_York".to_owned(),
        step_minutes: 15,
    };
    let mut slots = 0;
    for _ in 0..20 {
        slots = client
            .find_slots(request.clone())
            .await?
            .into_inner()
            .slots
            .len();
    }
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let answer = client.find_slots(request.clone()).await?.into_inner();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(answer.slots.len() == slots, "the answer changed");
    }
    shutdown.cancel();
    server.await??;
    latencies.sort_by(f64::total_cmp);
    Ok(SlotsLatency {
        calls,
        days,
        requests,
        slots,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or_default(),
    })
}

/// The server settings a large store's figures depend on, printed with
/// them: whether the store's hot pages fit PostgreSQL's own buffers
/// (`shared_buffers`) or are copied in from the OS cache on every read
/// changes the read rates by about a tenth (BENCHMARKS.md).
#[derive(Debug, Clone, serde::Serialize)]
struct PostgresSettings {
    server_version: String,
    shared_buffers: String,
    /// Whether `shared_buffers` holds the `calls` table with its indexes,
    /// which every query RPC reads.
    calls_fit: bool,
}

impl PostgresSettings {
    /// Reads them, and warns on stderr when the store's `calls` do not fit.
    async fn of(pool: &sqlx::PgPool) -> anyhow::Result<Self> {
        let (server_version, shared_buffers, calls, calls_fit): (String, String, String, bool) =
            sqlx::query_as(
                "SELECT current_setting('server_version'), current_setting('shared_buffers'),
                        pg_size_pretty(pg_total_relation_size('calls')),
                        pg_total_relation_size('calls')
                          <= pg_size_bytes(current_setting('shared_buffers'))",
            )
            .fetch_one(pool)
            .await
            .context("reading PostgreSQL's settings")?;
        if !calls_fit {
            eprintln!(
                "bench: PostgreSQL's shared_buffers ({shared_buffers}) is smaller than the calls table with its indexes ({calls}): reads will copy pages in from the OS cache (SKILEEZ_PG_SHARED_BUFFERS=2GB bash deploy/local/deps.sh sizes it; BENCHMARKS.md)"
            );
        }
        Ok(Self {
            server_version,
            shared_buffers,
            calls_fit,
        })
    }
}

impl std::fmt::Display for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgreSQL {}, shared_buffers {}",
            self.server_version, self.shared_buffers
        )
    }
}

fn parse_setting(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, value)) if name.starts_with("SKILEEZ_") => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected SKILEEZ_NAME=VALUE, got {value:?}")),
    }
}

fn median_of(samples: &[Latency]) -> Latency {
    let pick = |f: fn(&Latency) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    Latency {
        rate: samples.first().map(|s| s.rate).unwrap_or_default(),
        events: samples.iter().map(|s| s.events).sum::<usize>() / samples.len().max(1),
        achieved_rate: pick(|s| s.achieved_rate),
        p50_ms: pick(|s| s.p50_ms),
        p99_ms: pick(|s| s.p99_ms),
        max_ms: pick(|s| s.max_ms),
        booking_p50_ms: pick(|s| s.booking_p50_ms),
        booking_p99_ms: pick(|s| s.booking_p99_ms),
    }
}

/// The events a booking appends, decided by the domain and committed to the
/// event store with nothing else in the transaction; wakes the relays as a
/// commit of the command handler does.
async fn append_only(
    scheduler: &Scheduler,
    call_id: CallId,
    command: &Command,
) -> anyhow::Result<()> {
    let decided = skileez_domain::decide(None, command, Utc::now(), scheduler.policy())?;
    let events = decided
        .into_iter()
        .map(|d| {
            Ok(skileez_eventstore::NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: d.event.event_type().to_owned(),
                schema_version: skileez_scheduling::app::EVENT_SCHEMA_VERSION,
                payload: serde_json::to_value(&d.event)?,
                metadata: serde_json::json!({ "actor": { "user_id": "bench-admin", "role": "admin" } }),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    scheduler
        .store()
        .append(vec![skileez_eventstore::StreamAppend {
            stream_id: skileez_scheduling::app::call_stream(call_id),
            stream_type: skileez_scheduling::app::CALL_STREAM_TYPE.to_owned(),
            expected: skileez_eventstore::ExpectedVersion::NoStream,
            events,
        }])
        .await?
        .commit()
        .await?;
    scheduler.committed().notify_waiters();
    Ok(())
}

/// What commits the events of the `e2e` scenario.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Load {
    Bookings,
    Appends,
}

async fn e2e_once(rate: u32, duration: Duration, load: Load) -> anyhow::Result<Latency> {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let vars: HashMap<&str, String> = HashMap::from([
        (
            "SKILEEZ_JWT_SECRET",
            "bench-secret-bench-secret-bench-secret".to_owned(),
        ),
        ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url()),
        ("NATS_URL", nats.url()),
        ("SKILEEZ_INGEST", "false".to_owned()),
        ("SKILEEZ_MIN_NOTICE", "1m".to_owned()),
    ]);
    let config = Config::from_lookup(|name| vars.get(name).cloned())?;
    let policy = config.policy.clone();
    let app = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));

    // The consumer: every CallScheduled as it arrives.
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let stream = loop {
        if let Ok(stream) = js.get_stream("CALL_EVENTS").await {
            break stream;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    // Per call: when its booking started and when its commit was answered.
    let committed: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let total = (u64::from(rate) * duration.as_secs()) as usize;
    let receiver = {
        let committed = committed.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total);
            let mut from_start = Vec::with_capacity(total);
            while latencies.len() < total {
                let Ok(Some(Ok(message))) =
                    tokio::time::timeout(Duration::from_secs(30), messages.next()).await
                else {
                    break;
                };
                let arrived = Instant::now();
                let Ok(event) = ev::CallEvent::decode(message.payload.as_ref()) else {
                    continue;
                };
                // The commit time may be recorded a hair after the event is
                // seen; wait for it rather than drop the sample.
                let (started, done) = loop {
                    if let Some(at) = committed.lock().expect("lock").remove(&event.call_id) {
                        break at;
                    }
                    tokio::task::yield_now().await;
                };
                latencies.push(arrived.saturating_duration_since(done).as_secs_f64() * 1000.0);
                from_start.push(arrived.saturating_duration_since(started).as_secs_f64() * 1000.0);
            }
            (latencies, from_start)
        })
    };

    // The load: bookings decided and committed by the command handler.
    let scheduler = Scheduler::new(db.pool().clone(), policy);
    // This handler stands for another instance: its commits wake the
    // service's relay by NOTIFY, as a second instance's would.
    let waker = tokio::spawn(skileez_scheduling::relay::wake_other_instances(
        db.pool().clone(),
        scheduler.committed(),
        scheduler.relay_leading(),
        shutdown.clone(),
    ));
    let principal = Principal {
        user_id: UserId::parse("bench-admin")?,
        role: ActorRole::Admin,
    };
    let base =
        (Utc::now() + chrono::Duration::days(2)).duration_trunc(chrono::Duration::days(1))?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let began = Instant::now();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    for i in 0..total {
        let due = began + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let scheduler = scheduler.clone();
        let principal = principal.clone();
        let committed = committed.clone();
        in_flight.push(tokio::spawn(async move {
            let call_id = CallId::new();
            let command = Command::Schedule(ScheduleCall {
                call_id,
                kind: CallKind::FreeConsultation,
                student_id: UserId::parse(&format!("bench-stu-{i}")).expect("id"),
                coach_id: UserId::parse(&format!("bench-coach-{}", i % 100)).expect("id"),
                contract: None,
                start: RequestedStart::utc(base + chrono::Duration::minutes(15 * (i / 100) as i64)),
                by: Actor {
                    user_id: principal.user_id.clone(),
                    role: ActorRole::Admin,
                },
                existing_free_consultation: None,
                note: None,
            });
            let started = Instant::now();
            let result = match load {
                Load::Bookings => scheduler
                    .execute(&principal, call_id, None, |_| Ok(command.clone()), |_| ())
                    .await
                    .map_err(anyhow::Error::from),
                Load::Appends => append_only(&scheduler, call_id, &command).await,
            };
            if result.is_ok() {
                committed
                    .lock()
                    .expect("lock")
                    .insert(call_id.to_string(), (started, Instant::now()));
            }
            result.map_err(|e| anyhow::anyhow!("booking {i}: {e}"))
        }));
        // Keep the number of open bookings bounded.
        while in_flight.len() > 64 {
            if let Some(done) = in_flight.next().await {
                done??;
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        done??;
    }
    let elapsed = began.elapsed();
    let (mut latencies, mut from_start) = receiver.await?;
    shutdown.cancel();
    server.await??;
    waker.await?;
    anyhow::ensure!(
        latencies.len() == total,
        "only {} of {total} events arrived",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    from_start.sort_by(f64::total_cmp);
    Ok(Latency {
        rate,
        events: total,
        achieved_rate: total as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or_default(),
        booking_p50_ms: percentile(&from_start, 0.50),
        booking_p99_ms: percentile(&from_start, 0.99),
    })
}
