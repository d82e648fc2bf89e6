//! Running the `skileez` binary in tests: `skileez dev` as a real process on
//! a chosen port against a test database (and NATS), and client commands.

#![allow(dead_code)] // each test binary uses a different part of it

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

pub const SECRET: &str = "cli-test-secret-cli-test-secret-cli";

/// The binary with the test secret and no ambient token.
pub fn skileez() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skileez"));
    command
        .env("SKILEEZ_JWT_SECRET", SECRET)
        .env_remove("SKILEEZ_JWT_SECRET_FILE")
        .env_remove("SKILEEZ_TOKEN")
        // Tests run side by side: no fixed admin port unless a test asks.
        .env("SKILEEZ_METRICS_ADDR", "off")
        .env("RUST_LOG", "error");
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `skileez dev` on `port` (0: any), against `database_url` and, when given,
/// `nats_url` (otherwise the bus tasks are off), without the notification
/// service (its ports are fixed in dev, and it needs NATS and SMTP).
/// Returns the process and the server URL it printed.
pub fn start_dev(database_url: &str, nats_url: Option<&str>, port: u16) -> (Child, String) {
    let mut command = skileez();
    command
        .arg("dev")
        .env("DATABASE_URL", database_url)
        .env("SKILEEZ_GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("SKILEEZ_NOTIFICATIONS", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match nats_url {
        Some(url) => command.env("NATS_URL", url),
        None => command
            .env("SKILEEZ_RELAY", "false")
            .env("SKILEEZ_INGEST", "false"),
    };
    let mut child = command.spawn().expect("skileez dev starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    let addr = line
        .trim()
        .strip_prefix("scheduling service on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, format!("http://{addr}"))
}

pub fn signal(child: &mut Child, signal: &str) {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("skileez runs")
}

#[track_caller]
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

pub fn token(sub: &str, role: &str) -> String {
    ok(run(skileez().args(["token", "--sub", sub, "--role", role])))
        .trim()
        .to_owned()
}

/// `skileez dev` with every service, on free ports, sending mail to
/// `smtp_url`, with `vars` on top. Returns the process and the URLs it
/// printed: scheduling, notifications, and the WebSocket.
pub fn start_dev_with_notifications(
    database_url: &str,
    nats_url: &str,
    smtp_url: &str,
    vars: &[(&str, &str)],
) -> (Child, String, String, String) {
    let mut command = skileez();
    command
        .arg("dev")
        .env("DATABASE_URL", database_url)
        .env("NATS_URL", nats_url)
        .env("SKILEEZ_GRPC_ADDR", "127.0.0.1:0")
        .env("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:0")
        .env("SKILEEZ_WS_ADDR", "127.0.0.1:0")
        .env("SKILEEZ_SMTP_URL", smtp_url)
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().expect("skileez dev starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = |prefix: &str| {
        let line = lines.next().expect("a line").expect("utf-8");
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_owned()
    };
    let scheduling = format!("http://{}", next("scheduling service on "));
    let notifications = format!("http://{}", next("notifications service on "));
    let ws = next("live WebSocket on ");
    (child, scheduling, notifications, ws)
}

/// A service process, killed when dropped.
pub struct Service {
    pub child: Child,
    pub admin: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `skileez serve <service>` with `env`; returns once it printed its admin
/// address (the last line it prints at start).
pub fn serve(service: &str, env: &[(String, String)]) -> (Service, Vec<String>) {
    let mut child = skileez()
        .args(["serve", service])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SKILEEZ_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("skileez serve starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let admin = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{service} ended at start after {printed:?}"))
            .expect("utf-8");
        if let Some(admin) = line.strip_prefix("admin on ") {
            break admin.to_owned();
        }
        printed.push(line);
    };
    // Keep reading, so that the process never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (Service { child, admin }, printed)
}

/// A plain HTTP/1.1 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("admin port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
