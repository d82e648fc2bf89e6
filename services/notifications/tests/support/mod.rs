//! The notifications service started in-process, as in production: beside
//! the scheduling service (with its relay) on one fresh database, a private
//! NATS server and a real SMTP server, with clients for each role.

#![allow(dead_code)] // each test binary uses a different part of it

pub mod http;
pub mod smtp;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, Utc};
use skileez_domain::{ActorRole, Policy};
use skileez_notifications::Config;
use skileez_proto::{call as ev, notifications as pbn, scheduling as pb};
use skileez_scheduling::auth::TokenIssuer;
use skileez_testkit::{TestDatabase, nats::TestNats};
use smtp::TestSmtp;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};

pub const SECRET: &str = "test-secret-test-secret-test-secret";
/// The web app's origin the services allow (gRPC-Web CORS).
pub const APP_ORIGIN: &str = "http://app.skileez.test:5173";

pub type Authed = InterceptedService<Channel, Bearer>;
pub type Scheduling = pb::scheduling_service_client::SchedulingServiceClient<Authed>;
pub type Timers = pb::call_timer_service_client::CallTimerServiceClient<Authed>;
pub type Notifications = pbn::notification_service_client::NotificationServiceClient<Authed>;
pub type Deliveries = pbn::delivery_service_client::DeliveryServiceClient<Authed>;

#[derive(Clone)]
pub struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("bad token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// A service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    /// The WebSocket (notifications only).
    pub ws_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl Running {
    /// Cancels it and waits until it has drained.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("service task");
        }
    }

    /// Ends it without a drain, like a crash of the process: its task is
    /// aborted mid-flight.
    pub fn crash(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
        self.shutdown.cancel();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How a test wants the notifications service configured, on top of test
/// defaults (fast polls and retries).
#[derive(Clone, Default)]
pub struct Options {
    pub policy: Policy,
    pub vars: Vec<(&'static str, String)>,
}

pub struct TestEnv {
    pub db: TestDatabase,
    pub nats: TestNats,
    pub smtp: TestSmtp,
    pub scheduling: Running,
    pub instances: Vec<Running>,
    pub issuer: TokenIssuer,
    pub options: Options,
    scheduling_channel: Channel,
}

/// A policy with lead times of seconds, so reminders come within a test.
pub fn fast_policy() -> Policy {
    Policy {
        min_notice: Duration::seconds(2),
        ready_lead: Duration::seconds(2),
        missed_after: Duration::seconds(2),
        overrun_grace: Duration::seconds(1),
        reschedule_cutoff: Duration::seconds(2),
        late_cancel_window: Duration::seconds(30),
        reminder_day_lead: Duration::seconds(20),
        reminder_hour_lead: Duration::seconds(10),
        start_granularity: Duration::seconds(1),
        ..Policy::default()
    }
}

impl TestEnv {
    /// Scheduling and one notifications instance.
    pub async fn start() -> TestEnv {
        Self::start_with(Options::default(), 1).await
    }

    pub async fn start_with(options: Options, instances: usize) -> TestEnv {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let (db, nats, smtp) =
            tokio::join!(TestDatabase::new(), TestNats::new(), TestSmtp::start());
        let scheduling = start_scheduling(&db, &nats, options.policy.clone()).await;
        let issuer = TokenIssuer::new(SECRET, "skileez", "skileez-scheduling");
        let scheduling_channel = Channel::from_shared(format!("http://{}", scheduling.addr))
            .expect("url")
            .connect_lazy();
        let mut env = TestEnv {
            db,
            nats,
            smtp,
            scheduling,
            instances: Vec::new(),
            issuer,
            options,
            scheduling_channel,
        };
        for _ in 0..instances {
            let instance = env.start_instance().await;
            env.instances.push(instance);
        }
        env
    }

    /// The notifications service's environment variables here.
    pub fn vars(&self) -> HashMap<&'static str, String> {
        let mut vars: HashMap<&'static str, String> = HashMap::from([
            ("SKILEEZ_JWT_SECRET", SECRET.to_owned()),
            ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", self.db.url()),
            ("SKILEEZ_DATABASE_MAX_CONNECTIONS", "8".to_owned()),
            ("NATS_URL", self.nats.url()),
            ("SKILEEZ_SMTP_URL", self.smtp.url()),
            ("SKILEEZ_SMTP_TIMEOUT", "5s".to_owned()),
            (
                "SKILEEZ_MAIL_FROM",
                "Skileez <noreply@skileez.test>".to_owned(),
            ),
            ("SKILEEZ_DELIVERY_POLL", "200ms".to_owned()),
            ("SKILEEZ_DELIVERY_BACKOFF", "300ms,3s".to_owned()),
            ("SKILEEZ_DELIVERY_LEASE", "15s".to_owned()),
            ("SKILEEZ_WATCH_POLL", "2s".to_owned()),
            ("SKILEEZ_WS_ADDR", "127.0.0.1:0".to_owned()),
            ("SKILEEZ_CORS_ORIGINS", APP_ORIGIN.to_owned()),
        ]);
        for (name, value) in &self.options.vars {
            vars.insert(name, value.clone());
        }
        vars
    }

    /// The notifications service's configuration for this environment.
    pub fn config(&self) -> Config {
        let vars = self.vars();
        Config::from_lookup(|name| vars.get(name).cloned()).expect("test config")
    }

    /// Runs the `skileez-notifications` binary as a process of its own, for
    /// tests that kill it (SIGKILL: no drain, no last acks).
    pub fn spawn_process(&self) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_skileez-notifications"))
            .envs(self.vars())
            // Side by side with other tests: no fixed admin port.
            .env("SKILEEZ_METRICS_ADDR", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("skileez-notifications runs")
    }

    /// Starts one more notifications instance (not added to `instances`).
    pub async fn start_instance(&self) -> Running {
        self.start_instance_with(&[]).await
    }

    /// Starts one more notifications instance with these variables changed
    /// (an empty value unsets one).
    pub async fn start_instance_with(&self, changes: &[(&'static str, &str)]) -> Running {
        let mut vars = self.vars();
        for (name, value) in changes {
            vars.insert(name, (*value).to_owned());
        }
        let config = Config::from_lookup(|name| vars.get(name).cloned().filter(|v| !v.is_empty()))
            .expect("test config");
        let app =
            skileez_notifications::Application::build_with_pool(config, self.db.pool().clone())
                .await
                .expect("notifications builds");
        let addr = app.local_addr();
        let ws_addr = app.ws_addr();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            app.run(token).await.expect("notifications runs");
        });
        Running {
            addr,
            ws_addr,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn token(&self, sub: &str, role: ActorRole) -> String {
        self.issuer.mint(sub, role, StdDuration::from_secs(3600))
    }

    fn bearer(&self, sub: &str, role: ActorRole) -> Bearer {
        Bearer(Some(self.token(sub, role)))
    }

    fn notifications_channel(&self, instance: usize) -> Channel {
        Channel::from_shared(format!("http://{}", self.instances[instance].addr))
            .expect("url")
            .connect_lazy()
    }

    pub fn scheduling_as(&self, sub: &str, role: ActorRole) -> Scheduling {
        pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(
            self.scheduling_channel.clone(),
            self.bearer(sub, role),
        )
    }

    pub fn timers(&self) -> Timers {
        pb::call_timer_service_client::CallTimerServiceClient::with_interceptor(
            self.scheduling_channel.clone(),
            self.bearer("timers", ActorRole::Service),
        )
    }

    /// `user`'s NotificationService client on the first instance.
    pub fn notifications(&self, user: &str) -> Notifications {
        self.notifications_on(0, Some(self.token(user, ActorRole::Student)))
    }

    pub fn notifications_on(&self, instance: usize, token: Option<String>) -> Notifications {
        pbn::notification_service_client::NotificationServiceClient::with_interceptor(
            self.notifications_channel(instance),
            Bearer(token),
        )
    }

    pub fn deliveries_as(&self, sub: &str, role: ActorRole) -> Deliveries {
        pbn::delivery_service_client::DeliveryServiceClient::with_interceptor(
            self.notifications_channel(0),
            self.bearer(sub, role),
        )
    }

    pub fn admin_deliveries(&self) -> Deliveries {
        self.deliveries_as("admin-1", ActorRole::Admin)
    }

    /// Adds a participant to the directory, e-mail `<id>@example.com`.
    pub async fn add_participant(&self, id: &str, name: &str, zone: &str, locale: &str) {
        self.upsert_participant(id, name, &format!("{id}@example.com"), zone, locale, true)
            .await;
    }

    pub async fn upsert_participant(
        &self,
        id: &str,
        name: &str,
        email: &str,
        zone: &str,
        locale: &str,
        email_enabled: bool,
    ) {
        pb::directory_service_client::DirectoryServiceClient::with_interceptor(
            self.scheduling_channel.clone(),
            self.bearer("admin-1", ActorRole::Admin),
        )
        .upsert_participant(pb::UpsertParticipantRequest {
            participant: Some(pb::Participant {
                user_id: id.to_owned(),
                display_name: name.to_owned(),
                email: email.to_owned(),
                time_zone: zone.to_owned(),
                locale: locale.to_owned(),
                email_enabled,
            }),
        })
        .await
        .expect("participant upserted");
    }

    pub async fn book_free(&self, student: &str, coach: &str, start: DateTime<Utc>) -> pb::Call {
        self.scheduling_as(student, ActorRole::Student)
            .schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
                request_id: String::new(),
                student_id: student.to_owned(),
                coach_id: coach.to_owned(),
                start: Some(utc(start)),
                note: String::new(),
            })
            .await
            .expect("booked")
            .into_inner()
            .call
            .expect("call in answer")
    }

    pub async fn reschedule(&self, student: &str, call_id: &str, start: DateTime<Utc>) -> pb::Call {
        self.scheduling_as(student, ActorRole::Student)
            .reschedule_call(pb::RescheduleCallRequest {
                call_id: call_id.to_owned(),
                new_start: Some(utc(start)),
                ..Default::default()
            })
            .await
            .expect("rescheduled")
            .into_inner()
            .call
            .expect("new call")
    }

    pub async fn cancel(&self, by: &str, role: ActorRole, call_id: &str, reason: &str) {
        self.scheduling_as(by, role)
            .cancel_call(pb::CancelCallRequest {
                call_id: call_id.to_owned(),
                reason: reason.to_owned(),
                ..Default::default()
            })
            .await
            .expect("cancelled");
    }

    /// `CallTimerService.TriggerReminder` as the timer service would;
    /// whether an event was appended.
    pub async fn trigger_reminder(&self, call_id: &str, kind: ev::ReminderKind) -> bool {
        self.timers()
            .trigger_reminder(pb::TriggerReminderRequest {
                call_id: call_id.to_owned(),
                kind: kind as i32,
            })
            .await
            .expect("reminder answered")
            .into_inner()
            .applied
    }

    /// Deliveries as recorded, by (call, kind, recipient, channel).
    pub async fn delivery_rows(&self) -> Vec<DeliveryRow> {
        sqlx::query_as(
            "SELECT call_id::text, kind, recipient_id, channel, state, attempts, last_error,
                    invite_method, invite_sequence, message_id
             FROM notification_deliveries ORDER BY delivery_id",
        )
        .fetch_all(self.db.pool())
        .await
        .expect("deliveries")
    }

    /// Waits until `done` holds for the recorded deliveries.
    pub async fn wait_for_deliveries(
        &self,
        timeout: StdDuration,
        what: &str,
        done: impl Fn(&[DeliveryRow]) -> bool,
    ) -> Vec<DeliveryRow> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rows = self.delivery_rows().await;
            if done(&rows) {
                return rows;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what}; deliveries: {rows:#?}");
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
    }

    /// The in-app notifications stored for `user`, oldest first.
    pub async fn stored_notifications(&self, user: &str) -> Vec<(String, String, i64)> {
        sqlx::query_as(
            "SELECT call_id::text, kind, sequence FROM notifications WHERE user_id = $1 ORDER BY sequence",
        )
        .bind(user)
        .fetch_all(self.db.pool())
        .await
        .expect("notifications")
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub call_id: String,
    pub kind: String,
    pub recipient_id: String,
    pub channel: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub invite_method: Option<String>,
    pub invite_sequence: Option<i32>,
    pub message_id: Option<String>,
}

async fn start_scheduling(db: &TestDatabase, nats: &TestNats, policy: Policy) -> Running {
    let vars: HashMap<&str, String> = HashMap::from([
        ("SKILEEZ_JWT_SECRET", SECRET.to_owned()),
        ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url()),
        ("SKILEEZ_FEED_POLL_INTERVAL", "50ms".to_owned()),
        ("SKILEEZ_RELAY", "true".to_owned()),
        ("SKILEEZ_INGEST", "false".to_owned()),
        ("NATS_URL", nats.url()),
        ("SKILEEZ_CORS_ORIGINS", APP_ORIGIN.to_owned()),
        // Tests book in bursts; the rate limit has its own test.
        ("SKILEEZ_RATE_LIMIT_PER_MINUTE", "0".to_owned()),
    ]);
    let mut config = skileez_scheduling::Config::from_lookup(|name| vars.get(name).cloned())
        .expect("scheduling test config");
    config.policy = policy;
    let app = skileez_scheduling::Application::build_with_pool(config, db.pool().clone())
        .await
        .expect("scheduling builds");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        app.run(token).await.expect("scheduling runs");
    });
    Running {
        addr,
        ws_addr: None,
        shutdown,
        handle: Some(handle),
    }
}

pub fn utc(at: DateTime<Utc>) -> pb::StartTime {
    pb::StartTime {
        time: Some(pb::start_time::Time::Utc(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        })),
    }
}

/// A whole-hour instant `days` ahead at `hour`:`minute` UTC.
pub fn day_at(days: i64, hour: u32, minute: u32) -> DateTime<Utc> {
    (Utc::now() + Duration::days(days))
        .duration_trunc(Duration::days(1))
        .expect("truncate")
        + Duration::hours(i64::from(hour))
        + Duration::minutes(i64::from(minute))
}

/// The next whole second at least `ahead` seconds from now.
pub fn seconds_ahead(ahead: i64) -> DateTime<Utc> {
    (Utc::now() + Duration::seconds(ahead) + Duration::milliseconds(999))
        .duration_trunc(Duration::seconds(1))
        .expect("truncate")
}

pub fn card(call: &pb::Call) -> &ev::CallCard {
    call.card.as_ref().expect("card")
}

pub fn call_id(call: &pb::Call) -> String {
    card(call).call_id.clone()
}

/// Sleeps until `at` (no-op if it has passed).
pub async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// The parsed invite of a message part.
pub fn calendar(text: &str) -> icalendar::Calendar {
    text.parse()
        .unwrap_or_else(|e| panic!("not iCalendar ({e}):\n{text}"))
}

/// iCalendar's UTC form, `20250304T100000Z`.
pub fn ical_utc(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The call events in the stream so far (waits until there are `count`).
pub async fn stream_events(env: &TestEnv, count: usize) -> Vec<(String, ev::CallEvent)> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    use prost::Message;
    let client = async_nats::connect(env.nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("CALL_EVENTS").await.expect("stream");
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(StdDuration::from_secs(20), messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events in the stream", events.len()))
            .expect("open")
            .expect("message");
        events.push((
            message.subject.to_string(),
            ev::CallEvent::decode(message.payload.as_ref()).expect("a CallEvent"),
        ));
    }
    events
}

/// Publishes a call event to JetStream as the relay does, with `msg_id` as
/// the JetStream dedupe id (the relay uses the event id; a different one
/// gets a repeat past JetStream's duplicate window, as after a long crash).
pub async fn publish_event(env: &TestEnv, event: &ev::CallEvent, msg_id: &str) {
    use prost::Message;
    let client = async_nats::connect(env.nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let name = match &event.event {
        Some(ev::call_event::Event::Scheduled(_)) => "CallScheduled",
        Some(ev::call_event::Event::Rescheduled(_)) => "CallRescheduled",
        Some(ev::call_event::Event::ReminderDue(_)) => "CallReminderDue",
        Some(ev::call_event::Event::Ready(_)) => "CallReady",
        Some(ev::call_event::Event::ParticipantJoined(_)) => "ParticipantJoined",
        Some(ev::call_event::Event::Started(_)) => "CallStarted",
        Some(ev::call_event::Event::Ended(_)) => "CallEnded",
        Some(ev::call_event::Event::Cancelled(_)) => "CallCancelled",
        Some(ev::call_event::Event::Missed(_)) => "CallMissed",
        None => "Unknown",
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let subject = format!("skileez.call.v1.{name}.{}", event.call_id);
    // The stream may still be being created by a service starting up.
    for _ in 0..100 {
        if let Ok(ack) = js
            .publish_with_headers(
                subject.clone(),
                headers.clone(),
                event.encode_to_vec().into(),
            )
            .await
            && ack.await.is_ok()
        {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("cannot publish {subject}");
}

/// A call event made up by a test, for a call scheduling never saw.
pub struct Synthetic {
    pub call_id: String,
    pub chain_id: String,
    pub student: String,
    pub coach: String,
    pub start: DateTime<Utc>,
}

impl Synthetic {
    pub fn new(student: &str, coach: &str, start: DateTime<Utc>) -> Self {
        let call_id = uuid::Uuid::now_v7().to_string();
        Synthetic {
            chain_id: call_id.clone(),
            call_id,
            student: student.to_owned(),
            coach: coach.to_owned(),
            start,
        }
    }

    pub fn card(&self, version: u64, status: ev::CallStatus) -> ev::CallCard {
        let ts = |at: DateTime<Utc>| prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: 0,
        };
        ev::CallCard {
            call_id: self.call_id.clone(),
            kind: ev::CallKind::FreeConsultation as i32,
            student: Some(ev::Person {
                user_id: self.student.clone(),
                display_name: String::new(),
            }),
            coach: Some(ev::Person {
                user_id: self.coach.clone(),
                display_name: String::new(),
            }),
            start: Some(ts(self.start)),
            duration_minutes: 15,
            end: Some(ts(self.start + Duration::minutes(15))),
            status: status as i32,
            chain_id: self.chain_id.clone(),
            version,
            ..Default::default()
        }
    }

    pub fn event(
        &self,
        version: u64,
        status: ev::CallStatus,
        body: ev::call_event::Event,
    ) -> ev::CallEvent {
        ev::CallEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            call_id: self.call_id.clone(),
            stream_version: version,
            occurred_at: Some(prost_types::Timestamp {
                seconds: Utc::now().timestamp(),
                nanos: 0,
            }),
            actor: Some(ev::Actor {
                user_id: self.student.clone(),
                role: ev::ActorRole::Student as i32,
            }),
            card: Some(self.card(version, status)),
            event: Some(body),
            ..Default::default()
        }
    }

    pub fn scheduled(&self) -> ev::CallEvent {
        self.event(
            1,
            ev::CallStatus::Scheduled,
            ev::call_event::Event::Scheduled(ev::CallScheduled {
                kind: ev::CallKind::FreeConsultation as i32,
                student_id: self.student.clone(),
                coach_id: self.coach.clone(),
                chain_id: self.chain_id.clone(),
                duration_minutes: 15,
                ..Default::default()
            }),
        )
    }

    pub fn reminder(&self, version: u64, kind: ev::ReminderKind) -> ev::CallEvent {
        self.event(
            version,
            ev::CallStatus::Scheduled,
            ev::call_event::Event::ReminderDue(ev::CallReminderDue { kind: kind as i32 }),
        )
    }

    pub fn cancelled(&self, version: u64) -> ev::CallEvent {
        self.event(
            version,
            ev::CallStatus::Cancelled,
            ev::call_event::Event::Cancelled(ev::CallCancelled::default()),
        )
    }

    /// Writes the card of `version` to CALL_CARDS, as the relay does.
    pub async fn put_card(&self, env: &TestEnv, version: u64, status: ev::CallStatus) {
        use prost::Message;
        let client = async_nats::connect(env.nats.url()).await.expect("connect");
        let kv = async_nats::jetstream::new(client)
            .get_key_value("CALL_CARDS")
            .await
            .expect("bucket");
        kv.put(
            &self.call_id,
            self.card(version, status).encode_to_vec().into(),
        )
        .await
        .expect("card put");
    }
}
