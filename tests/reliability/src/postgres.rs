//! A private PostgreSQL cluster for one scenario: `initdb` into a temporary
//! directory, the postmaster on a free loopback port with trust auth, the
//! schema migrated. The scenarios stop it in immediate mode (SIGQUIT to the
//! postmaster, what `pg_ctl stop -m immediate` sends) and start it again on
//! the same data directory; the shared server on port 5432 is never touched.
//!
//! The binaries come from `SKILEEZ_PG_BIN_DIR`, else
//! `/usr/lib/postgresql/15/bin`. PostgreSQL refuses to run as root: when the
//! test runs as root, the cluster is owned by and runs as `postgres`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use crate::process::{free_port, signal, spawn};

const DATABASE: &str = "skileez";

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// A new cluster, started, with the `skileez` database migrated.
    pub async fn start() -> PrivatePostgres {
        let bin = std::env::var_os("SKILEEZ_PG_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        let dir = tempfile::Builder::new()
            .prefix("skileez-pg-")
            .tempdir()
            .expect("a directory for PostgreSQL");
        // SAFETY: geteuid has no preconditions.
        let owner = if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = user_ids("postgres").expect("a postgres user to run PostgreSQL as");
            chown(dir.path(), uid, gid);
            Some((uid, gid))
        } else {
            None
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut initdb, owner);
        let out = initdb.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
            owner,
            child: None,
        };
        pg.restart().await;
        let mut conn = PgConnection::connect(&pg.admin_url())
            .await
            .expect("connect to the private PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg.url())
            .await
            .expect("connect");
        skileez_eventstore::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations");
        pool.close().await;
        pg
    }

    /// The `skileez` database on this cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Immediate shutdown (SIGQUIT): no checkpoint, every backend gone at
    /// once; the next start replays the WAL.
    pub fn stop_immediate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGQUIT);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
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

    /// Starts the postmaster on the same port and data directory and waits
    /// until it accepts connections (crash recovery included).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("postgres.log"))
                .expect("log");
            let mut command = Command::new(self.bin.join("postgres"));
            command
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-p", &self.port.to_string(), "-k"])
                .arg(self.dir.path())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=32MB",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            as_owner(&mut command, self.owner);
            let mut child = spawn(command).expect("postgres starts");
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    // The old postmaster's port may linger a moment.
                    assert!(
                        Instant::now() < deadline,
                        "postgres exited at start: {}",
                        self.log_tail()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                if let Ok(conn) = PgConnection::connect(&self.admin_url()).await {
                    let _ = conn.close().await;
                    self.child = Some(child);
                    return;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("postgres not ready in 60 s: {}", self.log_tail());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[text.ceil_char_boundary(start)..].to_owned()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown the PostgreSQL directory");
}
