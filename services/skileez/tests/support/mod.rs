//! Running the `skileez` binary in tests: `skileez dev` as a real process on
//! a chosen port against a test database (and NATS), and client commands.

#![allow(dead_code)] // each test binary uses a different part of it

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Output, Stdio},
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
