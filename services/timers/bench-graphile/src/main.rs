//! The timers benchmark's workload through graphile_worker, for the ratio in
//! BENCHMARKS.md: `--pending` jobs scheduled a day ahead, then a burst of
//! `--burst` jobs scheduled for one instant (or a steady `--rate` per second
//! for `--seconds`), on a scratch database of the same PostgreSQL. Each job's
//! payload carries its due moment; the handler records its lateness when it
//! starts (graphile_worker's own overhead only: no RPC, unlike the timers
//! benchmark, whose lateness is measured at the gRPC stub).
//!
//! graphile_worker notices jobs scheduled for later by polling
//! (`--poll-ms`, its default is 2000); LISTEN/NOTIFY only wakes it for jobs
//! due at once.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use graphile_worker::{IntoTaskHandlerResult, TaskHandler, WorkerContext, WorkerOptions};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

#[derive(Deserialize, Serialize)]
struct BenchJob {
    due_us: i64,
}

struct Arrivals {
    lateness_us: Vec<i64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

fn arrivals() -> &'static Mutex<Arrivals> {
    static ARRIVALS: OnceLock<Mutex<Arrivals>> = OnceLock::new();
    ARRIVALS.get_or_init(|| {
        Mutex::new(Arrivals {
            lateness_us: Vec::new(),
            first: None,
            last: None,
        })
    })
}

impl TaskHandler for BenchJob {
    const IDENTIFIER: &'static str = "bench";

    async fn run(self, _ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        let now = chrono::Utc::now().timestamp_micros();
        let at = Instant::now();
        let mut arrivals = arrivals().lock().unwrap();
        arrivals.lateness_us.push(now - self.due_us);
        arrivals.first.get_or_insert(at);
        arrivals.last = Some(at);
        Ok::<(), String>(())
    }
}

struct Args {
    admin_url: String,
    pending: i64,
    burst: i64,
    rate: i64,
    seconds: i64,
    poll_ms: u64,
    concurrency: usize,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        admin_url: std::env::var("SKILEEZ_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        pending: 1_000_000,
        burst: 10_000,
        rate: 0,
        seconds: 20,
        poll_ms: 2000,
        concurrency: 64,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("a flag needs a value");
        match flag.as_str() {
            "--pending" => args.pending = value()?.parse()?,
            "--burst" => args.burst = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--poll-ms" => args.poll_ms = value()?.parse()?,
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            other => anyhow::bail!(
                "unknown flag {other}; flags: --pending N --burst N | --rate N --seconds N, \
                 --poll-ms MS --concurrency N --runs N"
            ),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let name = format!("bench_graphile_{}", std::process::id());
    let mut admin = PgConnection::connect(&args.admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let url = match args.admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("SKILEEZ_TEST_DATABASE_URL must name a database"),
    };
    let result = bench(&args, &url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    result
}

async fn bench(args: &Args, url: &str) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(url)
        .await?;
    let worker = WorkerOptions::default()
        .concurrency(args.concurrency)
        .schema("graphile_worker")
        .poll_interval(Duration::from_millis(args.poll_ms))
        .pg_pool(pool.clone())
        .define_job::<BenchJob>()
        .init()
        .await?;
    let seeding = Instant::now();
    // In chunks, so that no single statement holds a million locks.
    let chunk = 100_000;
    let mut from = 1;
    while from <= args.pending {
        let to = (from + chunk - 1).min(args.pending);
        // Straight into the jobs table: add_job() per row takes minutes per
        // 100,000 here. Same rows as add_job writes for a job without a key.
        sqlx::query(
            "INSERT INTO graphile_worker._private_jobs (task_id, payload, run_at)
             SELECT (SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'bench'),
                    json_build_object('due_us', 0), now() + interval '1 day' + g * interval '1 second'
               FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(from)
        .bind(to)
        .execute(&pool)
        .await
        .context("seeding")?;
        from = to + 1;
    }
    sqlx::query("VACUUM ANALYZE graphile_worker._private_jobs")
        .execute(&pool)
        .await
        .ok();
    println!(
        "seeded {} jobs a day ahead in {:.1} s",
        args.pending,
        seeding.elapsed().as_secs_f64()
    );
    let runner = tokio::spawn(async move { worker.run().await });

    let scenario = if args.rate > 0 { "steady" } else { "burst" };
    let mut rows = Vec::new();
    for run in 1..=args.runs.max(1) {
        {
            let mut a = arrivals().lock().unwrap();
            a.lateness_us.clear();
            a.first = None;
            a.last = None;
        }
        reset_peak_rss();
        let first_due = chrono::Utc::now() + chrono::Duration::seconds(3);
        let (count, step_us) = if args.rate > 0 {
            (args.rate * args.seconds, 1_000_000 / args.rate)
        } else {
            (args.burst, 0)
        };
        sqlx::query(
            "INSERT INTO graphile_worker._private_jobs (task_id, payload, run_at)
             SELECT (SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'bench'),
                    json_build_object('due_us', $1::bigint + (g - 1) * $3::bigint),
                    to_timestamp(($1::bigint + (g - 1) * $3::bigint) / 1e6)
               FROM generate_series(1, $2::bigint) g",
        )
        .bind(first_due.timestamp_micros())
        .bind(count)
        .bind(step_us)
        .execute(&pool)
        .await
        .context("scheduling the scenario")?;
        let last_due_us = first_due.timestamp_micros() + (count - 1) * step_us;
        let deadline = Instant::now()
            + Duration::from_micros(
                u64::try_from(last_due_us - chrono::Utc::now().timestamp_micros()).unwrap_or(0),
            )
            + Duration::from_secs(60);
        loop {
            let done = arrivals().lock().unwrap().lateness_us.len() as i64;
            if done >= count || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let a = arrivals().lock().unwrap();
        let mut lateness = a.lateness_us.clone();
        lateness.sort_unstable();
        if lateness.len() < count as usize {
            println!(
                "{scenario} run {run}: only {} of {count} jobs ran within 60 s of the last due moment",
                lateness.len()
            );
            continue;
        }
        let pct = |p: f64| {
            let i = ((lateness.len() as f64 * p).ceil() as usize).clamp(1, lateness.len()) - 1;
            lateness[i] as f64 / 1000.0
        };
        let span = match (a.first, a.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => 0.0,
        };
        let per_s = if args.rate > 0 {
            lateness.len() as f64 / args.seconds as f64
        } else {
            lateness.len() as f64 / span.max(1e-9)
        };
        let all_fired_s = pct(1.0) / 1000.0 + ((count - 1) * step_us) as f64 / 1e6;
        let rss = peak_rss_mib();
        println!(
            "{scenario} run {run}: {} jobs, lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, \
             {per_s:.0} jobs/s, all ran {all_fired_s:.2} s after the first due, peak RSS {rss:.1} MiB",
            lateness.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        rows.push([pct(0.5), pct(0.99), pct(1.0), per_s, all_fired_s, rss]);
    }
    if !rows.is_empty() {
        let median = |i: usize| {
            let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "\ngraphile_worker {scenario}, {} pending, poll {} ms, concurrency {} (medians of {}): \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.0} jobs/s, all ran {:.2} s after the first due, \
             peak RSS {:.1} MiB",
            args.pending,
            args.poll_ms,
            args.concurrency,
            rows.len(),
            median(0),
            median(1),
            median(2),
            median(3),
            median(4),
            median(5)
        );
    }
    runner.abort();
    Ok(())
}

/// Resets this process's VmHWM (Linux: `5` to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
