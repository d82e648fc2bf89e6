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
/// `nats_url` (otherwise the bus tasks are off). Returns the process and the
/// server URL it printed.
pub fn start_dev(database_url: &str, nats_url: Option<&str>, port: u16) -> (Child, String) {
    let mut command = skileez();
    command
        .arg("dev")
        .env("DATABASE_URL", database_url)
        .env("SKILEEZ_GRPC_ADDR", format!("127.0.0.1:{port}"))
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
