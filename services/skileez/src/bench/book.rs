//! `skileez bench book`: bookings through gRPC against the same statements
//! driven straight at the same PostgreSQL, at several concurrencies.
//!
//! The service side is the scheduling service as deployed (in this process,
//! on a loopback port, relay publishing to a private nats-server, rate limit
//! and deadlines on): N clients each book a free consultation, wait for the
//! answer, book the next. Every booking is a different student (with their
//! own token and an AIP-155 request id, as the platform sends them) with one
//! of 500 coaches, on distinct slots, so none is refused.
//!
//! The raw side is the database's own limit for that work: N tasks running,
//! per booking, exactly the statements the service runs — the
//! free-consultation lookup, then in one transaction (begun with the
//! request's statement timeout) the stream locks, the event insert, the
//! coach's hours, calls and the display names in one statement, the call
//! row with the stored answer in one statement, COMMIT — issued by the same functions of the event store and the
//! repository, through a pool built as the service builds its own. What it leaves out is
//! what the service adds: gRPC and HTTP/2, the token check, validation, the
//! domain decision, protobuf, tracing, the relay's feed reads and publishes
//! and the NATS server's work. Both run on fresh scratch databases of the
//! same server; `ratio` is service rate / raw rate.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, DurationRound, Utc};
use skileez_domain::{
    ActorRole, CallId, CallKind, Command, Policy, RequestedStart, ScheduleCall, UserId, decide,
    evolve,
};
use skileez_eventstore::{EventStore, ExpectedVersion, NewEvent, StreamAppend};
use skileez_proto::scheduling as pb;
use skileez_scheduling::{
    Application, Config,
    app::{CALL_STREAM_TYPE, EVENT_SCHEMA_VERSION, call_stream, coach_window},
    auth::TokenIssuer,
    repo::{self, StoredAnswer},
};
use skileez_testkit::{TestDatabase, nats::TestNats};
use tokio_util::sync::CancellationToken;

use super::h2::Http2Connection;
use super::{median, percentile};
use crate::OutputFormat;

pub(super) const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const COACHES: usize = 500;
/// Not timed: connections opened, statements prepared, caches warm.
const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Rate {
    pub bookings: usize,
    pub errors: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Level {
    pub concurrency: usize,
    pub service: Rate,
    pub raw: Rate,
    /// service.per_second / raw.per_second
    pub ratio: f64,
}

pub async fn run(
    output: OutputFormat,
    concurrency: &[usize],
    seconds: u64,
    runs: usize,
    settings: &[(String, String)],
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(seconds);
    let mut medians = Vec::new();
    let mut all = Vec::new();
    for &n in concurrency {
        anyhow::ensure!(n > 0, "--concurrency must be at least 1");
        let mut samples = Vec::new();
        for run in 0..runs.max(1) {
            // Raw first, then the service: alternating within a level keeps
            // a drift of the machine from favouring one side.
            let raw = raw_once(n, duration, settings).await?;
            let service =
                book_through_grpc(TestDatabase::new().await, n, duration, settings).await?;
            let level = Level {
                concurrency: n,
                ratio: ratio(&service, &raw),
                service,
                raw,
            };
            if matches!(output, OutputFormat::Text) {
                println!(
                    "book c={n} run {}: service {:.0}/s p50 {:.2} p99 {:.2} max {:.2} ms ({} errors) | raw {:.0}/s p50 {:.2} p99 {:.2} ms | ratio {:.2}",
                    run + 1,
                    level.service.per_second,
                    level.service.p50_ms,
                    level.service.p99_ms,
                    level.service.max_ms,
                    level.service.errors,
                    level.raw.per_second,
                    level.raw.p50_ms,
                    level.raw.p99_ms,
                    level.ratio
                );
            }
            samples.push(level);
        }
        medians.push(median_level(&samples));
        all.extend(samples);
    }
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "scenario": "book",
                "seconds": seconds,
                "medians": medians,
                "runs": all,
                // One level asked for: its ratio; several: by concurrency.
                "ratio": match medians.as_slice() {
                    [one] => serde_json::json!(one.ratio),
                    levels => levels
                        .iter()
                        .map(|l| (l.concurrency.to_string(), serde_json::json!(l.ratio)))
                        .collect::<serde_json::Map<_, _>>()
                        .into(),
                },
                "date": Utc::now().to_rfc3339(),
            })
        ),
        OutputFormat::Text => {
            println!(
                "\nbookings, medians of {} runs of {seconds} s each",
                runs.max(1)
            );
            println!(
                "{:>5} {:>11} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6}",
                "conc",
                "service/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "raw/s",
                "p50 ms",
                "p99 ms",
                "ratio"
            );
            for l in &medians {
                println!(
                    "{:>5} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>9.0} {:>8.2} {:>8.2} {:>6.2}",
                    l.concurrency,
                    l.service.per_second,
                    l.service.p50_ms,
                    l.service.p99_ms,
                    l.service.max_ms,
                    l.raw.per_second,
                    l.raw.p50_ms,
                    l.raw.p99_ms,
                    l.ratio
                );
            }
        }
    }
    Ok(())
}

fn ratio(service: &Rate, raw: &Rate) -> f64 {
    if raw.per_second > 0.0 {
        service.per_second / raw.per_second
    } else {
        0.0
    }
}

fn median_level(samples: &[Level]) -> Level {
    let sides = |side: fn(&Level) -> &Rate| samples.iter().map(side).cloned().collect::<Vec<_>>();
    Level {
        concurrency: samples.first().map(|l| l.concurrency).unwrap_or_default(),
        service: median_rate(&sides(|l| &l.service)),
        raw: median_rate(&sides(|l| &l.raw)),
        ratio: median(&mut samples.iter().map(|l| l.ratio).collect::<Vec<_>>()),
    }
}

/// Per figure, the median over `samples` (bookings: the mean; errors: the sum).
pub(super) fn median_rate(samples: &[Rate]) -> Rate {
    let pick = |f: fn(&Rate) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    Rate {
        bookings: samples.iter().map(|r| r.bookings).sum::<usize>() / samples.len().max(1),
        errors: samples.iter().map(|r| r.errors).sum(),
        per_second: pick(|r| r.per_second),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        max_ms: pick(|r| r.max_ms),
    }
}

/// Booking `i`: its student, coach and start, on a slot of its own.
pub(super) struct Slot {
    pub student: String,
    pub coach: String,
    pub start: DateTime<Utc>,
}

/// The `m`-th booking of a coach goes in the second and third quarter hours
/// of its 3-hour block (`m / 4`): a seeded store's calls (see [`super::seed`])
/// take the first quarter of the same blocks, so on a seeded store each
/// booking is checked against a coach with a history, and never clashes.
pub(super) fn slot(base: DateTime<Utc>, i: usize) -> Slot {
    let m = (i / COACHES) as i64;
    Slot {
        student: format!("bench-stu-{i}"),
        coach: format!("bench-coach-{}", i % COACHES),
        start: base
            + chrono::Duration::hours(super::seed::SEED_SPACING_HOURS * (m / 4))
            + chrono::Duration::minutes(60 + 15 * (m % 4)),
    }
}

pub(super) fn first_slot() -> anyhow::Result<DateTime<Utc>> {
    Ok((Utc::now() + chrono::Duration::days(2)).duration_trunc(chrono::Duration::days(1))?)
}

/// Runs `book(i)` from `workers` tasks, each waiting for its answer before
/// the next, for `WARM_UP` (untimed) and then `duration`.
pub(super) async fn drive<F, Fut>(workers: usize, duration: Duration, book: F) -> Rate
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let measure_from = started + WARM_UP;
    let end = measure_from + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let next = next.clone();
            let book = book.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut first_error = None;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let result = book(i).await;
                    if began >= measure_from {
                        match result {
                            Ok(()) => latencies.push(began.elapsed().as_secs_f64() * 1000.0),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut l, e, first) = task.await.expect("a bench worker panicked");
        latencies.append(&mut l);
        errors += e;
        if let Some(error) = first {
            eprintln!("bench: a booking failed: {error:#}");
        }
    }
    latencies.sort_by(f64::total_cmp);
    Rate {
        bookings: latencies.len(),
        errors,
        per_second: latencies.len() as f64 / duration.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or_default(),
    }
}

/// The scheduling service as deployed, on a scratch database and a private
/// nats-server; returns its address, the issuer of its tokens and a guard.
pub(super) struct Service {
    pub addr: std::net::SocketAddr,
    pub issuer: Arc<TokenIssuer>,
    pub db: TestDatabase,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), skileez_scheduling::StartError>>,
    _nats: TestNats,
}

impl Service {
    pub async fn start(db: TestDatabase, extra: &[(String, String)]) -> anyhow::Result<Service> {
        let nats = TestNats::new().await;
        let mut vars: HashMap<String, String> = [
            ("SKILEEZ_JWT_SECRET", SECRET.to_owned()),
            ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url()),
            ("NATS_URL", nats.url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        vars.extend(extra.iter().cloned());
        let config = Config::from_lookup(|name| vars.get(name).cloned())?;
        let issuer = Arc::new(TokenIssuer::from_config(&config.jwt).context("an HS256 secret")?);
        let app = Application::build(config).await?;
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        Ok(Service {
            addr,
            issuer,
            db,
            shutdown,
            server,
            _nats: nats,
        })
    }

    pub async fn stop(self) -> anyhow::Result<TestDatabase> {
        self.shutdown.cancel();
        self.server.await??;
        Ok(self.db)
    }
}

/// The service's side of `book`, on `db` (empty, or a seeded store), with
/// `settings` on top of the defaults.
pub(super) async fn book_through_grpc(
    db: TestDatabase,
    workers: usize,
    duration: Duration,
    settings: &[(String, String)],
) -> anyhow::Result<Rate> {
    let service = Service::start(db, settings).await?;
    let rate = book_load(service.addr, service.issuer.clone(), workers, duration).await?;
    service.stop().await?;
    Ok(rate)
}

/// `workers` clients booking through the scheduling service at `addr` for
/// `duration` (after the warm-up).
pub(super) async fn book_load(
    addr: std::net::SocketAddr,
    issuer: Arc<TokenIssuer>,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<Rate> {
    let base = first_slot()?;
    let channels = Arc::new(Http2Connection::each(addr, workers).await?);
    let rate = drive(workers, duration, move |i| {
        let issuer = issuer.clone();
        let channel = channels[i % channels.len()].clone();
        async move {
            let slot = slot(base, i);
            let token = issuer.mint(&slot.student, ActorRole::Student, Duration::from_secs(600));
            let mut client = channel.scheduling();
            let mut request = tonic::Request::new(pb::ScheduleFreeConsultationRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                student_id: slot.student,
                coach_id: slot.coach,
                start: Some(pb::StartTime {
                    time: Some(pb::start_time::Time::Utc(prost_types::Timestamp {
                        seconds: slot.start.timestamp(),
                        nanos: 0,
                    })),
                }),
                note: String::new(),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            let call = client
                .schedule_free_consultation(request)
                .await?
                .into_inner()
                .call;
            anyhow::ensure!(call.is_some(), "the answer has no call");
            Ok(())
        }
    })
    .await;
    Ok(rate)
}

async fn raw_once(
    workers: usize,
    duration: Duration,
    settings: &[(String, String)],
) -> anyhow::Result<Rate> {
    let db = TestDatabase::new().await;
    // The service's configuration, for its pool size, policy and timeout.
    let defaults = Config::from_lookup(|name| match name {
        "SKILEEZ_JWT_SECRET" => Some(SECRET.to_owned()),
        _ => settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
    })?;
    // The service's pool: same size, same liveness checks.
    let pool = skileez_eventstore::pool_options(defaults.database_max_connections)
        .connect_with(db.connect_options())
        .await?;
    let store = EventStore::new(pool.clone());
    let policy = Arc::new(defaults.policy);
    let timeout = defaults.limits.request_timeout;
    let base = first_slot()?;
    let rate = drive(workers, duration, move |i| {
        let pool = pool.clone();
        let store = store.clone();
        let policy = policy.clone();
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            skileez_eventstore::deadline::with_deadline(
                Some(deadline),
                raw_booking(&pool, &store, &policy, slot(base, i)),
            )
            .await
        }
    })
    .await;
    drop(db);
    Ok(rate)
}

/// One booking's statements, in the service's order, with what the service
/// would bind.
async fn raw_booking(
    pool: &sqlx::PgPool,
    store: &EventStore,
    policy: &Policy,
    slot: Slot,
) -> anyhow::Result<()> {
    let principal = format!("student:{}", slot.student);
    let request_id = uuid::Uuid::new_v4().to_string();
    let student = UserId::parse(&slot.student)?;
    let coach = UserId::parse(&slot.coach)?;
    // Outside the transaction, as in the handler.
    anyhow::ensure!(
        repo::free_consultation(pool, &student, &coach)
            .await?
            .is_none()
    );

    let call_id = CallId::new();
    let command = Command::Schedule(ScheduleCall {
        call_id,
        kind: CallKind::FreeConsultation,
        student_id: student.clone(),
        coach_id: coach.clone(),
        contract: None,
        start: RequestedStart::utc(slot.start),
        by: skileez_domain::Actor {
            user_id: student.clone(),
            role: ActorRole::Student,
        },
        existing_free_consultation: None,
        note: None,
    });
    let now = Utc::now();
    let decided = decide(None, &command, now, policy)?;
    let call = decided
        .iter()
        .fold(None, |state, d| evolve(state, &d.event))
        .context("a booked call")?;
    let metadata = serde_json::json!({
        "actor": { "user_id": slot.student, "role": "student" },
        "request_id": request_id,
    });
    let events = decided
        .iter()
        .map(|d| {
            Ok(NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: d.event.event_type().to_owned(),
                schema_version: EVENT_SCHEMA_VERSION,
                payload: serde_json::to_value(&d.event)?,
                metadata: metadata.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut uow = store
        .append_locking(
            vec![StreamAppend {
                stream_id: call_stream(call_id),
                stream_type: CALL_STREAM_TYPE.to_owned(),
                expected: ExpectedVersion::NoStream,
                events,
            }],
            &[skileez_scheduling::availability::coach_stream(&coach)],
        )
        .await?;
    let (from, to) = coach_window(policy, call.start, call.end());
    repo::coach_context(
        uow.conn(),
        &coach,
        from,
        to,
        &[student.as_str(), coach.as_str()],
    )
    .await?;
    let answer = StoredAnswer {
        method: "ScheduleFreeConsultation".to_owned(),
        // The service stores the encoded request and answer: bytes of the
        // same order of size.
        request: vec![0; 120],
        response: vec![0; 400],
    };
    repo::upsert_call_storing_answer(
        uow.conn(),
        &call,
        policy.coach_buffer,
        &principal,
        &request_id,
        &answer,
    )
    .await?;
    uow.commit().await?;
    Ok(())
}
