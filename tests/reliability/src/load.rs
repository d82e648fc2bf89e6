//! The mixed load: free consultations booked at a steady rate, each a
//! fresh student with a coach from a pool, starting `lead` ahead, and then
//! one of four fates: cancelled, rescheduled (the successor then attended or
//! not), attended (both join, the coach ends it) or missed (nobody comes, the
//! timers make it ready, then missed). Every answer is recorded.
//!
//! Clients behave as real ones do: every request carries a request id, and a
//! request whose outcome is unknown (the server unreachable, a timeout, a
//! lost race) is sent again with the same id, to any instance, until it gets
//! a definite answer or gives up; the checker asks again after the faults.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use skileez_auth::{Role, TokenIssuer};
use skileez_proto::scheduling as pb;
use tonic::{Code, Request, Status, transport::Channel};

pub const SECRET: &str = "reliability-secret-reliability-secret";

pub fn issuer() -> TokenIssuer {
    TokenIssuer::new(SECRET, "skileez", "skileez-scheduling")
}

#[derive(Clone, Debug)]
pub enum Answer {
    /// OK, with the call it is about (a booking's or reschedule's new call).
    Ok(String),
    /// A definite error.
    Err(Code, String),
    /// No definite answer before giving up (unreachable all along).
    Unknown(String),
}

impl Answer {
    pub fn ok(&self) -> Option<&str> {
        match self {
            Answer::Ok(id) => Some(id),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Cancel,
    Reschedule,
    Attend,
    NoShow,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub op: &'static str,
    pub call: String,
    pub request_id: String,
    pub answer: Answer,
}

#[derive(Clone, Debug)]
pub struct Booking {
    pub n: usize,
    pub student: String,
    pub coach: String,
    pub start: DateTime<Utc>,
    pub request_id: String,
    pub answer: Answer,
    pub fate: Fate,
    pub ops: Vec<Op>,
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub tag: String,
    pub bookings: usize,
    pub duration: Duration,
    pub coaches: usize,
    /// How far ahead each call starts.
    pub lead: Duration,
    /// How long a client keeps retrying one request.
    pub give_up: Duration,
}

/// Calls the scheduling instances on `ports`.
#[derive(Clone)]
pub struct Client {
    channels: Vec<Channel>,
    issuer: Arc<TokenIssuer>,
}

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
    ) || (status.code() == Code::Internal && status.message().contains("transport"))
}

fn utc(at: DateTime<Utc>) -> pb::StartTime {
    pb::StartTime {
        time: Some(pb::start_time::Time::Utc(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: 0,
        })),
    }
}

impl Client {
    pub fn new(ports: &[u16]) -> Client {
        let channels = ports
            .iter()
            .map(|port| {
                Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("url")
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(5))
                    .connect_lazy()
            })
            .collect();
        Client {
            channels,
            issuer: Arc::new(issuer()),
        }
    }

    fn request<T>(&self, message: T, user: &str, role: Role) -> Request<T> {
        let mut request = Request::new(message);
        let token = self.issuer.mint(user, role, Duration::from_secs(3600));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
        request.set_timeout(Duration::from_secs(5));
        request
    }

    fn scheduling(
        &self,
        i: usize,
    ) -> pb::scheduling_service_client::SchedulingServiceClient<Channel> {
        pb::scheduling_service_client::SchedulingServiceClient::new(
            self.channels[i % self.channels.len()].clone(),
        )
    }

    /// Sends one request (built by `call` for an instance) until a definite
    /// answer or `give_up`.
    async fn until_definite<F, Fut>(&self, give_up: Duration, first: usize, call: F) -> Answer
    where
        F: Fn(pb::scheduling_service_client::SchedulingServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<String, Status>>,
    {
        let deadline = tokio::time::Instant::now() + give_up;
        let mut attempt = first;
        loop {
            match call(self.scheduling(attempt)).await {
                Ok(id) => return Answer::Ok(id),
                Err(status) if retryable(&status) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Answer::Unknown(format!(
                            "{:?}: {}",
                            status.code(),
                            status.message()
                        ));
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(status) => return Answer::Err(status.code(), status.message().to_owned()),
            }
        }
    }

    pub async fn book(
        &self,
        student: &str,
        coach: &str,
        start: DateTime<Utc>,
        request_id: &str,
        give_up: Duration,
        first: usize,
    ) -> Answer {
        self.until_definite(give_up, first, |mut client| {
            let request = self.request(
                pb::ScheduleFreeConsultationRequest {
                    request_id: request_id.to_owned(),
                    student_id: student.to_owned(),
                    coach_id: coach.to_owned(),
                    start: Some(utc(start)),
                    note: String::new(),
                },
                student,
                Role::Student,
            );
            async move {
                let call = client
                    .schedule_free_consultation(request)
                    .await?
                    .into_inner()
                    .call;
                Ok(card_id(call))
            }
        })
        .await
    }

    pub async fn reschedule(
        &self,
        student: &str,
        call_id: &str,
        start: DateTime<Utc>,
        request_id: &str,
        give_up: Duration,
        first: usize,
    ) -> Answer {
        self.until_definite(give_up, first, |mut client| {
            let request = self.request(
                pb::RescheduleCallRequest {
                    request_id: request_id.to_owned(),
                    call_id: call_id.to_owned(),
                    new_start: Some(utc(start)),
                    reason: "reliability".to_owned(),
                },
                student,
                Role::Student,
            );
            async move {
                let call = client.reschedule_call(request).await?.into_inner().call;
                Ok(card_id(call))
            }
        })
        .await
    }

    pub async fn cancel(
        &self,
        user: &str,
        role: Role,
        call_id: &str,
        request_id: &str,
        give_up: Duration,
        first: usize,
    ) -> Answer {
        self.until_definite(give_up, first, |mut client| {
            let request = self.request(
                pb::CancelCallRequest {
                    request_id: request_id.to_owned(),
                    call_id: call_id.to_owned(),
                    reason: "reliability".to_owned(),
                },
                user,
                role,
            );
            async move {
                let call = client.cancel_call(request).await?.into_inner().call;
                Ok(card_id(call))
            }
        })
        .await
    }

    pub async fn join(
        &self,
        user: &str,
        role: Role,
        call_id: &str,
        request_id: &str,
        give_up: Duration,
        first: usize,
    ) -> Answer {
        self.until_definite(give_up, first, |mut client| {
            let request = self.request(
                pb::JoinCallRequest {
                    request_id: request_id.to_owned(),
                    call_id: call_id.to_owned(),
                },
                user,
                role,
            );
            async move {
                let call = client.join_call(request).await?.into_inner().call;
                Ok(card_id(call))
            }
        })
        .await
    }

    pub async fn end(
        &self,
        user: &str,
        role: Role,
        call_id: &str,
        request_id: &str,
        give_up: Duration,
        first: usize,
    ) -> Answer {
        self.until_definite(give_up, first, |mut client| {
            let request = self.request(
                pb::EndCallRequest {
                    request_id: request_id.to_owned(),
                    call_id: call_id.to_owned(),
                },
                user,
                role,
            );
            async move {
                let call = client.end_call(request).await?.into_inner().call;
                Ok(card_id(call))
            }
        })
        .await
    }

    /// Adds or updates a participant (admin), retrying until it is stored.
    pub async fn participant(&self, id: &str) {
        let mut attempt = 0;
        loop {
            let mut client = pb::directory_service_client::DirectoryServiceClient::new(
                self.channels[attempt % self.channels.len()].clone(),
            );
            let request = self.request(
                pb::UpsertParticipantRequest {
                    participant: Some(pb::Participant {
                        user_id: id.to_owned(),
                        display_name: id.to_owned(),
                        email: format!("{id}@example.com"),
                        time_zone: "UTC".to_owned(),
                        locale: "en-GB".to_owned(),
                        email_enabled: true,
                    }),
                },
                "admin-1",
                Role::Admin,
            );
            match client.upsert_participant(request).await {
                Ok(_) => return,
                Err(status) => {
                    attempt += 1;
                    assert!(attempt < 200, "participant {id} not stored: {status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn card_id(call: Option<pb::Call>) -> String {
    call.and_then(|c| c.card)
        .map(|card| card.call_id)
        .unwrap_or_default()
}

pub fn student(tag: &str, n: usize) -> String {
    format!("stu-{tag}-{n}")
}

pub fn coach(tag: &str, n: usize) -> String {
    format!("coach-{tag}-{n}")
}

/// Deterministic fates in a fixed mix: 20 % cancelled, 20 % rescheduled,
/// 35 % attended, 25 % missed.
pub fn fate(n: usize) -> Fate {
    match (n * 7 + n / 20) % 20 {
        0..=3 => Fate::Cancel,
        4..=7 => Fate::Reschedule,
        8..=14 => Fate::Attend,
        _ => Fate::NoShow,
    }
}

/// Registers the participants the load will use.
pub async fn register(client: &Client, config: &LoadConfig) {
    let mut ids: Vec<String> = (0..config.coaches).map(|i| coach(&config.tag, i)).collect();
    ids.extend((0..config.bookings).map(|n| student(&config.tag, n)));
    let chunks: Vec<Vec<String>> = ids
        .chunks(ids.len().div_ceil(8))
        .map(<[_]>::to_vec)
        .collect();
    futures::future::join_all(chunks.into_iter().map(|chunk| async move {
        for id in chunk {
            client.participant(&id).await;
        }
    }))
    .await;
}

/// Runs the load to its end (every flow finished) and returns the records.
pub async fn run(client: Client, config: LoadConfig) -> Vec<Booking> {
    let records = Arc::new(Mutex::new(Vec::new()));
    let interval = config.duration / config.bookings.max(1) as u32;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flows = Vec::new();
    for n in 0..config.bookings {
        ticker.tick().await;
        let (client, config, records) = (client.clone(), config.clone(), records.clone());
        flows.push(tokio::spawn(async move {
            let booking = flow(&client, &config, n).await;
            records.lock().expect("records").push(booking);
        }));
    }
    for flow in flows {
        flow.await.expect("a flow panicked");
    }
    let mut records = std::mem::take(&mut *records.lock().expect("records"));
    records.sort_by_key(|b| b.n);
    records
}

fn whole_second(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::seconds(1))
        .expect("trunc")
}

async fn sleep_until(at: DateTime<Utc>) {
    let now = Utc::now();
    if at > now {
        tokio::time::sleep((at - now).to_std().unwrap_or_default()).await;
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn flow(client: &Client, config: &LoadConfig, n: usize) -> Booking {
    let student = student(&config.tag, n);
    let coach = coach(&config.tag, n % config.coaches);
    let lead = chrono::Duration::from_std(config.lead).expect("lead");
    let start = whole_second(Utc::now() + lead);
    let request_id = new_id();
    let give_up = config.give_up;
    let answer = client
        .book(&student, &coach, start, &request_id, give_up, n)
        .await;
    let fate = fate(n);
    let mut booking = Booking {
        n,
        student: student.clone(),
        coach: coach.clone(),
        start,
        request_id,
        answer: answer.clone(),
        fate,
        ops: Vec::new(),
    };
    let Some(call) = answer.ok().map(str::to_owned) else {
        return booking;
    };
    let mut record = |op: &'static str, call: &str, request_id: String, answer: Answer| {
        booking.ops.push(Op {
            op,
            call: call.to_owned(),
            request_id,
            answer: answer.clone(),
        });
        answer
    };
    let ready_at = start - chrono::Duration::seconds(2);
    match fate {
        Fate::Cancel => {
            tokio::time::sleep(Duration::from_millis(500 + (n as u64 % 5) * 500)).await;
            let (user, role) = if n.is_multiple_of(2) {
                (&student, Role::Student)
            } else {
                (&coach, Role::Coach)
            };
            let id = new_id();
            let answer = client.cancel(user, role, &call, &id, give_up, n).await;
            record("cancel", &call, id, answer);
        }
        Fate::Reschedule => {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let new_start = start + chrono::Duration::seconds(4);
            let id = new_id();
            let answer = client
                .reschedule(&student, &call, new_start, &id, give_up, n)
                .await;
            if let Some(next) = record("reschedule", &call, id, answer)
                .ok()
                .map(str::to_owned)
                && n.is_multiple_of(2)
            {
                attend(
                    client,
                    &student,
                    &coach,
                    &next,
                    new_start,
                    n,
                    give_up,
                    &mut record,
                )
                .await;
            }
        }
        Fate::Attend => {
            sleep_until(ready_at).await;
            attend(
                client,
                &student,
                &coach,
                &call,
                start,
                n,
                give_up,
                &mut record,
            )
            .await;
        }
        Fate::NoShow => {}
    }
    booking
}

#[allow(clippy::too_many_arguments)]
async fn attend(
    client: &Client,
    student: &str,
    coach: &str,
    call: &str,
    start: DateTime<Utc>,
    n: usize,
    give_up: Duration,
    record: &mut impl FnMut(&'static str, &str, String, Answer) -> Answer,
) {
    // A moment after joining opens (start − ready lead).
    sleep_until(start - chrono::Duration::milliseconds(1500)).await;
    let id = new_id();
    let answer = client
        .join(student, Role::Student, call, &id, give_up, n)
        .await;
    if record("join", call, id, answer).ok().is_none() {
        return;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = new_id();
    let answer = client.join(coach, Role::Coach, call, &id, give_up, n).await;
    record("join", call, id, answer);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let id = new_id();
    let answer = client.end(coach, Role::Coach, call, &id, give_up, n).await;
    record("end", call, id, answer);
}
