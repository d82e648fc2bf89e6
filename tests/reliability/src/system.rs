//! One whole system for a scenario: a private PostgreSQL, NATS (one server
//! or a 3-node cluster), a real SMTP server, optional fault proxies in front
//! of PostgreSQL and NATS, and `instances` processes of each service.

use std::time::Duration;

use skileez_testkit::nats::TestNats;

use crate::load::{self, Client, SECRET};
use crate::nats_cluster::NatsCluster;
use crate::postgres::PrivatePostgres;
use crate::process::free_port;
use crate::proxy::FaultProxy;
use crate::services::{Kind, ServiceProcess};
use crate::smtp::TestSmtp;

pub enum Nats {
    Single(TestNats),
    Cluster(NatsCluster),
}

impl Nats {
    pub fn url(&self) -> String {
        match self {
            Nats::Single(nats) => nats.url(),
            Nats::Cluster(cluster) => cluster.url(),
        }
    }

    pub fn single(&mut self) -> &mut TestNats {
        match self {
            Nats::Single(nats) => nats,
            Nats::Cluster(_) => panic!("not a single server"),
        }
    }

    pub fn cluster(&mut self) -> &mut NatsCluster {
        match self {
            Nats::Cluster(cluster) => cluster,
            Nats::Single(_) => panic!("not a cluster"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Processes of each service (1 or 2).
    pub instances: usize,
    pub cluster: bool,
    pub proxy_postgres: bool,
    pub proxy_nats: bool,
}

pub struct System {
    pub pg: PrivatePostgres,
    pub nats: Nats,
    pub smtp: TestSmtp,
    pub pg_proxy: Option<FaultProxy>,
    pub nats_proxy: Option<FaultProxy>,
    pub scheduling: Vec<ServiceProcess>,
    pub timers: Vec<ServiceProcess>,
    pub notifications: Vec<ServiceProcess>,
    pub scheduling_ports: Vec<u16>,
    pub replicas: usize,
    logs: Option<tempfile::TempDir>,
}

impl Drop for System {
    /// The services' logs stay when the test failed, or when
    /// `SKILEEZ_RELIABILITY_KEEP_LOGS` is set.
    fn drop(&mut self) {
        let keep =
            std::thread::panicking() || std::env::var_os("SKILEEZ_RELIABILITY_KEEP_LOGS").is_some();
        if let (true, Some(logs)) = (keep, self.logs.take()) {
            eprintln!("services' logs kept in {}", logs.keep().display());
        }
    }
}

/// Seconds-long lifecycles: ready 2 s before the start, missed 2 s after,
/// the hour reminder 6 s before (the day one, 20 s before, has passed at
/// booking for calls booked 8 s ahead, so it is never created).
const POLICY: &[(&str, &str)] = &[
    ("SKILEEZ_MIN_NOTICE", "2s"),
    ("SKILEEZ_READY_LEAD", "2s"),
    ("SKILEEZ_MISSED_AFTER", "2s"),
    ("SKILEEZ_OVERRUN_GRACE", "1s"),
    ("SKILEEZ_RESCHEDULE_CUTOFF", "2s"),
    ("SKILEEZ_LATE_CANCEL_WINDOW", "30s"),
    ("SKILEEZ_REMINDER_LEADS", "20s,6s"),
    ("SKILEEZ_START_GRANULARITY", "1s"),
];

impl System {
    pub async fn start(options: Options) -> System {
        let instances = options.instances.max(1);
        let (pg, smtp) = tokio::join!(PrivatePostgres::start(), TestSmtp::start());
        let mut nats = if options.cluster {
            Nats::Cluster(NatsCluster::start().await)
        } else {
            Nats::Single(TestNats::new().await)
        };
        let pg_proxy = if options.proxy_postgres {
            Some(FaultProxy::start(pg.port()).await)
        } else {
            None
        };
        let nats_proxy = if options.proxy_nats {
            Some(FaultProxy::start(nats.single().port()).await)
        } else {
            None
        };
        let logs = tempfile::Builder::new()
            .prefix("skileez-reliability-logs-")
            .tempdir()
            .expect("log directory");
        let mut system = System {
            pg,
            nats,
            smtp,
            pg_proxy,
            nats_proxy,
            scheduling: Vec::new(),
            timers: Vec::new(),
            notifications: Vec::new(),
            scheduling_ports: (0..instances).map(|_| free_port()).collect(),
            replicas: if options.cluster { 3 } else { 1 },
            logs: Some(logs),
        };
        for i in 0..instances {
            let name = format!("scheduling-{i}");
            let env = system.env(Kind::Scheduling, i);
            let log = system.log_dir().join(format!("{name}.log"));
            system
                .scheduling
                .push(ServiceProcess::start(&name, Kind::Scheduling, env, log));
        }
        system.wait_for_streams().await;
        for i in 0..instances {
            for kind in [Kind::Timers, Kind::Notifications] {
                let name = format!("{}-{i}", kind.arg());
                let env = system.env(kind, i);
                let log = system.log_dir().join(format!("{name}.log"));
                let process = ServiceProcess::start(&name, kind, env, log);
                match kind {
                    Kind::Timers => system.timers.push(process),
                    _ => system.notifications.push(process),
                }
            }
        }
        system
    }

    /// Waits until scheduling has set up the streams (and, in a cluster,
    /// `CALL_EVENTS` has a leader), so that the load starts on a system
    /// that is up. A fresh 3-node cluster with `sync_interval: always` on a
    /// busy machine can take tens of seconds before it creates replicated
    /// streams; that start-up is not what a scenario measures.
    async fn wait_for_streams(&self) {
        let urls: Vec<String> = self.nats.url().split(',').map(str::to_owned).collect();
        let client = async_nats::connect(urls).await.expect("connect to NATS");
        let js = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(stream) = js.get_stream("CALL_EVENTS").await {
                let info = stream.cached_info();
                let led = info.cluster.as_ref().is_none_or(|c| c.leader.is_some());
                if led && info.config.num_replicas == self.replicas {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "CALL_EVENTS not set up in 120 s; logs in {}",
                self.log_dir().display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the services connect to: through the proxies when there are.
    pub fn database_url(&self) -> String {
        match &self.pg_proxy {
            Some(proxy) => format!("postgres://postgres@127.0.0.1:{}/skileez", proxy.port()),
            None => self.pg.url(),
        }
    }

    pub fn nats_url(&self) -> String {
        match &self.nats_proxy {
            Some(proxy) => format!("nats://127.0.0.1:{}", proxy.port()),
            None => self.nats.url(),
        }
    }

    fn env(&self, kind: Kind, i: usize) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), self.database_url()),
            ("NATS_URL".into(), self.nats_url()),
            ("SKILEEZ_JWT_SECRET".into(), SECRET.into()),
            ("SKILEEZ_STREAM_REPLICAS".into(), self.replicas.to_string()),
            ("SKILEEZ_RATE_LIMIT_PER_MINUTE".into(), "0".into()),
            ("SKILEEZ_DATABASE_MAX_CONNECTIONS".into(), "8".into()),
        ];
        env.extend(
            POLICY
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let port = self.scheduling_ports[i % self.scheduling_ports.len()];
        let own: &[(&str, String)] = match kind {
            Kind::Scheduling => &[
                ("SKILEEZ_GRPC_ADDR", format!("127.0.0.1:{port}")),
                ("SKILEEZ_FEED_POLL_INTERVAL", "50ms".into()),
                ("SKILEEZ_INGEST", "false".into()),
            ],
            Kind::Timers => &[
                ("SKILEEZ_SCHEDULING_URL", format!("http://127.0.0.1:{port}")),
                ("SKILEEZ_TIMERS_INSTANCE", format!("timers-{i}")),
                ("SKILEEZ_TIMERS_DATABASE_MAX_CONNECTIONS", "6".into()),
                ("SKILEEZ_TIMERS_LEASE", "5s".into()),
                ("SKILEEZ_TIMERS_MAX_ATTEMPTS", "1000".into()),
            ],
            Kind::Notifications => &[
                ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:0".into()),
                ("SKILEEZ_SMTP_URL", self.smtp.url()),
                ("SKILEEZ_SMTP_TIMEOUT", "5s".into()),
                ("SKILEEZ_MAIL_FROM", "Skileez <noreply@skileez.test>".into()),
                ("SKILEEZ_DELIVERY_POLL", "200ms".into()),
                ("SKILEEZ_DELIVERY_BACKOFF", "300ms,3s".into()),
                ("SKILEEZ_DELIVERY_LEASE", "10s".into()),
                ("SKILEEZ_DELIVERY_MAX_ATTEMPTS", "1000".into()),
            ],
        };
        env.extend(own.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }

    pub fn client(&self) -> Client {
        Client::new(&self.scheduling_ports)
    }

    pub fn services(&mut self) -> impl Iterator<Item = &mut ServiceProcess> {
        self.scheduling
            .iter_mut()
            .chain(self.timers.iter_mut())
            .chain(self.notifications.iter_mut())
    }

    /// Every service process that died on its own (not killed by the test)
    /// is a failure of the scenario: their names.
    pub fn crashed(&mut self) -> Vec<String> {
        self.services()
            .filter_map(|s| (s.pid().is_some() && !s.is_running()).then(|| s.name.clone()))
            .collect()
    }

    pub fn log_dir(&self) -> &std::path::Path {
        self.logs.as_ref().expect("the log directory").path()
    }

    /// A pool on the real server (not through the proxy), for the checks.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.pg.url())
            .await
            .expect("check pool")
    }
}

/// The load's size: `SKILEEZ_RELIABILITY_SIZE=small` (the default, what CI
/// runs) or `full` (by hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Small,
    Full,
}

pub fn size() -> Size {
    match std::env::var("SKILEEZ_RELIABILITY_SIZE").as_deref() {
        Ok("full") => Size::Full,
        Ok("small") | Err(_) => Size::Small,
        Ok(other) => panic!("SKILEEZ_RELIABILITY_SIZE must be small or full, not {other:?}"),
    }
}

/// A load of `seconds` (small) or `full_seconds` (full) at `rate` bookings
/// a second (full: twice the rate).
pub fn load_config(tag: &str, seconds: u64, full_seconds: u64, rate: f64) -> load::LoadConfig {
    let (seconds, rate) = match size() {
        Size::Small => (seconds, rate),
        Size::Full => (full_seconds, rate * 2.0),
    };
    let bookings = (seconds as f64 * rate).ceil() as usize;
    load::LoadConfig {
        tag: tag.to_owned(),
        bookings,
        duration: Duration::from_secs(seconds),
        // A coach comes round again every ~30 s, after its last call ended.
        coaches: ((rate * 30.0).ceil() as usize).max(4),
        lead: Duration::from_secs(8),
        give_up: Duration::from_secs(60),
    }
}

/// How many rounds of a fault pattern `period_seconds` long fit in a load of
/// `duration` (at least one).
pub fn cycles(duration: Duration, period_seconds: u64) -> u64 {
    (duration.as_secs() / period_seconds).max(1)
}
