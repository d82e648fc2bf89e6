//! The authorisation matrix of `docs/authorization.md` for the notifications
//! port: every RPC × every kind of caller → the one status it must answer.
//! NotificationService answers for the caller alone, whatever they ask for:
//! nobody lists, marks or watches another person's notifications, and
//! nothing they are told names them; the browsers' WebSocket feed is held
//! to the same.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use skileez_domain::ActorRole;
use skileez_proto::notifications as pbn;
use skileez_scheduling::auth::TokenIssuer;
use support::{TestEnv, call_id, day_at, ws::LiveClient};
use tonic::{
    Code, Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};

// Each id ends in `x` so that no id is part of a longer one and a leak check
// cannot match by accident.
const ADA: &str = "ada-studentx";
const BOB: &str = "bob-coachx";
const CYD: &str = "cyd-studentx";
const DEE: &str = "dee-coachx";
const EVE: &str = "eve-adminx";
const SVC: &str = "svc-timersx";

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Caller {
    /// ADA: the student of the call whose notifications are under test.
    Student,
    /// CYD: a student with notifications of their own.
    OtherStudent,
    /// BOB: the coach of ADA's call, with notifications of his own about it.
    Coach,
    /// DEE: a coach with notifications of their own.
    OtherCoach,
    Admin,
    Service,
    NoToken,
    /// A well-formed admin token signed with the wrong key.
    BadToken,
}

const CALLERS: [Caller; 8] = [
    Caller::Student,
    Caller::OtherStudent,
    Caller::Coach,
    Caller::OtherCoach,
    Caller::Admin,
    Caller::Service,
    Caller::NoToken,
    Caller::BadToken,
];

const PEOPLE: [Caller; 6] = [
    Caller::Student,
    Caller::OtherStudent,
    Caller::Coach,
    Caller::OtherCoach,
    Caller::Admin,
    Caller::Service,
];

impl Caller {
    fn sub(self) -> &'static str {
        match self {
            Caller::Student => ADA,
            Caller::OtherStudent => CYD,
            Caller::Coach => BOB,
            Caller::OtherCoach => DEE,
            Caller::Admin | Caller::BadToken => EVE,
            Caller::Service => SVC,
            Caller::NoToken => "",
        }
    }

    /// Whether the caller may know anything of ADA's and BOB's call: BOB
    /// has notifications of his own about it, staff see its deliveries.
    fn is_outsider(self) -> bool {
        matches!(
            self,
            Caller::OtherStudent | Caller::OtherCoach | Caller::NoToken | Caller::BadToken
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    /// ADA's notification, or everything the request can name.
    Own,
    /// A notification id nobody has.
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Rpc {
    ListNotifications,
    MarkRead,
    MarkReadAll,
    WatchNotifications,
    ListDeliveries,
    RetryDeadLetters,
    HealthCheck,
    ReflectionListServices,
}

impl Rpc {
    fn targets(self) -> &'static [Target] {
        match self {
            Rpc::MarkRead => &[Target::Own, Target::Missing],
            _ => &[Target::Own],
        }
    }
}

/// The status `caller` must get from `rpc`: the person's own service is
/// open to any valid token, the operators' to admins and services.
fn want(rpc: Rpc, caller: Caller) -> Code {
    match rpc {
        Rpc::HealthCheck | Rpc::ReflectionListServices => Code::Ok,
        _ if matches!(caller, Caller::NoToken | Caller::BadToken) => Code::Unauthenticated,
        Rpc::ListNotifications | Rpc::MarkRead | Rpc::MarkReadAll | Rpc::WatchNotifications => {
            Code::Ok
        }
        Rpc::ListDeliveries | Rpc::RetryDeadLetters => {
            if matches!(caller, Caller::Admin | Caller::Service) {
                Code::Ok
            } else {
                Code::PermissionDenied
            }
        }
    }
}

#[derive(Clone)]
struct Auth(Option<String>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("unusable token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Auth>;

/// All a refusal tells, but the clock's `date`.
fn status_text(status: &Status) -> String {
    let mut metadata = status.metadata().clone();
    metadata.remove("date");
    format!(
        "{} {} {:?}",
        status.message(),
        String::from_utf8_lossy(status.details()),
        metadata
    )
}

fn shown<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>) -> Result<String, Status> {
    result.map(|r| format!("{:?}", r.into_inner()))
}

struct Fixture {
    env: TestEnv,
    channel: Channel,
    forger: TokenIssuer,
    /// ADA's and BOB's call, and CYD's and DEE's.
    ada_bob: String,
    cyd_dee: String,
    /// ADA's one notification so far (the booking).
    adas: String,
    start: chrono::DateTime<chrono::Utc>,
}

async fn wait_for_stored(env: &TestEnv, user: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.stored_notifications(user).await.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} has fewer than {count} notifications"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let env = TestEnv::start().await;
        for (id, zone) in [
            (ADA, "Europe/Berlin"),
            (BOB, "America/New_York"),
            (CYD, "UTC"),
            (DEE, "Asia/Tokyo"),
        ] {
            env.add_participant(id, &format!("Name of {id}"), zone, "en-GB")
                .await;
        }
        let start = day_at(2, 9, 0);
        let ada_bob = call_id(&env.book_free(ADA, BOB, start).await);
        let cyd_dee = call_id(&env.book_free(CYD, DEE, day_at(2, 11, 0)).await);
        for user in [ADA, BOB, CYD, DEE] {
            wait_for_stored(&env, user, 1).await;
        }
        let channel = Channel::from_shared(format!("http://{}", env.instances[0].addr))
            .expect("url")
            .connect_lazy();
        let forger = TokenIssuer::new(
            "a-different-secret-of-enough-length",
            env.issuer.issuer(),
            env.issuer.audience(),
        );
        let mut fixture = Fixture {
            env,
            channel,
            forger,
            ada_bob,
            cyd_dee,
            adas: String::new(),
            start,
        };
        let mine = fixture
            .notifications(Caller::Student)
            .list_notifications(pbn::ListNotificationsRequest::default())
            .await
            .expect("ADA's notifications")
            .into_inner()
            .notifications;
        fixture.adas = mine[0].notification_id.clone();
        fixture
    }

    fn token(&self, caller: Caller) -> Option<String> {
        let role = match caller {
            Caller::Student | Caller::OtherStudent => ActorRole::Student,
            Caller::Coach | Caller::OtherCoach => ActorRole::Coach,
            Caller::Admin => ActorRole::Admin,
            Caller::Service => ActorRole::Service,
            Caller::NoToken => return None,
            Caller::BadToken => {
                return Some(self.forger.mint(
                    EVE,
                    ActorRole::Admin,
                    std::time::Duration::from_secs(3600),
                ));
            }
        };
        Some(self.env.token(caller.sub(), role))
    }

    fn authed(&self, caller: Caller) -> Authed {
        InterceptedService::new(self.channel.clone(), Auth(self.token(caller)))
    }

    fn notifications(
        &self,
        caller: Caller,
    ) -> pbn::notification_service_client::NotificationServiceClient<Authed> {
        pbn::notification_service_client::NotificationServiceClient::new(self.authed(caller))
    }

    fn deliveries(
        &self,
        caller: Caller,
    ) -> pbn::delivery_service_client::DeliveryServiceClient<Authed> {
        pbn::delivery_service_client::DeliveryServiceClient::new(self.authed(caller))
    }

    async fn adas_is_unread(&self) -> bool {
        sqlx::query_scalar(
            "SELECT read_at IS NULL FROM notifications WHERE notification_id = $1::uuid",
        )
        .bind(&self.adas)
        .fetch_one(self.env.db.pool())
        .await
        .expect("ADA's notification")
    }

    /// What `caller` may not be shown: ADA's notification to anyone but
    /// her, and anything of her call with BOB to those outside it.
    fn secrets(&self, caller: Caller) -> Vec<String> {
        let mut secrets = Vec::new();
        if caller != Caller::Student {
            secrets.push(self.adas.clone());
        }
        if caller.is_outsider() {
            secrets.extend([
                self.ada_bob.clone(),
                ADA.to_owned(),
                BOB.to_owned(),
                format!("Name of {ADA}"),
                format!("Name of {BOB}"),
                format!("{ADA}@example.com"),
                format!("{BOB}@example.com"),
                self.start.format("%Y-%m-%dT%H:%M").to_string(),
                self.start.timestamp().to_string(),
            ]);
        }
        secrets
    }

    /// Sends one case; the answer as text, and what the request itself said.
    async fn invoke(
        &self,
        rpc: Rpc,
        caller: Caller,
        target: Target,
    ) -> (Result<String, Status>, Vec<String>) {
        match rpc {
            Rpc::ListNotifications => (
                shown(
                    self.notifications(caller)
                        .list_notifications(pbn::ListNotificationsRequest::default())
                        .await,
                ),
                vec![],
            ),
            Rpc::MarkRead | Rpc::MarkReadAll => {
                let ids = match (rpc, target) {
                    (Rpc::MarkReadAll, _) => vec![],
                    (_, Target::Own) => vec![self.adas.clone()],
                    (_, Target::Missing) => vec![uuid::Uuid::now_v7().to_string()],
                };
                (
                    shown(
                        self.notifications(caller)
                            .mark_read(pbn::MarkReadRequest {
                                notification_ids: ids.clone(),
                                all: rpc == Rpc::MarkReadAll,
                            })
                            .await,
                    ),
                    ids,
                )
            }
            Rpc::WatchNotifications => (
                self.notifications(caller)
                    .watch_notifications(pbn::WatchNotificationsRequest {
                        after_sequence: None,
                    })
                    .await
                    .map(|_| "a stream".to_owned()),
                vec![],
            ),
            Rpc::ListDeliveries => (
                shown(
                    self.deliveries(caller)
                        .list_deliveries(pbn::ListDeliveriesRequest {
                            call_id: self.ada_bob.clone(),
                            recipient_id: ADA.to_owned(),
                            ..Default::default()
                        })
                        .await,
                ),
                vec![self.ada_bob.clone(), ADA.to_owned()],
            ),
            Rpc::RetryDeadLetters => (
                shown(
                    self.deliveries(caller)
                        .retry_dead_letters(pbn::RetryDeadLettersRequest::default())
                        .await,
                ),
                vec![],
            ),
            Rpc::HealthCheck => (
                shown(
                    tonic_health::pb::health_client::HealthClient::new(self.authed(caller))
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await,
                ),
                vec![],
            ),
            Rpc::ReflectionListServices => {
                use tonic_reflection::pb::v1::{
                    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                    server_reflection_request::MessageRequest,
                };
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                };
                let result = match ServerReflectionClient::new(self.authed(caller))
                    .server_reflection_info(futures::stream::iter([request]))
                    .await
                {
                    Ok(answers) => match answers.into_inner().next().await {
                        Some(Ok(answer)) => Ok(format!("{answer:?}")),
                        Some(Err(status)) => Err(status),
                        None => Err(Status::unknown("no reflection answer")),
                    },
                    Err(status) => Err(status),
                };
                (result, vec![])
            }
        }
    }
}

#[tokio::test]
async fn notification_and_delivery_service_matrix() {
    let fixture = Fixture::new().await;
    let reset = "UPDATE notifications SET read_at = NULL";
    let mut cases: BTreeMap<Rpc, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let rpcs = [
        Rpc::ListNotifications,
        Rpc::MarkRead,
        Rpc::MarkReadAll,
        Rpc::WatchNotifications,
        Rpc::ListDeliveries,
        Rpc::RetryDeadLetters,
        Rpc::HealthCheck,
        Rpc::ReflectionListServices,
    ];
    for rpc in rpcs {
        for &target in rpc.targets() {
            for caller in CALLERS {
                *cases.entry(rpc).or_default() += 1;
                let label = format!("{rpc:?} as {caller:?} on {target:?}");
                sqlx::query(reset)
                    .execute(fixture.env.db.pool())
                    .await
                    .expect("all unread");
                let (result, sent) = fixture.invoke(rpc, caller, target).await;
                let expected = want(rpc, caller);
                let got = result.as_ref().err().map_or(Code::Ok, Status::code);
                if got != expected {
                    failures.push(format!("{label}: expected {expected:?}, got {result:?}"));
                    continue;
                }
                let text = match &result {
                    Ok(answer) => answer.clone(),
                    Err(status) => status_text(status),
                };
                for secret in fixture.secrets(caller) {
                    if !sent.contains(&secret) && text.contains(&secret) {
                        failures.push(format!("{label}: the answer reveals {secret:?}: {text}"));
                    }
                }
                // A mark that is allowed still marks only the caller's own.
                if matches!(rpc, Rpc::MarkRead | Rpc::MarkReadAll) && got == Code::Ok {
                    let adas_marked = !fixture.adas_is_unread().await;
                    let should = caller == Caller::Student
                        && (rpc == Rpc::MarkReadAll || target == Target::Own);
                    if adas_marked != should {
                        failures.push(format!(
                            "{label}: ADA's notification read is {adas_marked}, should be {should}"
                        ));
                    }
                }
            }
        }
    }
    let total: usize = cases.values().sum();
    eprintln!("{total} cases: {cases:?}");
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ from the matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Listing: each person exactly their own; staff have none.
    for caller in PEOPLE {
        let listed = fixture
            .notifications(caller)
            .list_notifications(pbn::ListNotificationsRequest::default())
            .await
            .expect("list")
            .into_inner();
        let calls: HashSet<String> = listed
            .notifications
            .iter()
            .map(|n| {
                assert_eq!(n.user_id, caller.sub(), "{caller:?} was shown {n:?}");
                n.call_id.clone()
            })
            .collect();
        let wanted: HashSet<String> = match caller {
            Caller::Student | Caller::Coach => HashSet::from([fixture.ada_bob.clone()]),
            Caller::OtherStudent | Caller::OtherCoach => HashSet::from([fixture.cyd_dee.clone()]),
            _ => HashSet::new(),
        };
        assert_eq!(calls, wanted, "{caller:?} listed the wrong notifications");
        assert_eq!(listed.unread_count, wanted.len() as u64, "{caller:?}");
    }
}

#[tokio::test]
async fn watches_show_each_user_only_their_own_notifications() {
    let fixture = Fixture::new().await;
    let env = &fixture.env;
    // From the first notification on: the bookings come from the store, the
    // rest live.
    let mut streams = Vec::new();
    for caller in PEOPLE {
        let stream = fixture
            .notifications(caller)
            .watch_notifications(pbn::WatchNotificationsRequest {
                after_sequence: Some(0),
            })
            .await
            .expect("watch")
            .into_inner();
        streams.push((caller, stream));
    }
    // The browsers' WebSocket, the same: from the first item on.
    let ws = env.instances[0].ws_addr.expect("the WebSocket is on");
    let mut sockets = Vec::new();
    for caller in PEOPLE {
        let token = fixture.token(caller).expect("a token");
        let mut socket = LiveClient::with_token(ws, &token, Some(0)).await;
        assert_eq!(socket.welcome().await["userId"], caller.sub());
        sockets.push((caller, socket));
    }
    env.cancel(ADA, ActorRole::Student, &fixture.ada_bob, "")
        .await;
    env.cancel(DEE, ActorRole::Coach, &fixture.cyd_dee, "")
        .await;
    let ada_dee = call_id(&env.book_free(ADA, DEE, day_at(3, 9, 0)).await);
    let cyd_bob = call_id(&env.book_free(CYD, BOB, day_at(3, 11, 0)).await);
    for user in [ADA, BOB, CYD, DEE] {
        wait_for_stored(env, user, 3).await;
    }

    let calls_of = |caller: Caller| -> HashSet<String> {
        let ids = match caller {
            Caller::Student => [&fixture.ada_bob, &ada_dee],
            Caller::Coach => [&fixture.ada_bob, &cyd_bob],
            Caller::OtherStudent => [&fixture.cyd_dee, &cyd_bob],
            Caller::OtherCoach => [&fixture.cyd_dee, &ada_dee],
            _ => return HashSet::new(),
        };
        ids.into_iter().cloned().collect()
    };
    for (caller, stream) in &mut streams {
        let wanted = calls_of(*caller);
        let mut sequences = Vec::new();
        let mut calls = HashSet::new();
        // Three each: booked, cancelled, and the booking across the pairs.
        while !wanted.is_empty() && sequences.len() < 3 {
            let n = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{caller:?} got only {sequences:?}"))
                .expect("stream open")
                .expect("no error");
            assert_eq!(n.user_id, caller.sub(), "{caller:?} was sent {n:?}");
            sequences.push(n.sequence);
            calls.insert(n.call_id);
        }
        assert_eq!(calls, wanted, "{caller:?} watched the wrong calls");
    }
    for (caller, socket) in &mut sockets {
        let wanted = calls_of(*caller);
        let notifications = |items: &[serde_json::Value]| {
            items
                .iter()
                .filter(|item| item["type"] == "notification")
                .count()
        };
        let expected = if wanted.is_empty() { 0 } else { 3 };
        let items = socket
            .items_until(WAIT, |items| notifications(items) == expected)
            .await;
        for item in &items {
            let notification = &item["notification"];
            let call = match item["type"].as_str() {
                Some("notification") => {
                    assert_eq!(notification["userId"], caller.sub(), "{caller:?}: {item}");
                    &notification["callId"]
                }
                _ => &item["callId"],
            };
            let call = call.as_str().unwrap_or_default();
            assert!(wanted.contains(call), "{caller:?} was sent {item}");
        }
    }
    // Nothing more for anyone, staff included, once everything is stored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (caller, stream) in &mut streams {
        let extra = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(extra.is_err(), "{caller:?} was sent more: {extra:?}");
    }
    for (_, socket) in &mut sockets {
        socket.assert_quiet(Duration::from_millis(50)).await;
    }
}
