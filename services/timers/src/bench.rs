//! `skileez-timers bench`: the claim/fire machinery under load, against a
//! scratch database and a stub scheduling service.
//!
//! A scratch database (from the migrated template, on the server named by
//! `SKILEEZ_TEST_DATABASE_URL` or `DATABASE_URL`; dropped afterwards) is
//! seeded with `--pending` timers due a day from now (the backlog the claim
//! query must not suffer from). An in-process gRPC `CallTimerService` answers
//! every command OK at once and records when it arrived. Each run starts
//! this same binary as a separate timers process (consumer off) pointed at
//! the stub, writes the scenario's timers (with the `NOTIFY` the consumer
//! would send), waits until every one has arrived, reads the process's peak
//! RSS (`VmHWM`) and stops it with SIGTERM.
//!
//! The call id of each scenario timer carries its due moment (microseconds
//! in its first 64 bits), so the stub measures lateness = arrival − due with
//! no lookup. Scenarios:
//! - `steady`: `--rate` timers due per second, evenly spaced, for `--seconds`;
//! - `burst`: `--burst` timers due at the same instant.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use skileez_proto::scheduling as pb;
use skileez_testkit::TestDatabase;
use skileez_testkit::stats::{self, percentile};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(
    name = "skileez-timers bench",
    about = "Benchmarks the timer claim/fire loop"
)]
pub struct BenchArgs {
    /// Pending timers seeded a day ahead, beside the scenario's.
    #[arg(long, default_value_t = 1_000_000)]
    pending: u64,
    /// Timers due per second in the steady scenario.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Seconds of the steady scenario.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// Timers due at one instant in the burst scenario.
    #[arg(long, default_value_t = 10_000)]
    burst: u32,
    /// Runs per scenario; the figures are the medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// steady, burst or both.
    #[arg(long, default_value = "both")]
    scenario: String,
}

#[derive(Debug, Clone, Copy)]
struct RunResult {
    timers: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    fires_per_s: f64,
    /// From the due instant to the last arrival (the burst's figure).
    all_fired_s: f64,
    duplicates: usize,
    peak_rss_mib: f64,
}

/// Arrivals at the stub: lateness in microseconds, and the ids seen.
#[derive(Default)]
struct Arrivals {
    lateness_us: Vec<i64>,
    arrived_at: Vec<Instant>,
    seen: HashSet<Uuid>,
    duplicates: usize,
}

#[derive(Clone)]
struct Stub(Arc<Mutex<Arrivals>>);

impl Stub {
    fn record(&self, call_id: &str) -> Result<Response<pb::TimerCommandResponse>, Status> {
        let now = Utc::now();
        let id = Uuid::parse_str(call_id).map_err(|_| Status::invalid_argument("call_id"))?;
        let due_us = id.as_u64_pair().0 as i64;
        let mut arrivals = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if arrivals.seen.insert(id) {
            arrivals
                .lateness_us
                .push(now.timestamp_micros().saturating_sub(due_us));
            arrivals.arrived_at.push(Instant::now());
        } else {
            arrivals.duplicates += 1;
        }
        Ok(Response::new(pb::TimerCommandResponse {
            call: None,
            applied: true,
        }))
    }
}

#[tonic::async_trait]
impl pb::call_timer_service_server::CallTimerService for Stub {
    async fn mark_call_ready(
        &self,
        request: Request<pb::TimerCommandRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        self.record(&request.get_ref().call_id)
    }
    async fn mark_call_missed(
        &self,
        request: Request<pb::TimerCommandRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        self.record(&request.get_ref().call_id)
    }
    async fn trigger_reminder(
        &self,
        request: Request<pb::TriggerReminderRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        self.record(&request.get_ref().call_id)
    }
    async fn complete_overdue_call(
        &self,
        request: Request<pb::TimerCommandRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        self.record(&request.get_ref().call_id)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let db = TestDatabase::new().await;
    let pool = db.pool().clone();
    let seeding = Instant::now();
    seed_backlog(&pool, args.pending).await?;
    println!(
        "seeded {} pending timers due a day ahead in {:.1} s",
        args.pending,
        seeding.elapsed().as_secs_f64()
    );

    let stub = Stub(Arc::new(Mutex::new(Arrivals::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stub_addr = listener.local_addr()?;
    let server_stub = stub.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(pb::call_timer_service_server::CallTimerServiceServer::new(
                server_stub,
            ))
            .serve_with_incoming(tokio_stream_from(listener))
            .await;
    });

    let scenarios: Vec<&str> = match args.scenario.as_str() {
        "both" => vec!["steady", "burst"],
        "steady" => vec!["steady"],
        "burst" => vec!["burst"],
        other => bail!("--scenario must be steady, burst or both, not {other:?}"),
    };
    let mut table = Vec::new();
    for scenario in scenarios {
        let mut results = Vec::new();
        for run in 1..=args.runs.max(1) {
            *stub.0.lock().unwrap_or_else(|p| p.into_inner()) = Arrivals::default();
            let result = run_once(&db, &pool, &stub, stub_addr, scenario, &args).await?;
            println!(
                "{scenario} run {run}: {} timers, lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, \
                 {:.0} fires/s, all fired {:.2} s after the first due, {} duplicates, peak RSS {:.1} MiB",
                result.timers,
                result.p50_ms,
                result.p99_ms,
                result.max_ms,
                result.fires_per_s,
                result.all_fired_s,
                result.duplicates,
                result.peak_rss_mib
            );
            results.push(result);
        }
        table.push((scenario, median(&results)));
    }
    println!(
        "\ntimer lateness with {} pending (medians of {} runs)",
        args.pending, args.runs
    );
    println!(
        "{:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>5} {:>9}",
        "scenario",
        "timers",
        "p50 ms",
        "p99 ms",
        "max ms",
        "fires/s",
        "all fired s",
        "dups",
        "RSS MiB"
    );
    for (scenario, r) in table {
        println!(
            "{:>8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>11.2} {:>5} {:>9.1}",
            scenario,
            r.timers,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.fires_per_s,
            r.all_fired_s,
            r.duplicates,
            r.peak_rss_mib
        );
    }
    Ok(())
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// `count` pending timers due from a day ahead on, one per second, written
/// by the server itself.
async fn seed_backlog(pool: &PgPool, count: u64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO timers (call_id, kind, due_at, call_start, call_version, run_at)
         SELECT gen_random_uuid(), 'ready', d, d + interval '5 minutes', 1, d
           FROM (SELECT now() + interval '1 day' + g * interval '1 second' AS d
                   FROM generate_series(1, $1::bigint) AS g) s",
    )
    .bind(i64::try_from(count)?)
    .execute(pool)
    .await
    .context("seeding the backlog")?;
    sqlx::query("VACUUM ANALYZE timers")
        .execute(pool)
        .await
        .context("vacuum")?;
    Ok(())
}

async fn run_once(
    db: &TestDatabase,
    pool: &PgPool,
    stub: &Stub,
    stub_addr: std::net::SocketAddr,
    scenario: &str,
    args: &BenchArgs,
) -> anyhow::Result<RunResult> {
    let mut child = spawn_timers(db, stub_addr)?;
    let pid = child.id();
    // Let it start its loop and its LISTEN before the timers are written.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(status) = child.try_wait()? {
        bail!("the timers process exited at start: {status}");
    }
    let first_due = Utc::now() + chrono::Duration::seconds(3);
    let dues: Vec<DateTime<Utc>> = match scenario {
        "steady" => {
            let step = 1_000_000 / i64::from(args.rate.max(1));
            (0..i64::from(args.rate) * i64::from(args.seconds))
                .map(|i| first_due + chrono::Duration::microseconds(i * step))
                .collect()
        }
        _ => vec![first_due; args.burst as usize],
    };
    write_timers(pool, &dues).await?;
    let last_due = *dues.iter().max().unwrap_or(&first_due);
    let deadline = Instant::now()
        + (last_due - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(30);
    loop {
        let arrived = stub.0.lock().unwrap_or_else(|p| p.into_inner()).seen.len();
        if arrived >= dues.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment for a duplicate to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak_rss_mib = peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    stop(&mut child);

    let arrivals = stub.0.lock().unwrap_or_else(|p| p.into_inner());
    if arrivals.seen.len() < dues.len() {
        bail!(
            "only {} of {} timers fired within 30 s of the last due moment",
            arrivals.seen.len(),
            dues.len()
        );
    }
    let mut lateness: Vec<f64> = arrivals
        .lateness_us
        .iter()
        .map(|&us| us as f64 / 1000.0)
        .collect();
    lateness.sort_by(f64::total_cmp);
    let pct = |q: f64| percentile(&lateness, q);
    let first = arrivals.arrived_at.iter().min().copied();
    let last = arrivals.arrived_at.iter().max().copied();
    let span = match (first, last) {
        (Some(first), Some(last)) => (last - first).as_secs_f64(),
        _ => 0.0,
    };
    let fires_per_s = if scenario == "steady" {
        lateness.len() as f64 / f64::from(args.seconds.max(1))
    } else if span > 0.0 {
        lateness.len() as f64 / span
    } else {
        f64::INFINITY
    };
    Ok(RunResult {
        timers: lateness.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        fires_per_s,
        all_fired_s: pct(1.0) / 1000.0 + (last_due - first_due).num_milliseconds() as f64 / 1000.0,
        duplicates: arrivals.duplicates,
        peak_rss_mib,
    })
}

/// The scenario's timers, each call id carrying its due moment, and the
/// wake-up a consumer would send.
async fn write_timers(pool: &PgPool, dues: &[DateTime<Utc>]) -> anyhow::Result<()> {
    const KINDS: [&str; 3] = ["ready", "missed", "auto_complete"];
    for (chunk_index, chunk) in dues.chunks(5_000).enumerate() {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut kinds = Vec::with_capacity(chunk.len());
        for (i, due) in chunk.iter().enumerate() {
            let n = (chunk_index * 5_000 + i) as u64;
            ids.push(Uuid::from_u64_pair(due.timestamp_micros() as u64, n));
            kinds.push(KINDS[(n % 3) as usize]);
        }
        sqlx::query(
            "INSERT INTO timers (call_id, kind, due_at, call_start, call_version, run_at)
             SELECT t.id, t.kind, t.due, t.due + interval '1 hour', 1, t.due
               FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t(id, kind, due)",
        )
        .bind(&ids)
        .bind(&kinds)
        .bind(chunk)
        .execute(pool)
        .await
        .context("writing the scenario's timers")?;
    }
    if let Some(first) = dues.iter().min() {
        skileez_timers::store::notify(pool, *first).await;
    }
    Ok(())
}

fn spawn_timers(db: &TestDatabase, stub: std::net::SocketAddr) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating this binary")?;
    Command::new(exe)
        .env("DATABASE_URL", db.url())
        .env("SKILEEZ_SCHEDULING_URL", format!("http://{stub}"))
        .env("SKILEEZ_SERVICE_TOKEN", "bench-token")
        .env("SKILEEZ_TIMERS_CONSUME", "false")
        .env("SKILEEZ_TIMERS_INSTANCE", "bench")
        .env("SKILEEZ_METRICS_ADDR", "127.0.0.1:0")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the timers process")
}

/// `VmHWM` of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// SIGTERM, then a wait for the drain; SIGKILL if it takes too long.
fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn median(results: &[RunResult]) -> RunResult {
    let pick = |f: &dyn Fn(&RunResult) -> f64| {
        stats::median(&mut results.iter().map(f).collect::<Vec<_>>())
    };
    RunResult {
        timers: results[0].timers,
        p50_ms: pick(&|r| r.p50_ms),
        p99_ms: pick(&|r| r.p99_ms),
        max_ms: pick(&|r| r.max_ms),
        fires_per_s: pick(&|r| r.fires_per_s),
        all_fired_s: pick(&|r| r.all_fired_s),
        duplicates: results.iter().map(|r| r.duplicates).sum(),
        peak_rss_mib: pick(&|r| r.peak_rss_mib),
    }
}
