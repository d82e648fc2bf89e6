//! The live feed in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `deploy/local/deps.sh`) loads a page from this test's own
//! loopback HTTP server; the page opens the WebSocket as the web app would
//! and posts every event it sees (open, message, close with code and
//! reason) back to the test, in order. The test drives the page (connect,
//! disconnect, reconnect) through a long-polled `/command`.
//!
//! Ready comes from `CallTimerService.MarkCallReady` at its moment (start
//! minus the ready lead, seconds here), as the timer service sends it.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use skileez_domain::ActorRole;
use skileez_proto::scheduling as pb;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

const WAIT: Duration = Duration::from_secs(30);

/// The page: what a web app does with the socket, and a reporter.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>skileez live</title></head>
<body>
<script>
"use strict";
const wsUrl = new URLSearchParams(location.search).get("ws");
let last = null; // the last position seen: where a reconnect resumes
let conn = 0;
let socket = null;
// Reports go out one after the other, so the test reads them in order.
let queue = Promise.resolve();
function report(event) {
  const body = JSON.stringify(event);
  queue = queue
    .then(() => fetch("/report", { method: "POST", headers: { "content-type": "application/json" }, body }))
    .catch(() => {});
}
function connect(cmd) {
  const id = ++conn;
  const after = cmd.resume ? last : null;
  let ws;
  if (cmd.auth === "protocol") {
    const url = after === null ? wsUrl : wsUrl + "?after=" + after;
    ws = new WebSocket(url, ["skileez.v1", "bearer." + cmd.token]);
  } else {
    ws = new WebSocket(wsUrl);
  }
  socket = ws;
  ws.onopen = () => {
    report({ conn: id, kind: "open", protocol: ws.protocol });
    if (cmd.auth === "message") {
      const hello = { after: after };
      if (cmd.token) hello.token = cmd.token;
      ws.send(JSON.stringify(hello));
    }
  };
  ws.onmessage = (e) => {
    const data = JSON.parse(e.data);
    if (typeof data.position === "number") last = data.position;
    report({ conn: id, kind: "message", data: data, last: last });
  };
  ws.onclose = (e) => report({ conn: id, kind: "close", code: e.code, reason: e.reason, clean: e.wasClean });
  ws.onerror = () => report({ conn: id, kind: "error" });
}
async function follow() {
  for (;;) {
    let cmd;
    try {
      cmd = await (await fetch("/command")).json();
    } catch (e) {
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    if (cmd.op === "connect") connect(cmd);
    else if (cmd.op === "disconnect") socket.close(1000, "bye");
    else if (cmd.op === "done") return;
  }
}
report({ kind: "loaded", agent: navigator.userAgent });
follow();
</script>
</body></html>
"#;

/// The page's server: `/live.html`, `/command` (the next command, long
/// polled) and `/report` (an event the page saw).
struct PageServer {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Value>,
    reports: mpsc::UnboundedReceiver<Value>,
}

impl PageServer {
    async fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (report_tx, reports) = mpsc::unbounded_channel();
        let command_rx = Arc::new(Mutex::new(command_rx));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, command_rx.clone(), report_tx.clone()));
            }
        });
        PageServer {
            addr,
            commands,
            reports,
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    commands: Arc<Mutex<mpsc::UnboundedReceiver<Value>>>,
    reports: mpsc::UnboundedSender<Value>,
) {
    let Some((method, path, body)) = read_request(&mut stream).await else {
        return;
    };
    let (status, content_type, body) = match (method.as_str(), path.as_str()) {
        ("GET", p) if p.starts_with("/live.html") => {
            ("200 OK", "text/html; charset=utf-8", PAGE.to_owned())
        }
        ("GET", "/command") => {
            let command = commands.lock().await.recv().await;
            let command = command.unwrap_or_else(|| json!({ "op": "done" }));
            ("200 OK", "application/json", command.to_string())
        }
        ("POST", "/report") => {
            if let Ok(event) = serde_json::from_slice::<Value>(&body) {
                let _ = reports.send(event);
            }
            ("204 No Content", "text/plain", String::new())
        }
        _ => ("404 Not Found", "text/plain", "not found".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next()?.to_owned();
    let path = words.next()?.to_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some((method, path, body))
}

/// Headless Chromium on the page, and the page's reports.
struct Browser {
    child: tokio::process::Child,
    page: PageServer,
    log: PathBuf,
    _profile: tempfile::TempDir,
    /// The page's connections so far (it numbers them 1, 2, …).
    conns: u64,
}

impl Browser {
    async fn open(ws: SocketAddr) -> Browser {
        let binary =
            std::env::var("SKILEEZ_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&binary).exists(),
            "{binary} is missing: install Debian's chromium (bash deploy/local/deps.sh does)"
        );
        let page = PageServer::start().await;
        let profile = tempfile::tempdir().expect("profile dir");
        let log = profile.path().join("chromium.log");
        let url = format!("http://{}/live.html?ws=ws://{ws}/v1/live", page.addr);
        let child = tokio::process::Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!(
                    "--user-data-dir={}",
                    profile.path().join("profile").display()
                ),
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let mut browser = Browser {
            child,
            page,
            log,
            _profile: profile,
            conns: 0,
        };
        let loaded = browser.report().await;
        assert_eq!(loaded["kind"], "loaded", "{loaded}");
        assert!(
            loaded["agent"]
                .as_str()
                .unwrap_or_default()
                .contains("Chrome"),
            "{loaded}"
        );
        browser
    }

    /// The page's next report.
    async fn report(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.page.reports.recv()).await {
            Ok(Some(report)) => report,
            _ => panic!(
                "no report from the page within {WAIT:?}; chromium's log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    fn command(&self, command: Value) {
        self.page
            .commands
            .send(command)
            .expect("the page server runs");
    }

    /// Tells the page to connect; the page's number of that connection.
    fn connect(&mut self, auth: &str, token: Option<&str>, resume: bool) -> u64 {
        self.command(json!({ "op": "connect", "auth": auth, "token": token, "resume": resume }));
        self.conns += 1;
        self.conns
    }

    /// Reports of connection `conn` until `done` holds for them.
    async fn events_until(&mut self, conn: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        while !done(&events) {
            let report = self.report().await;
            assert_eq!(
                report["conn"], conn,
                "a report of another connection: {report}"
            );
            events.push(report);
        }
        events
    }

    /// The feed items connection `conn` receives until it has `count` (the
    /// open and welcome before them are checked and left out).
    async fn items(&mut self, conn: u64, count: usize) -> Vec<Value> {
        let events = self
            .events_until(conn, |events| messages(events).len() == count)
            .await;
        messages(&events)
            .into_iter()
            .map(|data| {
                assert_ne!(data["type"], "welcome", "{data}");
                data
            })
            .collect()
    }

    /// Connection `conn` opens and is welcomed; returns the welcome.
    async fn welcomed(&mut self, conn: u64) -> Value {
        let events = self.events_until(conn, |events| events.len() == 2).await;
        assert_eq!(events[0]["kind"], "open", "{events:?}");
        assert!(events[0]["protocol"].is_string(), "{events:?}");
        assert_eq!(events[1]["kind"], "message", "{events:?}");
        assert_eq!(events[1]["data"]["type"], "welcome", "{events:?}");
        events[1]["data"].clone()
    }

    /// Nothing more from the page for `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(report)) = tokio::time::timeout(quiet, self.page.reports.recv()).await {
            panic!("expected nothing more, the page saw {report}");
        }
    }

    async fn close(mut self) {
        self.command(json!({ "op": "done" }));
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn messages(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| e["data"].clone())
        .collect()
}

fn kinds(items: &[Value]) -> Vec<String> {
    support::ws::types(items)
}

#[tokio::test]
async fn a_page_follows_its_calls_live_and_resumes_after_its_last_position() {
    let options = Options {
        policy: fast_policy(),
        vars: vec![("SKILEEZ_WS_AUTH_TIMEOUT", "1s".to_owned())],
    };
    let env = TestEnv::start_with(options, 1).await;
    let ws = env.instances[0].ws_addr.expect("the WebSocket is on");
    env.add_participant("stu-1", "Asha", "Europe/Paris", "en-GB")
        .await;
    env.add_participant("coach-1", "Bo", "UTC", "en-GB").await;
    let token = env.token("stu-1", ActorRole::Student);
    let mut browser = Browser::open(ws).await;

    // Connected before anything happened: the welcome, then nothing.
    let conn = browser.connect("protocol", Some(&token), false);
    let welcome = browser.welcomed(conn).await;
    assert_eq!(
        (welcome["userId"].as_str(), welcome["after"].as_i64()),
        (Some("stu-1"), Some(0))
    );

    // Booked a few seconds ahead; ready at its moment.
    let start = seconds_ahead(8);
    let call = env.book_free("stu-1", "coach-1", start).await;
    let id = call_id(&call);
    let booked = browser.items(conn, 2).await;
    assert_eq!(
        kinds(&booked),
        ["call.new", "notification:NOTIFICATION_KIND_BOOKED"]
    );
    sleep_until(start - fast_policy().ready_lead + chrono::Duration::milliseconds(100)).await;
    let marked = env
        .timers()
        .mark_call_ready(pb::TimerCommandRequest {
            call_id: id.clone(),
        })
        .await
        .expect("ready answered")
        .into_inner();
    assert!(marked.applied, "{marked:?}");
    let ready = browser.items(conn, 2).await;
    assert_eq!(
        kinds(&ready),
        ["call.ready", "notification:NOTIFICATION_KIND_READY"]
    );
    let all: Vec<Value> = booked.iter().chain(&ready).cloned().collect();
    assert_eq!(support::ws::positions(&all), [1, 2, 3, 4]);
    assert_eq!(ready[0]["callId"], id.as_str());
    assert_eq!(ready[0]["card"]["status"], "CALL_STATUS_READY");
    assert_eq!(ready[1]["notification"]["kind"], "NOTIFICATION_KIND_READY");

    // The page goes away; the coach cancels meanwhile.
    browser.command(json!({ "op": "disconnect" }));
    let closed = browser.events_until(conn, |e| !e.is_empty()).await;
    assert_eq!(
        (closed[0]["kind"].as_str(), closed[0]["code"].as_i64()),
        (Some("close"), Some(1000)),
        "{closed:?}"
    );
    env.cancel("coach-1", ActorRole::Coach, &id, "Sorry").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.stored_notifications("stu-1").await.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancellation was not handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Back with its last position: what happened while away, once.
    let conn = browser.connect("protocol", Some(&token), true);
    assert_eq!(browser.welcomed(conn).await["after"], 4);
    let missed = browser.items(conn, 2).await;
    assert_eq!(
        kinds(&missed),
        ["call.changed", "notification:NOTIFICATION_KIND_CANCELLED"]
    );
    assert_eq!(support::ws::positions(&missed), [5, 6]);
    assert_eq!(missed[0]["card"]["status"], "CALL_STATUS_CANCELLED");
    browser.assert_quiet(Duration::from_secs(1)).await;
    browser.command(json!({ "op": "disconnect" }));
    browser.events_until(conn, |e| !e.is_empty()).await;

    // Again, the token in the first message this time: up to date already.
    let conn = browser.connect("message", Some(&token), true);
    assert_eq!(browser.welcomed(conn).await["after"], 6);
    browser.assert_quiet(Duration::from_secs(1)).await;
    browser.command(json!({ "op": "disconnect" }));
    browser.events_until(conn, |e| !e.is_empty()).await;

    // A bad token, a first message without one, and silence: a close with
    // the reason, and not one message.
    for (auth, token, reason) in [
        (
            "protocol",
            Some("not-a-jwt"),
            "unauthenticated: the token is malformed",
        ),
        (
            "message",
            None,
            "no token: offer subprotocols skileez.v1 and bearer.<jwt>, or send {\"token\":\"<jwt>\"} first",
        ),
        ("none", None, "unauthenticated: no token within 1s"),
    ] {
        let conn = browser.connect(auth, token, false);
        let events = browser
            .events_until(conn, |e| e.last().is_some_and(|e| e["kind"] == "close"))
            .await;
        assert!(
            messages(&events).is_empty(),
            "{auth}: data before the close: {events:?}"
        );
        let close = events.last().expect("the close");
        assert_eq!(close["code"], 1008, "{auth}: {close}");
        assert_eq!(close["reason"], reason, "{auth}: {close}");
    }
    browser.close().await;
}
