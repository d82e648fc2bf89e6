//! `skileez bench read` and `skileez bench scale`: the service on a large
//! store (see [`super::seed`]).
//!
//! - `read`: `GetCall`, `ListCalls` and `CheckAvailability` through gRPC,
//!   one RPC at a time at the given concurrency, each request about a
//!   different seeded call, asked by one of its participants with their own
//!   token (ListCalls: the student's upcoming calls, or every other time the
//!   coach's, 20 a page; CheckAvailability: the coach with the student, at
//!   the call's own start, a clash, or at a time free for both). Each RPC's
//!   timed runs follow an untimed warm-up of the same load, so they measure
//!   a service that has been up, not one just started.
//! - `scale`: the `book` load through gRPC on an empty store and on a copy
//!   of the seeded one, alternately; `ratio` is seeded rate / empty rate.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use skileez_domain::ActorRole;
use skileez_proto::scheduling as pb;
use skileez_scheduling::Config;
use skileez_testkit::TestDatabase;

use super::book::{Service, book_through_grpc, drive, first_slot, median_rate};
use super::h2::Http2Connection;
use super::{PostgresSettings, median, seed};
use crate::OutputFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rpc {
    GetCall,
    ListCalls,
    CheckAvailability,
}

/// A copy of the seeded store; the copy is kept for further copies.
///
/// Seeding a million calls takes minutes, so the seeded database is kept on
/// the server (see [`TestDatabase::cached`]) and copied per run, for the
/// rest of the day (every seeded start derives from its date) and while
/// the rows' form stays the same ([`seed::fingerprint`]); `fresh` seeds a
/// new one regardless.
async fn seeded(coaches: usize, per_coach: usize, fresh: bool) -> anyhow::Result<TestDatabase> {
    let policy = default_config()?.policy;
    let base = first_slot()?;
    if fresh {
        let db = TestDatabase::new().await;
        seed::seed(db.pool(), &policy, base, coaches, per_coach).await?;
        return Ok(db);
    }
    let began = std::time::Instant::now();
    let (db, reused) = TestDatabase::cached(
        &format!("seed{coaches}x{per_coach}"),
        &format!(
            "{}{}",
            base.format("%Y%m%d"),
            seed::fingerprint(&policy, base)?
        ),
        |pool| async move {
            seed::seed(&pool, &policy, base, coaches, per_coach)
                .await
                .map_err(Into::into)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("seeded store: {e}"))?;
    if reused {
        eprintln!(
            "seed: reused the kept store of {} calls, copied in {:.1} s (--fresh-store seeds anew)",
            coaches * per_coach,
            began.elapsed().as_secs_f64()
        );
    }
    Ok(db)
}

fn default_config() -> anyhow::Result<Config> {
    Ok(Config::from_lookup(|name| {
        (name == "SKILEEZ_JWT_SECRET").then(|| "bench-secret-bench-secret-bench-secret".to_owned())
    })?)
}

/// The seeded store and the load on it, shared by `read` and `scale`.
#[derive(Debug, clap::Args)]
pub struct StoreLoad {
    /// Coaches in the store (at most 12,000).
    #[arg(long, default_value_t = 10_000)]
    coaches: usize,
    /// Calls per coach (1,000,000 calls by default).
    #[arg(long = "calls-per-coach", default_value_t = 100)]
    per_coach: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of timed load per measurement (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs; the figures are the medians over them.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed a new store instead of copying the one kept from an earlier run
    /// today.
    #[arg(long = "fresh-store")]
    fresh: bool,
    /// Service settings for this run, as `NAME=VALUE` (repeatable), e.g.
    /// `--set SKILEEZ_DATABASE_MAX_CONNECTIONS=4`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = super::parse_setting)]
    settings: Vec<(String, String)>,
}

pub async fn read(
    output: OutputFormat,
    rpcs: &[Rpc],
    warm_up: u64,
    load: &StoreLoad,
) -> anyhow::Result<()> {
    let StoreLoad {
        coaches,
        per_coach,
        concurrency,
        seconds,
        runs,
        fresh,
        ref settings,
    } = *load;
    let db = seeded(coaches, per_coach, fresh).await?;
    let postgres = PostgresSettings::of(db.pool()).await?;
    let total = coaches * per_coach;
    let service = Service::start(db, settings).await?;
    let base = first_slot()?;
    let channels = Arc::new(Http2Connection::each(service.addr, concurrency).await?);
    let mut results = Vec::new();
    for &rpc in rpcs {
        let mut samples = Vec::new();
        // Run 0 is the untimed warm-up.
        for run in usize::from(warm_up == 0)..=runs.max(1) {
            let issuer = service.issuer.clone();
            let channels = channels.clone();
            let length = if run == 0 { warm_up } else { seconds };
            let rate = drive(concurrency, Duration::from_secs(length), move |i| {
                let issuer = issuer.clone();
                let channel = channels[i % channels.len()].clone();
                // Spread over the store: consecutive requests, distant calls.
                let j = (i.wrapping_mul(7_919) + run * 104_729) % total;
                async move {
                    let student = seed::student(j, per_coach);
                    let coach = seed::coach(j, per_coach);
                    let bearer = |user: &str, role| {
                        format!(
                            "Bearer {}",
                            issuer.mint(user, role, Duration::from_secs(600))
                        )
                        .parse::<tonic::metadata::MetadataValue<_>>()
                    };
                    let timestamp = |t: chrono::DateTime<Utc>| prost_types::Timestamp {
                        seconds: t.timestamp(),
                        nanos: 0,
                    };
                    let mut client = channel.scheduling();
                    match rpc {
                        Rpc::GetCall => {
                            let mut request = tonic::Request::new(pb::GetCallRequest {
                                call_id: seed::call_id(j),
                            });
                            request
                                .metadata_mut()
                                .insert("authorization", bearer(&student, ActorRole::Student)?);
                            let answer = client.get_call(request).await?.into_inner();
                            let card = answer.card;
                            anyhow::ensure!(
                                card.and_then(|c| c.student)
                                    .is_some_and(|s| s.user_id == student),
                                "call {j} is not {student}'s"
                            );
                        }
                        Rpc::ListCalls => {
                            let (user, role) = if i % 2 == 0 {
                                (student, ActorRole::Student)
                            } else {
                                (coach, ActorRole::Coach)
                            };
                            let mut request = tonic::Request::new(pb::ListCallsRequest {
                                user_id: user.clone(),
                                filter: pb::CallFilter::Upcoming.into(),
                                page_size: 20,
                                page_token: String::new(),
                            });
                            request
                                .metadata_mut()
                                .insert("authorization", bearer(&user, role)?);
                            let calls = client.list_calls(request).await?.into_inner().calls;
                            anyhow::ensure!(!calls.is_empty(), "{user} has no calls listed");
                        }
                        Rpc::CheckAvailability => {
                            let clash = i % 2 == 0;
                            let start = if clash {
                                seed::start(base, j, per_coach)
                            } else {
                                seed::free_start(base, j, per_coach)
                            };
                            let mut request = tonic::Request::new(pb::CheckAvailabilityRequest {
                                coach_id: coach,
                                start: Some(pb::StartTime {
                                    time: Some(pb::start_time::Time::Utc(timestamp(start))),
                                }),
                                duration_minutes: 15,
                                student_id: student.clone(),
                            });
                            request
                                .metadata_mut()
                                .insert("authorization", bearer(&student, ActorRole::Student)?);
                            let answer = client.check_availability(request).await?.into_inner();
                            anyhow::ensure!(
                                answer.available != clash,
                                "call {j}: available {} at {start}",
                                answer.available
                            );
                        }
                    }
                    Ok(())
                }
            })
            .await;
            if run == 0 {
                eprintln!(
                    "read {rpc:?} warm-up of {warm_up} s: {:.0}/s p99 {:.2} ms ({} errors)",
                    rate.per_second, rate.p99_ms, rate.errors
                );
                continue;
            }
            if matches!(output, OutputFormat::Text) {
                println!(
                    "read {rpc:?} run {}: {:.0}/s p50 {:.2} p99 {:.2} max {:.2} ms ({} errors)",
                    run, rate.per_second, rate.p50_ms, rate.p99_ms, rate.max_ms, rate.errors
                );
            }
            samples.push(rate);
        }
        results.push((rpc, median_rate(&samples)));
    }
    service.stop().await?;
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "scenario": "read",
                "calls": total,
                "postgres": postgres,
                "coaches": coaches,
                "concurrency": concurrency,
                "seconds": seconds,
                "warm_up_seconds": warm_up,
                "medians": results.iter().map(|(rpc, rate)| serde_json::json!({ "rpc": rpc, "rate": rate })).collect::<Vec<_>>(),
                "date": Utc::now().to_rfc3339(),
            })
        ),
        OutputFormat::Text => {
            println!(
                "\nreads on {total} calls of {coaches} coaches, concurrency {concurrency}, medians of {} runs of {seconds} s after {warm_up} s of warm-up ({postgres})",
                runs.max(1)
            );
            println!(
                "{:>18} {:>9} {:>8} {:>8} {:>8} {:>7}",
                "rpc", "per s", "p50 ms", "p99 ms", "max ms", "errors"
            );
            for (rpc, r) in &results {
                println!(
                    "{:>18} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
                    format!("{rpc:?}"),
                    r.per_second,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.errors
                );
            }
        }
    }
    Ok(())
}

pub async fn scale(output: OutputFormat, load: &StoreLoad) -> anyhow::Result<()> {
    let StoreLoad {
        coaches,
        per_coach,
        concurrency,
        seconds,
        runs,
        fresh,
        ref settings,
    } = *load;
    let seeded = seeded(coaches, per_coach, fresh).await?;
    let postgres = PostgresSettings::of(seeded.pool()).await?;
    let duration = Duration::from_secs(seconds);
    let mut empty = Vec::new();
    let mut full = Vec::new();
    for run in 0..runs.max(1) {
        let e =
            book_through_grpc(TestDatabase::new().await, concurrency, duration, settings).await?;
        let f = book_through_grpc(seeded.copy().await?, concurrency, duration, settings).await?;
        if matches!(output, OutputFormat::Text) {
            println!(
                "scale run {}: empty store {:.0}/s p99 {:.2} ms | {} calls {:.0}/s p99 {:.2} ms | ratio {:.2}",
                run + 1,
                e.per_second,
                e.p99_ms,
                coaches * per_coach,
                f.per_second,
                f.p99_ms,
                f.per_second / e.per_second.max(f64::MIN_POSITIVE)
            );
        }
        empty.push(e);
        full.push(f);
    }
    let ratios: Vec<f64> = empty
        .iter()
        .zip(&full)
        .map(|(e, f)| f.per_second / e.per_second.max(f64::MIN_POSITIVE))
        .collect();
    let (empty, full) = (median_rate(&empty), median_rate(&full));
    let ratio = median(&mut ratios.clone());
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "scenario": "scale",
                "calls": coaches * per_coach,
                "postgres": postgres,
                "concurrency": concurrency,
                "seconds": seconds,
                "empty": empty,
                "seeded": full,
                "ratio": ratio,
                "date": Utc::now().to_rfc3339(),
            })
        ),
        OutputFormat::Text => println!(
            "\nbookings at concurrency {concurrency}, medians of {} runs of {seconds} s: empty store {:.0}/s (p99 {:.2} ms), {} stored calls {:.0}/s (p99 {:.2} ms), ratio {:.2} ({postgres})",
            runs.max(1),
            empty.per_second,
            empty.p99_ms,
            coaches * per_coach,
            full.per_second,
            full.p99_ms,
            ratio
        ),
    }
    Ok(())
}
