//! Test support shared by the integration tests of every crate.
//!
//! [`TestDatabase`] gives each test its own PostgreSQL database with the whole
//! system's schema, so tests run in parallel without seeing each other's rows
//! and clean up after themselves. Migrating a fresh database for every test
//! would cost a second each; instead the migrations run once into a template
//! database, and each test clones it (`CREATE DATABASE ... TEMPLATE`), which
//! takes tens of milliseconds.
//!
//! The server comes from `SKILEEZ_TEST_DATABASE_URL`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`; the role needs `CREATEDB`.
//! Set `SKILEEZ_TEST_KEEP_DB=1` to keep the databases for a post-mortem.

pub mod nats;
pub mod pki;
pub mod process;
pub mod stats;

use std::str::FromStr;
use std::sync::OnceLock;

use skileez_eventstore::MIGRATOR;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Every template name starts with this, so stale ones can be found.
const TEMPLATE_PREFIX: &str = "skileez_tpl_";

/// Every database kept by [`TestDatabase::cached`] starts with this.
const CACHE_PREFIX: &str = "skileez_cache_";

/// Serialises template builds across test processes (`cargo test` runs the
/// test binaries of a crate one after another, but several crates' tests, or
/// several engineers, may run at once against one server).
const TEMPLATE_LOCK_KEY: i64 = 0x736b_696c_6565_7a01; // "skileez" 0x01

/// Enough for a test that runs a few transactions concurrently; a test that
/// needs more builds its own pool from [`TestDatabase::connect_options`]. The
/// server's `max_connections` is shared by every test running at once.
const POOL_SIZE: u32 = 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A fresh database with all migrations applied, dropped when this value is.
pub struct TestDatabase {
    name: String,
    admin: PgConnectOptions,
    options: PgConnectOptions,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates a uniquely named database from the template of the current
    /// migration set (building the template first if this is the first test
    /// on this server with these migrations). Panics if the server is not
    /// reachable: a test cannot do anything useful without it.
    pub async fn new() -> TestDatabase {
        let admin = admin_options();
        let template = template(&admin).await;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let created = async {
            let mut conn = PgConnection::connect_with(&admin).await?;
            if let Err(error) = create_database(&mut conn, &name, Some(template)).await {
                // A process with another migration set dropped our template
                // as stale while we were running: build it again, once.
                if error.as_database_error().and_then(|e| e.code()).as_deref() != Some("3D000") {
                    return Err(error);
                }
                ensure_template(&admin, template).await.map_err(|e| {
                    sqlx::Error::Protocol(format!("rebuilding template {template}: {e}"))
                })?;
                create_database(&mut conn, &name, Some(template)).await?;
            }
            conn.close().await?;
            let options = admin.clone().database(&name);
            let pool = PgPoolOptions::new()
                .max_connections(POOL_SIZE)
                .connect_with(options.clone())
                .await?;
            Ok::<_, sqlx::Error>((options, pool))
        };
        let (options, pool) = created
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        TestDatabase {
            name,
            admin,
            options,
            pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database's name (`test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for the database, for code under test that takes its
    /// configuration as a URL.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// A new database copied from this one (`CREATE DATABASE ... TEMPLATE`),
    /// for benchmarks that seed a large store once and run on fresh copies.
    /// PostgreSQL copies only a database nobody is connected to, so this
    /// closes this value's pool for good: use [`Self::connect_options`]
    /// afterwards.
    pub async fn copy(&self) -> Result<TestDatabase, sqlx::Error> {
        self.pool.close().await;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&self.admin).await?;
        create_database(&mut conn, &name, Some(&self.name)).await?;
        conn.close().await?;
        let options = self.admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options.clone())
            .await?;
        Ok(TestDatabase {
            name,
            admin: self.admin.clone(),
            options,
            pool,
        })
    }

    /// A copy of a database that `build` filled once, kept on the server for
    /// the next run: benchmark stores take minutes to fill and seconds to
    /// copy. The kept database is named after the migration set, `family`
    /// and `variant` (together at most 30 characters); building a new one
    /// drops those of the same family with another variant, and those of
    /// another migration set, so a server keeps one per family. Returns the
    /// copy and whether the kept database was already there.
    pub async fn cached<F, Fut>(
        family: &str,
        variant: &str,
        build: F,
    ) -> Result<(TestDatabase, bool), BoxError>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: std::future::Future<Output = Result<(), BoxError>>,
    {
        let admin = admin_options();
        let template = template(&admin).await;
        let hash = template.trim_start_matches(TEMPLATE_PREFIX);
        let generation = format!("{CACHE_PREFIX}{hash}_");
        let name = format!("{generation}{family}_{variant}");
        // PostgreSQL silently truncates longer names, and two would collide.
        if name.len() > 63 || family.contains('_') {
            return Err(format!(
                "cache name {name:?}: family and variant must be short, family without '_'"
            )
            .into());
        }
        let mut conn = PgConnection::connect_with(&admin).await?;
        let found = database_exists(&mut conn, &name).await?;
        if !found {
            // Built under a name of its own and renamed when complete, so a
            // kept database is never one whose build was interrupted.
            let building = format!("{CACHE_PREFIX}building");
            drop_database(&mut conn, &building, true).await?;
            create_database(&mut conn, &building, Some(template)).await?;
            let pool = PgPoolOptions::new()
                .max_connections(POOL_SIZE)
                .connect_with(admin.clone().database(&building))
                .await?;
            let built = build(pool.clone()).await;
            pool.close().await;
            built?;
            sqlx::query(AssertSqlSafe(format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote(&building),
                quote(&name)
            )))
            .execute(&mut conn)
            .await?;
            let stale: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database
                  WHERE starts_with(datname, $1) AND datname <> $2
                    AND (NOT starts_with(datname, $3) OR starts_with(datname, $4))",
            )
            .bind(CACHE_PREFIX)
            .bind(&name)
            .bind(&generation)
            .bind(format!("{generation}{family}_"))
            .fetch_all(&mut conn)
            .await?;
            for stale in stale {
                let _ = drop_database(&mut conn, &stale, true).await;
            }
        }
        let copy = format!("test_{}", uuid::Uuid::new_v4().simple());
        create_database(&mut conn, &copy, Some(&name)).await?;
        conn.close().await?;
        let options = admin.clone().database(&copy);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options.clone())
            .await?;
        Ok((
            TestDatabase {
                name: copy,
                admin,
                options,
                pool,
            },
            found,
        ))
    }

    /// Connection options for the database, for a pool of another size.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::env::var_os("SKILEEZ_TEST_KEEP_DB").is_some() {
            eprintln!("keeping test database {}", self.name);
            return;
        }
        // Drop cannot await, and may run inside the test's runtime, where
        // blocking on another future would panic: a short-lived thread with
        // its own runtime does the work. `WITH (FORCE)` ends the connections
        // of the pool this value still holds.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || -> Result<(), BoxError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect_with(&admin).await?;
                drop_database(&mut conn, &name, true).await?;
                conn.close().await?;
                Ok(())
            })
        })
        .join();
        // Never panic here: a panic while a failed test unwinds aborts the
        // whole test binary and hides the failure.
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!("cannot drop test database {}: thread panicked", self.name),
        }
    }
}

fn admin_options() -> PgConnectOptions {
    let url = std::env::var("SKILEEZ_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("invalid test database URL {url:?}: {e}"))
        .application_name("skileez-testkit")
}

/// The template's name for the current migration set; built at most once per
/// process, and once per server while the migrations stay the same.
async fn template(admin: &PgConnectOptions) -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            ensure_template(admin, name)
                .await
                .unwrap_or_else(|e| panic!("cannot build template database {name}: {e}"));
            name.to_owned()
        })
        .await
}

/// `skileez_tpl_<hash of every migration's version and checksum>`: a changed,
/// added or removed migration gives a new template, and tests never run
/// against a schema that is out of date.
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        // FNV-1a: stable across Rust versions and processes, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for migration in MIGRATOR.iter() {
            feed(&migration.version.to_le_bytes());
            feed(&migration.checksum);
        }
        format!("{TEMPLATE_PREFIX}{hash:016x}")
    })
}

/// Builds the template unless it exists. The build happens under a name of its
/// own and is renamed at the end, so a template that exists is complete even
/// if an earlier build crashed half-way.
async fn ensure_template(admin: &PgConnectOptions, name: &str) -> Result<(), BoxError> {
    let mut conn = PgConnection::connect_with(admin).await?;
    if database_exists(&mut conn, name).await? {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut conn)
        .await?;
    let built = build_template(&mut conn, admin, name).await;
    // Closing the connection would release the lock as well; unlocking first
    // lets the next process go without waiting for the close.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut conn)
        .await;
    conn.close().await?;
    built
}

async fn build_template(
    conn: &mut PgConnection,
    admin: &PgConnectOptions,
    name: &str,
) -> Result<(), BoxError> {
    // Another process may have built it while this one waited for the lock.
    if database_exists(conn, name).await? {
        return Ok(());
    }
    let building = format!("{name}_building");
    drop_database(conn, &building, true).await?;
    create_database(conn, &building, None).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin.clone().database(&building))
        .await?;
    let migrated = MIGRATOR.run(&pool).await;
    // Cloning needs the template free of connections.
    pool.close().await;
    migrated?;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote(&building),
        quote(name)
    )))
    .execute(&mut *conn)
    .await?;
    drop_stale_templates(conn, name).await;
    Ok(())
}

/// Templates of older migration sets only take space. Best effort: one that a
/// test process of an older build is still cloning makes the drop wait for the
/// clone, one that has connections makes it fail, and either is fine.
async fn drop_stale_templates(conn: &mut PgConnection, current: &str) {
    let stale: Vec<String> = match sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND datname <> $2",
    )
    .bind(TEMPLATE_PREFIX)
    .bind(current)
    .fetch_all(&mut *conn)
    .await
    {
        Ok(stale) => stale,
        Err(_) => return,
    };
    for name in stale {
        let _ = drop_database(conn, &name, false).await;
    }
}

async fn database_exists(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
}

async fn create_database(
    conn: &mut PgConnection,
    name: &str,
    template: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut sql = format!("CREATE DATABASE {}", quote(name));
    if let Some(template) = template {
        sql.push_str(" TEMPLATE ");
        sql.push_str(&quote(template));
    }
    sqlx::query(AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

async fn drop_database(
    conn: &mut PgConnection,
    name: &str,
    force: bool,
) -> Result<(), sqlx::Error> {
    let force = if force { " WITH (FORCE)" } else { "" };
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {}{force}",
        quote(name)
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// Database names are identifiers and cannot be bound as parameters.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
