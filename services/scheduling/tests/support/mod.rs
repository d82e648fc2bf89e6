//! The scheduling service started in-process on a free port against a fresh
//! PostgreSQL database, with clients for each role.

#![allow(dead_code)] // each test binary uses a different part of it

use std::{collections::HashMap, net::SocketAddr, time::Duration as StdDuration};

use chrono::{DateTime, Duration, DurationRound, Utc};
use skileez_domain::{ActorRole, Policy};
use skileez_proto::scheduling as pb;
use skileez_scheduling::{Application, Config, auth::TokenIssuer};
use skileez_testkit::{TestDatabase, nats::TestNats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};
use tonic_types::StatusExt;

pub const SECRET: &str = "test-secret-test-secret-test-secret";

pub type Authed = InterceptedService<Channel, Bearer>;
pub type Scheduling = pb::scheduling_service_client::SchedulingServiceClient<Authed>;
pub type Timers = pb::call_timer_service_client::CallTimerServiceClient<Authed>;
pub type Directory = pb::directory_service_client::DirectoryServiceClient<Authed>;
pub type Hours = pb::availability_service_client::AvailabilityServiceClient<Authed>;

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

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDatabase,
    /// The private NATS server, for apps spawned with one.
    pub nats: Option<TestNats>,
    pub policy: Policy,
    pub issuer: TokenIssuer,
    channel: Channel,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
}

/// A policy with lead times of seconds, so a whole lifecycle runs in a test.
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

impl TestApp {
    /// The service with the SPEC's default policy.
    pub async fn spawn() -> Self {
        Self::spawn_with(Policy::default()).await
    }

    pub async fn spawn_with(policy: Policy) -> Self {
        Self::spawn_full(policy, None).await
    }

    /// The service with its relay and directory ingest on a private NATS.
    pub async fn spawn_with_nats(policy: Policy) -> Self {
        let nats = TestNats::new().await;
        Self::spawn_full(policy, Some(nats)).await
    }

    async fn spawn_full(policy: Policy, nats: Option<TestNats>) -> Self {
        Self::spawn_with_env(policy, nats, &[]).await
    }

    /// The service with `extra` variables on top of the tests' own (TLS,
    /// limits).
    pub async fn spawn_with_env(
        policy: Policy,
        nats: Option<TestNats>,
        extra: &[(&'static str, String)],
    ) -> Self {
        // Logs of the service show with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let db = TestDatabase::new().await;
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("SKILEEZ_JWT_SECRET", SECRET.to_owned()),
            ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url()),
            ("SKILEEZ_FEED_POLL_INTERVAL", "50ms".to_owned()),
            ("SKILEEZ_RELAY", nats.is_some().to_string()),
            ("SKILEEZ_INGEST", nats.is_some().to_string()),
            (
                "NATS_URL",
                nats.as_ref().map(TestNats::url).unwrap_or_default(),
            ),
            // Tests send bursts on purpose (races, retries); the rate limit
            // has a test of its own.
            ("SKILEEZ_RATE_LIMIT_PER_MINUTE", "0".to_owned()),
        ]);
        vars.extend(extra.iter().cloned());
        let mut config = Config::from_lookup(|name| vars.get(name).cloned()).expect("test config");
        config.policy = policy.clone();
        let issuer = TokenIssuer::from_config(&config.jwt).expect("HS256 config");
        let app = Application::build_with_pool(config, db.pool().clone())
            .await
            .expect("service builds");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run(token).await.expect("service runs");
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect_lazy();
        Self {
            addr,
            db,
            nats,
            policy,
            issuer,
            channel,
            shutdown,
            server: Some(server),
        }
    }

    pub fn token(&self, sub: &str, role: ActorRole) -> String {
        self.issuer.mint(sub, role, StdDuration::from_secs(3600))
    }

    fn bearer(&self, sub: &str, role: ActorRole) -> Bearer {
        Bearer(Some(self.token(sub, role)))
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn scheduling_with(&self, bearer: Option<String>) -> Scheduling {
        pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(
            self.channel(),
            Bearer(bearer),
        )
    }

    pub fn student(&self, id: &str) -> Scheduling {
        pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(
            self.channel(),
            self.bearer(id, ActorRole::Student),
        )
    }

    pub fn coach(&self, id: &str) -> Scheduling {
        pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(
            self.channel(),
            self.bearer(id, ActorRole::Coach),
        )
    }

    pub fn admin(&self) -> Scheduling {
        pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(
            self.channel(),
            self.bearer("admin-1", ActorRole::Admin),
        )
    }

    pub fn timers(&self) -> Timers {
        pb::call_timer_service_client::CallTimerServiceClient::with_interceptor(
            self.channel(),
            self.bearer("timers", ActorRole::Service),
        )
    }

    pub fn directory(&self) -> Directory {
        pb::directory_service_client::DirectoryServiceClient::with_interceptor(
            self.channel(),
            self.bearer("admin-1", ActorRole::Admin),
        )
    }

    /// The availability API as `sub` with `role`.
    pub fn hours(&self, sub: &str, role: ActorRole) -> Hours {
        pb::availability_service_client::AvailabilityServiceClient::with_interceptor(
            self.channel(),
            self.bearer(sub, role),
        )
    }

    /// The availability API with this bearer token, or none.
    pub fn hours_with(&self, bearer: Option<String>) -> Hours {
        pb::availability_service_client::AvailabilityServiceClient::with_interceptor(
            self.channel(),
            Bearer(bearer),
        )
    }

    /// Publishes `availability` for `coach`, as the coach.
    pub async fn publish_hours(
        &self,
        coach: &str,
        availability: pb::Availability,
    ) -> pb::SetCoachAvailabilityResponse {
        self.hours(coach, ActorRole::Coach)
            .set_coach_availability(pb::SetCoachAvailabilityRequest {
                request_id: String::new(),
                coach_id: coach.to_owned(),
                availability: Some(availability),
            })
            .await
            .expect("hours published")
            .into_inner()
    }

    pub async fn add_participant(&self, id: &str, zone: &str) {
        self.directory()
            .upsert_participant(pb::UpsertParticipantRequest {
                participant: Some(pb::Participant {
                    user_id: id.to_owned(),
                    display_name: format!("Name of {id}"),
                    email: format!("{id}@example.com"),
                    time_zone: zone.to_owned(),
                    locale: "en-US".to_owned(),
                    email_enabled: true,
                }),
            })
            .await
            .expect("participant upserted");
    }

    pub async fn add_contract(
        &self,
        id: &str,
        student: &str,
        coach: &str,
        status: pb::ContractStatus,
        minutes: u32,
        total: Option<u32>,
    ) {
        self.directory()
            .upsert_contract(pb::UpsertContractRequest {
                contract: Some(pb::Contract {
                    contract_id: id.to_owned(),
                    student_id: student.to_owned(),
                    coach_id: coach.to_owned(),
                    status: status as i32,
                    session_minutes: minutes,
                    sessions: Some(match total {
                        Some(n) => pb::contract::Sessions::SessionsTotal(n),
                        None => pb::contract::Sessions::Unlimited(true),
                    }),
                    sessions_used: 0,
                }),
            })
            .await
            .expect("contract upserted");
    }

    pub async fn book_free(
        &self,
        student: &str,
        coach: &str,
        start: DateTime<Utc>,
    ) -> Result<pb::Call, Status> {
        self.student(student)
            .schedule_free_consultation(free_request(student, coach, start))
            .await
            .map(|r| r.into_inner().call.expect("call in answer"))
    }

    pub async fn book_paid(
        &self,
        student: &str,
        coach: &str,
        contract: &str,
        start: DateTime<Utc>,
    ) -> Result<pb::Call, Status> {
        self.student(student)
            .schedule_paid_session(pb::SchedulePaidSessionRequest {
                request_id: String::new(),
                student_id: student.to_owned(),
                coach_id: coach.to_owned(),
                contract_id: contract.to_owned(),
                start: Some(utc(start)),
                note: String::new(),
            })
            .await
            .map(|r| r.into_inner().call.expect("call in answer"))
    }

    /// Stops the service and waits until it has drained.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("service task");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn free_request(
    student: &str,
    coach: &str,
    start: DateTime<Utc>,
) -> pb::ScheduleFreeConsultationRequest {
    pb::ScheduleFreeConsultationRequest {
        request_id: String::new(),
        student_id: student.to_owned(),
        coach_id: coach.to_owned(),
        start: Some(utc(start)),
        note: String::new(),
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

pub fn local(date_time: &str, zone: &str, fold: Option<pb::Fold>) -> pb::StartTime {
    pb::StartTime {
        time: Some(pb::start_time::Time::Local(pb::LocalDateTime {
            date_time: date_time.to_owned(),
            time_zone: zone.to_owned(),
            fold: fold.map(|f| f as i32),
        })),
    }
}

/// A whole-hour instant `days` ahead at `hour`:`minute` UTC, well inside the
/// default notice and horizon.
pub fn day_at(days: i64, hour: u32, minute: u32) -> DateTime<Utc> {
    (Utc::now() + Duration::days(days))
        .duration_trunc(Duration::days(1))
        .expect("truncate")
        + Duration::hours(i64::from(hour))
        + Duration::minutes(i64::from(minute))
}

/// The next whole second at least `ahead` from now.
pub fn seconds_ahead(ahead: i64) -> DateTime<Utc> {
    (Utc::now() + Duration::seconds(ahead) + Duration::milliseconds(999))
        .duration_trunc(Duration::seconds(1))
        .expect("truncate")
}

pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

pub fn fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

pub fn card(call: &pb::Call) -> &skileez_proto::call::CallCard {
    call.card.as_ref().expect("card")
}

pub fn status_of(call: &pb::Call) -> skileez_proto::call::CallStatus {
    skileez_proto::call::CallStatus::try_from(card(call).status).expect("status")
}

#[track_caller]
pub fn assert_code(result: &Result<impl std::fmt::Debug, Status>, code: Code) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{status:?}"),
        Ok(value) => panic!("expected {code:?}, got OK {value:?}"),
    }
}

/// Sleeps until `at` (no-op if it has passed).
pub async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

impl Bearer {
    pub fn student(app: &TestApp, id: &str) -> Self {
        Bearer(Some(app.token(id, ActorRole::Student)))
    }

    pub fn coach(app: &TestApp, id: &str) -> Self {
        Bearer(Some(app.token(id, ActorRole::Coach)))
    }
}
