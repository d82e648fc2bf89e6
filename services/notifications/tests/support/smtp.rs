//! A real SMTP server per test: `deploy/local/smtp_server.py` on aiosmtpd,
//! in a Python of its own.
//!
//! The interpreter, the first that exists:
//! 1. `SKILEEZ_AIOSMTPD_PYTHON`;
//! 2. `$XDG_DATA_HOME/skileez/smtp-venv/bin/python` (default
//!    `~/.local/share/...`), where the set-up installs the PyPI package
//!    `aiosmtpd`.
//!
//! Each accepted message is read back as the JSON the server writes beside
//! it (envelope, headers, MIME tree decoded by Python's email package).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Shared with `deploy/local/run.sh`, which runs it as the development
/// mail catcher.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/local/smtp_server.py"
);

pub struct TestSmtp {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

/// One accepted message.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub n: u64,
    /// Seconds since the epoch, when the server accepted it.
    pub received_at: f64,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub headers: HashMap<String, String>,
    pub tree: Part,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    pub content_type: String,
    pub params: HashMap<String, String>,
    pub filename: Option<String>,
    pub disposition: Option<String>,
    pub text: Option<String>,
    pub parts: Vec<Part>,
}

impl Part {
    /// This part and all below it, depth first.
    pub fn walk(&self) -> Vec<&Part> {
        let mut all = vec![self];
        for part in &self.parts {
            all.extend(part.walk());
        }
        all
    }
}

impl Mail {
    pub fn to(&self) -> &str {
        self.rcpt_tos
            .first()
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn subject(&self) -> &str {
        self.header("Subject")
    }

    pub fn message_id(&self) -> &str {
        self.header("Message-ID")
    }

    /// The first leaf of this type.
    pub fn part(&self, content_type: &str) -> Option<&Part> {
        self.tree
            .walk()
            .into_iter()
            .find(|p| p.content_type == content_type && p.parts.is_empty())
    }

    pub fn text(&self) -> &str {
        self.part("text/plain")
            .and_then(|p| p.text.as_deref())
            .unwrap_or_default()
    }

    pub fn html(&self) -> &str {
        self.part("text/html")
            .and_then(|p| p.text.as_deref())
            .unwrap_or_default()
    }

    /// The `text/calendar` part inside the alternative.
    pub fn calendar(&self) -> Option<&Part> {
        self.part("text/calendar")
    }

    /// The `.ics` attachment.
    pub fn ics_attachment(&self) -> Option<&Part> {
        self.tree.walk().into_iter().find(|p| {
            p.disposition.as_deref() == Some("attachment")
                && p.filename.as_deref().is_some_and(|f| f.ends_with(".ics"))
        })
    }
}

impl TestSmtp {
    /// Starts a server on a free loopback port; panics with a hint if the
    /// Python with aiosmtpd cannot be found or does not come up.
    pub async fn start() -> TestSmtp {
        let python = python();
        let dir = tempfile::Builder::new()
            .prefix("skileez-smtp-")
            .tempdir()
            .expect("a directory for the SMTP server");
        let mut child = Command::new(&python)
            .arg(SCRIPT)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the SMTP server did not start in 30 s"))
            .expect("read")
            .unwrap_or_else(|| {
                panic!(
                    "the SMTP server exited at start: is aiosmtpd installed for {}?",
                    python.display()
                )
            });
        let port = ready
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the SMTP server: {ready:?}"));
        TestSmtp { dir, port, child }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Plain SMTP on loopback, as the service allows for tests.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// While on, every message is refused with a transient `451`.
    pub fn refuse(&self, on: bool) {
        let flag = self.dir.path().join("refuse");
        if on {
            std::fs::write(&flag, b"").expect("refuse flag");
        } else {
            let _ = std::fs::remove_file(&flag);
        }
    }

    /// Makes RCPT TO refuse `address` with a permanent `550`.
    pub fn reject(&self, address: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("reject"))
            .expect("reject file");
        writeln!(file, "{address}").expect("write reject file");
    }

    /// Every message accepted so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read the SMTP directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).expect("read a message");
                serde_json::from_slice(&bytes).expect("a message summary")
            })
            .collect()
    }

    /// The raw message `n`, as it arrived.
    pub fn raw(&self, n: u64) -> Vec<u8> {
        std::fs::read(self.dir.path().join(format!("{n:06}.eml"))).expect("raw message")
    }

    /// Waits until `done` holds for the messages accepted so far; panics
    /// with them after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Mail]) -> bool,
    ) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if done(&mails) {
                return mails;
            }
            if tokio::time::Instant::now() >= deadline {
                let seen: Vec<String> = mails
                    .iter()
                    .map(|m| format!("{} {:?}", m.to(), m.subject()))
                    .collect();
                panic!("timed out waiting for {what}; received: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for at least `count` messages.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Mail> {
        self.wait_until(timeout, &format!("{count} e-mails"), |m| m.len() >= count)
            .await
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SKILEEZ_AIOSMTPD_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .expect("HOME or XDG_DATA_HOME");
    let venv = data_home.join("skileez/smtp-venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    panic!(
        "no Python with aiosmtpd: set SKILEEZ_AIOSMTPD_PYTHON, or run `python3 -m venv {0} && {0}/bin/pip install aiosmtpd` (deploy/local/deps.sh does)",
        data_home.join("skileez/smtp-venv").display()
    );
}
