//! `skileez bench memory`: each service's resident memory as a process of
//! its own (`skileez serve …`, this very binary), idle and under the `book`
//! load.
//!
//! The three services run against a scratch database, a private nats-server
//! and an aiosmtpd sink (`SKILEEZ_AIOSMTPD_PYTHON`, as deps.sh installs it),
//! with the deployed defaults. RSS is read from `/proc/<pid>/status`
//! (`VmRSS`, and `VmHWM`, the kernel's own high-water mark) every 100 ms.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use chrono::Utc;
use skileez_scheduling::auth::TokenIssuer;
use skileez_testkit::{TestDatabase, nats::TestNats};

use super::book::{Rate, SECRET, book_load};
use crate::OutputFormat;

/// Resident memory of one service, MiB.
#[derive(Debug, Clone, serde::Serialize)]
struct Memory {
    service: &'static str,
    /// The highest VmRSS over the idle period (after start-up).
    idle_mib: f64,
    /// The kernel's high-water mark after the load.
    peak_under_load_mib: f64,
    /// VmRSS once the load has drained.
    after_load_mib: f64,
}

struct Process {
    name: &'static str,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(pid: u32, field: &str) -> f64 {
    kib(pid, field).unwrap_or_default() / 1024.0
}

/// Starts `skileez serve <service>`; returns it and the lines it printed
/// before its admin address (the gRPC address among them).
fn serve(name: &'static str, env: &[(&str, String)]) -> anyhow::Result<(Process, Vec<String>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", name])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("SKILEEZ_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting skileez serve {name}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let process = Process { name, child };
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    loop {
        let line = lines
            .next()
            .with_context(|| format!("{name} ended at start after {printed:?}"))??;
        if line.starts_with("admin on ") {
            break;
        }
        printed.push(line);
    }
    // Keep reading, so that the process never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Ok((process, printed))
}

pub async fn run(
    output: OutputFormat,
    idle_seconds: u64,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let python = std::env::var("SKILEEZ_AIOSMTPD_PYTHON")
        .context("SKILEEZ_AIOSMTPD_PYTHON: a Python with aiosmtpd (source deploy/local/env.sh)")?;
    let smtp_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut smtp = Process {
        name: "aiosmtpd",
        child: Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l"])
            .arg(format!("127.0.0.1:{smtp_port}"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting aiosmtpd")?,
    };
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    // Until aiosmtpd listens.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", smtp_port)).is_ok() {
            break;
        }
        anyhow::ensure!(smtp.child.try_wait()?.is_none(), "aiosmtpd exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut env = vec![
        ("DATABASE_URL", db.url()),
        ("NATS_URL", nats.url()),
        ("SKILEEZ_JWT_SECRET", SECRET.to_owned()),
        ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("SKILEEZ_SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
    ];
    let (scheduling, printed) = serve("scheduling", &env)?;
    let addr: SocketAddr = printed
        .iter()
        .find_map(|l| l.strip_prefix("scheduling service on "))
        .context("the scheduling service printed no gRPC address")?
        .parse()?;
    env.push(("SKILEEZ_SCHEDULING_URL", format!("http://{addr}")));
    let (timers, _) = serve("timers", &env)?;
    let (notifications, _) = serve("notifications", &env)?;
    let processes = [scheduling, timers, notifications];
    let pids: Vec<u32> = processes.iter().map(|p| p.child.id()).collect();

    // Idle: the highest VmRSS once started.
    let mut idle = vec![0f64; pids.len()];
    for _ in 0..idle_seconds * 10 {
        for (max, &pid) in idle.iter_mut().zip(&pids) {
            *max = max.max(mib(pid, "VmRSS:"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Under load: a sampler beside the bookings, for the text report; the
    // peak is the kernel's VmHWM.
    let loading = Arc::new(AtomicBool::new(true));
    let sampler = {
        let loading = loading.clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut max = vec![0f64; pids.len()];
            while loading.load(Ordering::Relaxed) {
                for (m, &pid) in max.iter_mut().zip(&pids) {
                    *m = m.max(mib(pid, "VmRSS:"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    };
    let issuer = Arc::new(TokenIssuer::new(SECRET, "skileez", "skileez-scheduling"));
    let rate: Rate = book_load(addr, issuer, concurrency, Duration::from_secs(seconds)).await?;
    loading.store(false, Ordering::Relaxed);
    let sampled = sampler.await?;
    // Let timers and notifications work through what the load left them.
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let figures: Vec<Memory> = processes
        .iter()
        .zip(&pids)
        .zip(idle.iter().zip(&sampled))
        .map(|((p, &pid), (&idle, &sampled))| Memory {
            service: p.name,
            idle_mib: idle,
            peak_under_load_mib: mib(pid, "VmHWM:").max(sampled),
            after_load_mib: mib(pid, "VmRSS:"),
        })
        .collect();
    for p in &processes {
        anyhow::ensure!(
            std::fs::metadata(format!("/proc/{}", p.child.id())).is_ok(),
            "{} exited during the benchmark",
            p.name
        );
    }
    drop(processes);
    let _ = smtp.child.kill();
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "scenario": "memory",
                "load": { "concurrency": concurrency, "seconds": seconds, "bookings": rate },
                "services": figures,
                "date": Utc::now().to_rfc3339(),
            })
        ),
        OutputFormat::Text => {
            println!(
                "resident memory, MiB (load: {} bookings at concurrency {concurrency}, {:.0}/s)",
                rate.bookings, rate.per_second
            );
            println!(
                "{:>14} {:>8} {:>12} {:>11}",
                "service", "idle", "peak (load)", "after load"
            );
            for m in &figures {
                println!(
                    "{:>14} {:>8.1} {:>12.1} {:>11.1}",
                    m.service, m.idle_mib, m.peak_under_load_mib, m.after_load_mib
                );
            }
        }
    }
    Ok(())
}
