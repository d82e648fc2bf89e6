//! A real SMTP server: `deploy/local/smtp_server.py` on aiosmtpd, in the
//! Python of `SKILEEZ_AIOSMTPD_PYTHON` (else deps.sh's venv). Every accepted
//! message is read back from the JSON the server writes beside it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/local/smtp_server.py"
);

pub struct TestSmtp {
    dir: tempfile::TempDir,
    port: u16,
    _child: Child,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub received_at: f64,
    pub rcpt_tos: Vec<String>,
    pub headers: HashMap<String, String>,
}

impl Mail {
    pub fn message_id(&self) -> &str {
        self.headers
            .get("Message-ID")
            .map(String::as_str)
            .unwrap_or_default()
    }
}

impl TestSmtp {
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
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMTP server starts in 30 s")
            .expect("read")
            .expect("the SMTP server exited at start: is aiosmtpd installed?");
        let port = ready
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {ready:?}"));
        TestSmtp {
            dir,
            port,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// While `Some`, DATA answers `250` that long after storing the message.
    pub fn delay(&self, delay: Option<Duration>) {
        let flag = self.dir.path().join("delay");
        match delay {
            Some(d) => std::fs::write(&flag, d.as_secs_f64().to_string()).expect("delay flag"),
            None => {
                let _ = std::fs::remove_file(&flag);
            }
        }
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read the SMTP directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
            .collect()
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
    data_home.join("skileez/smtp-venv/bin/python")
}
