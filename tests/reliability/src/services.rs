//! The three services as real processes (`skileez serve <service>`), as
//! deployed: each can be SIGKILLed, SIGSTOPped and started again with the
//! same environment (scheduling on the same port, so clients and the timer
//! service reconnect).
//!
//! The binary: `SKILEEZ_BIN`, else `skileez` beside the test binary's
//! `deps/` directory (`cargo build -p skileez` puts it there; `cargo test
//! --workspace` builds it before any test runs, and `run.sh` builds it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{rss_kib, signal, spawn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Scheduling,
    Timers,
    Notifications,
}

impl Kind {
    pub fn arg(self) -> &'static str {
        match self {
            Kind::Scheduling => "scheduling",
            Kind::Timers => "timers",
            Kind::Notifications => "notifications",
        }
    }
}

pub struct ServiceProcess {
    pub name: String,
    pub kind: Kind,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub starts: usize,
}

pub fn skileez_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SKILEEZ_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("skileez");
    assert!(
        path.is_file(),
        "{} not found: run `cargo build -p skileez` first (tests/reliability/run.sh does), or set SKILEEZ_BIN",
        path.display()
    );
    path
}

impl ServiceProcess {
    /// Starts it and waits until it printed its admin address (it is then
    /// serving). `log` collects its standard error across restarts.
    pub fn start(name: &str, kind: Kind, env: Vec<(String, String)>, log: PathBuf) -> Self {
        let mut service = ServiceProcess {
            name: name.to_owned(),
            kind,
            env,
            log,
            child: None,
            starts: 0,
        };
        service.restart();
        service
    }

    /// Starts it again after a kill, with the same environment.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log");
        let mut command = Command::new(skileez_binary());
        command
            .args(["serve", self.kind.arg()])
            .env_remove("SKILEEZ_TOKEN")
            .env_remove("SKILEEZ_JWT_SECRET_FILE")
            .env(
                "RUST_LOG",
                std::env::var("SKILEEZ_RELIABILITY_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env("SKILEEZ_METRICS_ADDR", "127.0.0.1:0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = spawn(command).expect("skileez serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut printed = Vec::new();
            for line in lines.by_ref().map_while(Result::ok) {
                let admin = line.starts_with("admin on ");
                printed.push(line);
                if admin {
                    let _ = tx.send(Ok(printed));
                    // Keep reading: the process never writes into a closed pipe.
                    for _ in lines.map_while(Result::ok) {}
                    return;
                }
            }
            let _ = tx.send(Err(printed));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(_)) => {}
            Ok(Err(printed)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} ended at start after {printed:?}; its log: {}",
                    self.name,
                    self.log.display()
                )
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not start in 60 s", self.name)
            }
        }
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL, no drain; the process is reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(rss_kib)
    }

    /// SIGTERM and a wait for the drain.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
