//! The authorisation matrix of `docs/authorization.md`: every RPC of the
//! scheduling port × every kind of caller × the owner's resource or one that
//! does not exist → the one status it must answer. A caller who may not see
//! a call learns nothing about it: a refusal carries none of its facts and
//! reads the same whether the call exists or not, and an answer that is
//! allowed lists none of them either.

mod support;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration as StdDuration,
};

use chrono::{DateTime, Duration, Utc};
use skileez_domain::{ActorRole, Policy};
use skileez_proto::{call as ev, scheduling as pb};
use skileez_scheduling::auth::TokenIssuer;
use support::{TestApp, card, day_at, utc};
use tokio_stream::StreamExt;
use tonic::{
    Code, Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};

// The owners of every call under test, and two people with calls of their
// own who must never see them. Each id ends in `x` so that no id is
// part of a longer one and a leak check cannot match by accident.
const ADA: &str = "ada-studentx";
const BOB: &str = "bob-coachx";
const CYD: &str = "cyd-studentx";
const DEE: &str = "dee-coachx";
const EVE: &str = "eve-adminx";
const SVC: &str = "svc-timersx";
const CONTRACT: &str = "contract-ada-bobx";
const OTHER_CONTRACT: &str = "contract-cyd-deex";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Caller {
    /// ADA: the student of the call under test.
    Student,
    /// CYD: a student with calls of their own, none with ADA or BOB.
    OtherStudent,
    /// BOB: the coach of the call under test.
    Coach,
    /// DEE: a coach with calls of their own.
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

impl Caller {
    /// Whether the caller may know anything about ADA's and BOB's calls.
    fn is_outsider(self) -> bool {
        matches!(
            self,
            Caller::OtherStudent | Caller::OtherCoach | Caller::NoToken | Caller::BadToken
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    /// The owners' resource: their call, ADA's booking, BOB's hours, ADA's
    /// directory entry or contract.
    Own,
    /// An id nothing has: a random call id, an unknown user or contract.
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Ok,
    Denied,
    NotFound,
    Unauthenticated,
}

impl Want {
    fn code(self) -> Code {
        match self {
            Want::Ok => Code::Ok,
            Want::Denied => Code::PermissionDenied,
            Want::NotFound => Code::NotFound,
            Want::Unauthenticated => Code::Unauthenticated,
        }
    }
}

/// Who may call an RPC, as `docs/authorization.md` tabulates it.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// No token needed (health, reflection).
    Public,
    /// Any valid token.
    Anyone,
    /// The call's student or coach only; staff are refused too, and an
    /// unknown call is refused like someone else's for everybody.
    Participants,
    /// The call's student or coach, or an admin (told NOT_FOUND for an
    /// unknown call); services are refused.
    ParticipantsOrAdmin,
    /// The call's student or coach, or an admin or service (told NOT_FOUND).
    ParticipantsOrStaff,
    /// The student or the coach of the pair asked about, or staff.
    PairOrStaff,
    /// A student for themself, or an admin or service.
    StudentOrStaff,
    /// The student named (here ADA) themself, or an admin or service.
    SelfOrStaff,
    /// The user named (here ADA) themself, or an admin; services are refused.
    SelfOrAdmin,
    /// The coach themself or an admin or service.
    CoachOrStaff,
    /// Admins and services (NOT_FOUND for an unknown id).
    Staff,
    /// Services only (NOT_FOUND for an unknown call).
    ServiceOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Rpc {
    GetSchedulingOptions,
    CheckAvailability,
    CheckAvailabilityForStudent,
    ScheduleFreeConsultation,
    SchedulePaidSession,
    RescheduleCall,
    CancelCall,
    JoinCall,
    EndCall,
    GetCall,
    GetCallHistory,
    ListCallsOwn,
    ListCallsOfUser,
    WatchCalls,
    MarkCallReady,
    MarkCallMissed,
    TriggerReminder,
    CompleteOverdueCall,
    UpsertParticipant,
    UpsertContract,
    GetParticipant,
    GetContract,
    SetCoachAvailability,
    ClearCoachAvailability,
    GetCoachAvailability,
    FindSlots,
    HealthCheck,
    ReflectionListServices,
}

impl Rpc {
    fn rule(self) -> Rule {
        use Rpc::*;
        match self {
            GetSchedulingOptions => Rule::PairOrStaff,
            CheckAvailability | ListCallsOwn | WatchCalls | GetCoachAvailability | FindSlots => {
                Rule::Anyone
            }
            // student_id set: only that student (or staff) may ask about
            // the student's own calls.
            CheckAvailabilityForStudent => Rule::SelfOrStaff,
            ScheduleFreeConsultation | SchedulePaidSession => Rule::StudentOrStaff,
            RescheduleCall | JoinCall | EndCall => Rule::Participants,
            CancelCall => Rule::ParticipantsOrAdmin,
            GetCall | GetCallHistory => Rule::ParticipantsOrStaff,
            ListCallsOfUser => Rule::SelfOrAdmin,
            MarkCallReady | MarkCallMissed | TriggerReminder | CompleteOverdueCall => {
                Rule::ServiceOnly
            }
            UpsertParticipant | UpsertContract | GetParticipant | GetContract => Rule::Staff,
            SetCoachAvailability | ClearCoachAvailability => Rule::CoachOrStaff,
            HealthCheck | ReflectionListServices => Rule::Public,
        }
    }

    fn targets(self) -> &'static [Target] {
        use Rpc::*;
        match self {
            RescheduleCall | CancelCall | JoinCall | EndCall | GetCall | GetCallHistory
            | MarkCallReady | MarkCallMissed | TriggerReminder | CompleteOverdueCall
            | GetParticipant | GetContract => &[Target::Own, Target::Missing],
            _ => &[Target::Own],
        }
    }

    /// Answers that show when a coach is busy, by design: a free slot or a
    /// clash is the point of asking. They never say whose call it is.
    fn reveals_busy_times(self) -> bool {
        matches!(
            self,
            Rpc::CheckAvailability | Rpc::CheckAvailabilityForStudent | Rpc::FindSlots
        )
    }
}

/// The status `caller` must get from `rpc` on `target`.
fn want(rpc: Rpc, caller: Caller, target: Target) -> Want {
    use Caller::*;
    let rule = rpc.rule();
    if matches!(rule, Rule::Public) {
        return Want::Ok;
    }
    if matches!(caller, NoToken | BadToken) {
        return Want::Unauthenticated;
    }
    // Who gets through to the resource, and whether they are the ones told
    // that it does not exist (AIP-211: everybody else is refused first).
    let (allowed, told_missing) = match rule {
        Rule::Public | Rule::Anyone => (true, false),
        Rule::Participants => (matches!(caller, Student | Coach), false),
        Rule::ParticipantsOrAdmin => (matches!(caller, Student | Coach | Admin), caller == Admin),
        Rule::ParticipantsOrStaff => (
            matches!(caller, Student | Coach | Admin | Service),
            matches!(caller, Admin | Service),
        ),
        Rule::PairOrStaff => (matches!(caller, Student | Coach | Admin | Service), false),
        Rule::StudentOrStaff | Rule::SelfOrStaff => {
            (matches!(caller, Student | Admin | Service), false)
        }
        Rule::SelfOrAdmin => (matches!(caller, Student | Admin), false),
        Rule::CoachOrStaff => (matches!(caller, Coach | Admin | Service), false),
        Rule::Staff => (matches!(caller, Admin | Service), true),
        Rule::ServiceOnly => (caller == Service, true),
    };
    match (allowed, target) {
        (false, _) => Want::Denied,
        (true, Target::Own) => Want::Ok,
        (true, Target::Missing) if told_missing => Want::NotFound,
        (true, Target::Missing) => Want::Denied,
    }
}

/// Whether an answer that is allowed must (`Some(true)`) or must not
/// (`Some(false)`) name the call under test.
fn must_show(rpc: Rpc, caller: Caller) -> Option<bool> {
    use Caller::*;
    let insider = match rpc {
        Rpc::CheckAvailability => matches!(caller, Student | Coach | Admin | Service),
        Rpc::CheckAvailabilityForStudent | Rpc::GetCall | Rpc::GetCallHistory => true,
        Rpc::ListCallsOwn => matches!(caller, Student | Coach),
        Rpc::ListCallsOfUser => true,
        // The calls outside the hours are the coach's business: the
        // student of such a call sees them in ListCalls, not here.
        Rpc::GetCoachAvailability => matches!(caller, Coach | Admin | Service),
        Rpc::FindSlots => false,
        _ => return None,
    };
    Some(insider)
}

/// Sends the bearer token, if any.
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
type SchedulingClient = pb::scheduling_service_client::SchedulingServiceClient<Authed>;
type TimerClient = pb::call_timer_service_client::CallTimerServiceClient<Authed>;
type DirectoryClient = pb::directory_service_client::DirectoryServiceClient<Authed>;
type HoursClient = pb::availability_service_client::AvailabilityServiceClient<Authed>;

/// A call of ADA and BOB.
#[derive(Clone, Debug)]
struct Subject {
    call_id: String,
    start: DateTime<Utc>,
}

/// What one case sent and got.
struct Invocation {
    subject: Subject,
    /// The id the request named, blanked out before two refusals are compared.
    asked: String,
    /// Everything the caller put in the request: echoing it reveals nothing.
    sent: Vec<String>,
    result: Result<String, Status>,
}

/// Lead times that make every call of the next weeks joinable at once and
/// movable until shortly before it, so each rule is met by a call booked a
/// few days ahead and only authorisation decides.
fn policy() -> Policy {
    Policy {
        ready_lead: Duration::days(30),
        ..Policy::default()
    }
}

struct Matrix<'a> {
    app: &'a TestApp,
    forger: TokenIssuer,
    base: DateTime<Utc>,
    slots: i64,
    /// ADA's and BOB's call that nobody changes, for the RPCs that only read.
    shared: Subject,
    /// ADA's and BOB's cancelled call: every timer command on it is stale
    /// and answered OK, so only the caller decides the status.
    cancelled: Subject,
    /// CYD's and DEE's own call.
    theirs: Subject,
    cases: BTreeMap<Rpc, usize>,
    failures: Vec<String>,
    refusals: HashMap<(Rpc, Caller, Target), String>,
}

fn shown<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>) -> Result<String, Status> {
    result.map(|r| format!("{:?}", r.into_inner()))
}

/// All a refusal tells: its message, its details and its metadata (but the
/// clock's `date`, which differs between any two answers).
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

fn describe(result: &Result<String, Status>) -> String {
    match result {
        Ok(answer) => format!("OK {answer}"),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

impl<'a> Matrix<'a> {
    async fn new(app: &'a TestApp) -> Matrix<'a> {
        for (id, zone) in [
            (ADA, "Europe/Berlin"),
            (BOB, "America/New_York"),
            (CYD, "UTC"),
            (DEE, "Asia/Tokyo"),
        ] {
            app.add_participant(id, zone).await;
        }
        app.add_contract(CONTRACT, ADA, BOB, pb::ContractStatus::Paid, 15, None)
            .await;
        app.add_contract(OTHER_CONTRACT, CYD, DEE, pb::ContractStatus::Paid, 15, None)
            .await;
        let book = |student, coach, contract, start| async move {
            let call = app
                .book_paid(student, coach, contract, start)
                .await
                .expect("fixture call booked");
            Subject {
                call_id: card(&call).call_id.clone(),
                start,
            }
        };
        let shared = book(ADA, BOB, CONTRACT, day_at(2, 10, 0)).await;
        let cancelled = book(ADA, BOB, CONTRACT, day_at(2, 12, 0)).await;
        app.student(ADA)
            .cancel_call(pb::CancelCallRequest {
                call_id: cancelled.call_id.clone(),
                ..Default::default()
            })
            .await
            .expect("fixture call cancelled");
        // Apart from the shared call, so its start is no secret in their answers.
        let theirs = book(CYD, DEE, OTHER_CONTRACT, day_at(2, 14, 0)).await;
        Matrix {
            app,
            forger: TokenIssuer::new(
                "a-different-secret-of-enough-length",
                app.issuer.issuer(),
                app.issuer.audience(),
            ),
            base: day_at(3, 0, 0),
            slots: 0,
            shared,
            cancelled,
            theirs,
            cases: BTreeMap::new(),
            failures: Vec::new(),
            refusals: HashMap::new(),
        }
    }

    fn token(&self, caller: Caller) -> Option<String> {
        let mint = |sub: &str, role| Some(self.app.token(sub, role));
        match caller {
            Caller::Student => mint(ADA, ActorRole::Student),
            Caller::OtherStudent => mint(CYD, ActorRole::Student),
            Caller::Coach => mint(BOB, ActorRole::Coach),
            Caller::OtherCoach => mint(DEE, ActorRole::Coach),
            Caller::Admin => mint(EVE, ActorRole::Admin),
            Caller::Service => mint(SVC, ActorRole::Service),
            Caller::NoToken => None,
            Caller::BadToken => Some(self.forger.mint(
                EVE,
                ActorRole::Admin,
                StdDuration::from_secs(3600),
            )),
        }
    }

    fn authed(&self, caller: Caller) -> Authed {
        InterceptedService::new(self.app.channel(), Auth(self.token(caller)))
    }

    fn scheduling(&self, caller: Caller) -> SchedulingClient {
        pb::scheduling_service_client::SchedulingServiceClient::new(self.authed(caller))
    }

    fn timers(&self, caller: Caller) -> TimerClient {
        pb::call_timer_service_client::CallTimerServiceClient::new(self.authed(caller))
    }

    fn directory(&self, caller: Caller) -> DirectoryClient {
        pb::directory_service_client::DirectoryServiceClient::new(self.authed(caller))
    }

    fn hours(&self, caller: Caller) -> HoursClient {
        pb::availability_service_client::AvailabilityServiceClient::new(self.authed(caller))
    }

    /// A start no other call of the fixture's people is near.
    fn next_slot(&mut self) -> DateTime<Utc> {
        self.slots += 1;
        self.base + Duration::minutes(30 * self.slots)
    }

    /// A new call of ADA and BOB, for a case that changes it; `active`: ADA
    /// has joined, so it can be ended.
    async fn fresh_call(&mut self, active: bool) -> Subject {
        let start = self.next_slot();
        let call = self
            .app
            .book_paid(ADA, BOB, CONTRACT, start)
            .await
            .expect("fixture call booked");
        let call_id = card(&call).call_id.clone();
        if active {
            self.scheduling(Caller::Student)
                .join_call(pb::JoinCallRequest {
                    request_id: String::new(),
                    call_id: call_id.clone(),
                })
                .await
                .expect("fixture call joined");
        }
        Subject { call_id, start }
    }

    /// BOB's hours: 12:00–13:00 UTC every day, which leaves the shared call
    /// outside them.
    fn bobs_hours() -> pb::Availability {
        pb::Availability {
            time_zone: "UTC".to_owned(),
            weekly: (1..=7)
                .map(|weekday| pb::WeeklyInterval {
                    weekday,
                    start: "12:00".to_owned(),
                    end: "13:00".to_owned(),
                })
                .collect(),
            ..Default::default()
        }
    }

    async fn invoke(&mut self, rpc: Rpc, caller: Caller, target: Target) -> Invocation {
        use Rpc::*;
        let own = target == Target::Own;
        let subject = match rpc {
            RescheduleCall | CancelCall | JoinCall | EndCall if own => {
                self.fresh_call(rpc == EndCall).await
            }
            MarkCallReady | MarkCallMissed | TriggerReminder | CompleteOverdueCall => {
                self.cancelled.clone()
            }
            _ => self.shared.clone(),
        };
        let call_id = if own {
            subject.call_id.clone()
        } else {
            uuid::Uuid::now_v7().to_string()
        };
        let slot = self.next_slot();
        let mut sent = vec![call_id.clone()];
        let mut asked = call_id.clone();
        let result = match rpc {
            GetSchedulingOptions => {
                sent = vec![ADA.into(), BOB.into()];
                shown(
                    self.scheduling(caller)
                        .get_scheduling_options(pb::GetSchedulingOptionsRequest {
                            student_id: ADA.into(),
                            coach_id: BOB.into(),
                        })
                        .await,
                )
            }
            CheckAvailability | CheckAvailabilityForStudent => {
                let student = if rpc == CheckAvailabilityForStudent {
                    ADA
                } else {
                    ""
                };
                sent = vec![BOB.into(), student.into()];
                shown(
                    self.scheduling(caller)
                        .check_availability(pb::CheckAvailabilityRequest {
                            coach_id: BOB.into(),
                            start: Some(utc(subject.start)),
                            duration_minutes: 15,
                            student_id: student.into(),
                        })
                        .await,
                )
            }
            ScheduleFreeConsultation => {
                // A coach of their own: one free consultation per pair.
                let coach = format!("free-coach-{}x", self.slots);
                sent = vec![ADA.into(), coach.clone()];
                shown(
                    self.scheduling(caller)
                        .schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
                            request_id: String::new(),
                            student_id: ADA.into(),
                            coach_id: coach,
                            start: Some(utc(slot)),
                            note: String::new(),
                        })
                        .await,
                )
            }
            SchedulePaidSession => {
                sent = vec![ADA.into(), BOB.into(), CONTRACT.into()];
                shown(
                    self.scheduling(caller)
                        .schedule_paid_session(pb::SchedulePaidSessionRequest {
                            request_id: String::new(),
                            student_id: ADA.into(),
                            coach_id: BOB.into(),
                            contract_id: CONTRACT.into(),
                            start: Some(utc(slot)),
                            note: String::new(),
                        })
                        .await,
                )
            }
            RescheduleCall => shown(
                self.scheduling(caller)
                    .reschedule_call(pb::RescheduleCallRequest {
                        request_id: String::new(),
                        call_id: call_id.clone(),
                        new_start: Some(utc(subject.start + Duration::minutes(10))),
                        reason: String::new(),
                    })
                    .await,
            ),
            CancelCall => shown(
                self.scheduling(caller)
                    .cancel_call(pb::CancelCallRequest {
                        request_id: String::new(),
                        call_id: call_id.clone(),
                        reason: String::new(),
                    })
                    .await,
            ),
            JoinCall => shown(
                self.scheduling(caller)
                    .join_call(pb::JoinCallRequest {
                        request_id: String::new(),
                        call_id: call_id.clone(),
                    })
                    .await,
            ),
            EndCall => shown(
                self.scheduling(caller)
                    .end_call(pb::EndCallRequest {
                        request_id: String::new(),
                        call_id: call_id.clone(),
                    })
                    .await,
            ),
            GetCall => shown(
                self.scheduling(caller)
                    .get_call(pb::GetCallRequest {
                        call_id: call_id.clone(),
                    })
                    .await,
            ),
            GetCallHistory => shown(
                self.scheduling(caller)
                    .get_call_history(pb::GetCallHistoryRequest {
                        call_id: call_id.clone(),
                    })
                    .await,
            ),
            ListCallsOwn | ListCallsOfUser => {
                let user = if rpc == ListCallsOfUser { ADA } else { "" };
                sent = vec![user.into()];
                shown(
                    self.scheduling(caller)
                        .list_calls(pb::ListCallsRequest {
                            user_id: user.into(),
                            page_size: 100,
                            ..Default::default()
                        })
                        .await,
                )
            }
            WatchCalls => self
                .scheduling(caller)
                .watch_calls(pb::WatchCallsRequest::default())
                .await
                .map(|_| "a stream".to_owned()),
            MarkCallReady | MarkCallMissed | CompleteOverdueCall => {
                let request = pb::TimerCommandRequest {
                    call_id: call_id.clone(),
                };
                let mut timers = self.timers(caller);
                shown(match rpc {
                    MarkCallReady => timers.mark_call_ready(request).await,
                    MarkCallMissed => timers.mark_call_missed(request).await,
                    _ => timers.complete_overdue_call(request).await,
                })
            }
            TriggerReminder => shown(
                self.timers(caller)
                    .trigger_reminder(pb::TriggerReminderRequest {
                        call_id: call_id.clone(),
                        kind: ev::ReminderKind::ReminderKind1h as i32,
                    })
                    .await,
            ),
            UpsertParticipant => {
                sent = vec![
                    ADA.into(),
                    format!("Name of {ADA}"),
                    format!("{ADA}@example.com"),
                ];
                shown(
                    self.directory(caller)
                        .upsert_participant(pb::UpsertParticipantRequest {
                            participant: Some(pb::Participant {
                                user_id: ADA.into(),
                                display_name: format!("Name of {ADA}"),
                                email: format!("{ADA}@example.com"),
                                time_zone: "Europe/Berlin".into(),
                                locale: "en-US".into(),
                                email_enabled: true,
                            }),
                        })
                        .await,
                )
            }
            UpsertContract => {
                sent = vec![CONTRACT.into(), ADA.into(), BOB.into()];
                shown(
                    self.directory(caller)
                        .upsert_contract(pb::UpsertContractRequest {
                            contract: Some(pb::Contract {
                                contract_id: CONTRACT.into(),
                                student_id: ADA.into(),
                                coach_id: BOB.into(),
                                status: pb::ContractStatus::Paid as i32,
                                session_minutes: 15,
                                sessions: Some(pb::contract::Sessions::Unlimited(true)),
                                sessions_used: 0,
                            }),
                        })
                        .await,
                )
            }
            GetParticipant => {
                asked = if own { ADA } else { "nobody-knownx" }.to_owned();
                sent = vec![asked.clone()];
                shown(
                    self.directory(caller)
                        .get_participant(pb::GetParticipantRequest {
                            user_id: asked.clone(),
                        })
                        .await,
                )
            }
            GetContract => {
                asked = if own { CONTRACT } else { "contract-nonex" }.to_owned();
                sent = vec![asked.clone()];
                shown(
                    self.directory(caller)
                        .get_contract(pb::GetContractRequest {
                            contract_id: asked.clone(),
                        })
                        .await,
                )
            }
            SetCoachAvailability => {
                sent = vec![BOB.into()];
                shown(
                    self.hours(caller)
                        .set_coach_availability(pb::SetCoachAvailabilityRequest {
                            request_id: String::new(),
                            coach_id: BOB.into(),
                            availability: Some(Self::bobs_hours()),
                        })
                        .await,
                )
            }
            ClearCoachAvailability => {
                sent = vec![BOB.into()];
                shown(
                    self.hours(caller)
                        .clear_coach_availability(pb::ClearCoachAvailabilityRequest {
                            request_id: String::new(),
                            coach_id: BOB.into(),
                        })
                        .await,
                )
            }
            GetCoachAvailability => {
                // Cleared by an earlier case, perhaps: the hours that leave
                // the shared call outside must be in force.
                self.hours(Caller::Admin)
                    .set_coach_availability(pb::SetCoachAvailabilityRequest {
                        request_id: String::new(),
                        coach_id: BOB.into(),
                        availability: Some(Self::bobs_hours()),
                    })
                    .await
                    .expect("BOB's hours published");
                sent = vec![BOB.into()];
                shown(
                    self.hours(caller)
                        .get_coach_availability(pb::GetCoachAvailabilityRequest {
                            coach_id: BOB.into(),
                        })
                        .await,
                )
            }
            FindSlots => {
                sent = vec![BOB.into()];
                let ts = |at: DateTime<Utc>| prost_types::Timestamp {
                    seconds: at.timestamp(),
                    nanos: 0,
                };
                shown(
                    self.hours(caller)
                        .find_slots(pb::FindSlotsRequest {
                            coach_id: BOB.into(),
                            from: Some(ts(day_at(2, 0, 0))),
                            to: Some(ts(day_at(3, 0, 0))),
                            duration_minutes: 15,
                            viewer_time_zone: String::new(),
                            step_minutes: 0,
                        })
                        .await,
                )
            }
            HealthCheck => {
                let mut health =
                    tonic_health::pb::health_client::HealthClient::new(self.authed(caller));
                shown(
                    health
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await,
                )
            }
            ReflectionListServices => {
                use tonic_reflection::pb::v1::{
                    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                    server_reflection_request::MessageRequest,
                };
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                };
                match ServerReflectionClient::new(self.authed(caller))
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                {
                    Ok(answers) => match answers.into_inner().next().await {
                        Some(Ok(answer)) => Ok(format!("{answer:?}")),
                        Some(Err(status)) => Err(status),
                        None => Err(Status::unknown("no reflection answer")),
                    },
                    Err(status) => Err(status),
                }
            }
        };
        Invocation {
            subject,
            asked,
            sent,
            result,
        }
    }

    /// Runs every caller × target of each of `rpcs` and records what differs
    /// from the matrix.
    async fn run(&mut self, rpcs: &[Rpc]) {
        for &rpc in rpcs {
            for &target in rpc.targets() {
                for caller in CALLERS {
                    let invocation = self.invoke(rpc, caller, target).await;
                    self.judge(rpc, caller, target, invocation);
                }
            }
        }
        self.compare_refusals();
    }

    fn judge(&mut self, rpc: Rpc, caller: Caller, target: Target, inv: Invocation) {
        *self.cases.entry(rpc).or_default() += 1;
        let label = format!("{rpc:?} as {caller:?} on {target:?}");
        let expected = want(rpc, caller, target);
        let got = inv.result.as_ref().err().map_or(Code::Ok, Status::code);
        if got != expected.code() {
            self.failures.push(format!(
                "{label}: expected {expected:?}, got {}",
                describe(&inv.result)
            ));
            return;
        }
        if caller.is_outsider() {
            let text = match &inv.result {
                Ok(answer) => answer.clone(),
                Err(status) => status_text(status),
            };
            let start = inv.subject.start;
            let mut secrets = vec![
                inv.subject.call_id.clone(),
                ADA.to_owned(),
                BOB.to_owned(),
                CONTRACT.to_owned(),
                format!("Name of {ADA}"),
                format!("Name of {BOB}"),
                format!("{ADA}@example.com"),
                format!("{BOB}@example.com"),
            ];
            if !rpc.reveals_busy_times() {
                secrets.extend([
                    start.format("%Y-%m-%dT%H:%M").to_string(),
                    start.format("%Y-%m-%d %H:%M").to_string(),
                    start.timestamp().to_string(),
                ]);
            }
            for secret in secrets {
                if !inv.sent.contains(&secret) && text.contains(&secret) {
                    self.failures
                        .push(format!("{label}: the answer reveals {secret:?}: {text}"));
                }
            }
        }
        if let Err(status) = &inv.result
            && status.code() == Code::PermissionDenied
        {
            assert!(!status.message().is_empty(), "{label}: an empty refusal");
            self.refusals.insert(
                (rpc, caller, target),
                status_text(status).replace(&inv.asked, "ID"),
            );
        }
        if let (Ok(answer), Some(show)) = (&inv.result, must_show(rpc, caller))
            && answer.contains(&inv.subject.call_id) != show
        {
            let verb = if show { "lacks" } else { "shows" };
            self.failures
                .push(format!("{label}: the answer {verb} the call: {answer}"));
        }
    }

    /// Someone else's call and a call that does not exist must get the same
    /// refusal, or the difference tells that the call exists.
    fn compare_refusals(&mut self) {
        for ((rpc, caller, target), text) in &self.refusals {
            if *target != Target::Own {
                continue;
            }
            if let Some(missing) = self.refusals.get(&(*rpc, *caller, Target::Missing))
                && missing != text
            {
                self.failures.push(format!(
                    "{rpc:?} as {caller:?}: another's call is refused as {text:?} \
                     but a missing one as {missing:?}"
                ));
            }
        }
    }

    fn finish(self) {
        let total: usize = self.cases.values().sum();
        eprintln!("{total} cases: {:?}", self.cases);
        assert!(
            self.failures.is_empty(),
            "{} of {total} cases differ from the matrix:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

#[tokio::test]
async fn scheduling_service_matrix() {
    let app = TestApp::spawn_with(policy()).await;
    let mut matrix = Matrix::new(&app).await;
    matrix
        .run(&[
            Rpc::GetSchedulingOptions,
            Rpc::CheckAvailability,
            Rpc::CheckAvailabilityForStudent,
            Rpc::ScheduleFreeConsultation,
            Rpc::SchedulePaidSession,
            Rpc::RescheduleCall,
            Rpc::CancelCall,
            Rpc::JoinCall,
            Rpc::EndCall,
            Rpc::GetCall,
            Rpc::GetCallHistory,
            Rpc::ListCallsOwn,
            Rpc::ListCallsOfUser,
            Rpc::WatchCalls,
        ])
        .await;

    // A stranger naming ADA's contract for a booking of their own is told
    // the contract is not theirs, and nothing of it.
    let foreign = matrix
        .scheduling(Caller::OtherStudent)
        .schedule_paid_session(pb::SchedulePaidSessionRequest {
            request_id: String::new(),
            student_id: CYD.into(),
            coach_id: DEE.into(),
            contract_id: CONTRACT.into(),
            start: Some(utc(day_at(2, 16, 0))),
            note: String::new(),
        })
        .await
        .expect_err("someone else's contract");
    assert_eq!(foreign.code(), Code::InvalidArgument, "{foreign:?}");
    assert_eq!(support::reason(&foreign), "CONTRACT_MISMATCH");
    let text = status_text(&foreign);
    for secret in [ADA, BOB] {
        assert!(!text.contains(secret), "reveals {secret}: {text}");
    }
    matrix.finish();
}

#[tokio::test]
async fn timer_and_directory_matrix() {
    let app = TestApp::spawn_with(policy()).await;
    let mut matrix = Matrix::new(&app).await;
    matrix
        .run(&[
            Rpc::MarkCallReady,
            Rpc::MarkCallMissed,
            Rpc::TriggerReminder,
            Rpc::CompleteOverdueCall,
            Rpc::UpsertParticipant,
            Rpc::UpsertContract,
            Rpc::GetParticipant,
            Rpc::GetContract,
            Rpc::HealthCheck,
            Rpc::ReflectionListServices,
        ])
        .await;
    matrix.finish();
}

#[tokio::test]
async fn availability_matrix() {
    let app = TestApp::spawn_with(policy()).await;
    let mut matrix = Matrix::new(&app).await;
    matrix
        .run(&[
            Rpc::SetCoachAvailability,
            Rpc::ClearCoachAvailability,
            Rpc::GetCoachAvailability,
            Rpc::FindSlots,
        ])
        .await;
    matrix.finish();
}

async fn next_change(stream: &mut tonic::Streaming<pb::CallChange>) -> pb::CallChange {
    tokio::time::timeout(StdDuration::from_secs(10), stream.next())
        .await
        .expect("a change within 10 s")
        .expect("stream open")
        .expect("no error")
}

fn changed_call(change: &pb::CallChange) -> String {
    change
        .event
        .as_ref()
        .map(|e| e.call_id.clone())
        .unwrap_or_default()
}

/// Reads until every one of `sentinels` has gone by; the feed is in commit
/// order, so by then every earlier change was either sent or held back.
async fn calls_seen(
    stream: &mut tonic::Streaming<pb::CallChange>,
    sentinels: &[&str],
) -> (HashSet<String>, Vec<pb::CallChange>) {
    let mut seen = HashSet::new();
    let mut changes = Vec::new();
    while !sentinels.iter().all(|s| seen.contains(*s)) {
        let change = next_change(stream).await;
        seen.insert(changed_call(&change));
        changes.push(change);
    }
    (seen, changes)
}

#[tokio::test]
async fn watches_and_lists_show_each_user_only_their_own_calls() {
    let app = TestApp::spawn_with(policy()).await;
    let mut matrix = Matrix::new(&app).await;
    let watchers = [
        Caller::Student,
        Caller::OtherStudent,
        Caller::Coach,
        Caller::OtherCoach,
        Caller::Admin,
        Caller::Service,
    ];
    let mut streams = Vec::new();
    for caller in watchers {
        let stream = matrix
            .scheduling(caller)
            .watch_calls(pb::WatchCallsRequest::default())
            .await
            .expect("watch")
            .into_inner();
        streams.push((caller, stream));
    }

    // ADA's and BOB's call, booked and cancelled; CYD's and DEE's, the same;
    // then one call across the pairs each, committed last.
    let x = matrix.fresh_call(false).await;
    matrix
        .scheduling(Caller::Coach)
        .cancel_call(pb::CancelCallRequest {
            call_id: x.call_id.clone(),
            ..Default::default()
        })
        .await
        .expect("cancelled");
    let y = app
        .book_paid(CYD, DEE, OTHER_CONTRACT, day_at(2, 18, 0))
        .await
        .expect("booked");
    let y = card(&y).call_id.clone();
    matrix
        .scheduling(Caller::OtherCoach)
        .cancel_call(pb::CancelCallRequest {
            call_id: y.clone(),
            ..Default::default()
        })
        .await
        .expect("cancelled");
    let ada_dee = app
        .book_free(ADA, DEE, matrix.next_slot())
        .await
        .expect("booked");
    let ada_dee = card(&ada_dee).call_id.clone();
    let cyd_bob = app
        .book_free(CYD, BOB, matrix.next_slot())
        .await
        .expect("booked");
    let cyd_bob = card(&cyd_bob).call_id.clone();

    let x = x.call_id;
    let everything: HashSet<String> = [&x, &y, &ada_dee, &cyd_bob].into_iter().cloned().collect();
    let expected = |caller: Caller| -> HashSet<String> {
        let ids: Vec<&String> = match caller {
            Caller::Student => vec![&x, &ada_dee],
            Caller::Coach => vec![&x, &cyd_bob],
            Caller::OtherStudent => vec![&y, &cyd_bob],
            Caller::OtherCoach => vec![&y, &ada_dee],
            _ => return everything.clone(),
        };
        ids.into_iter().cloned().collect()
    };
    // The calls each had before the watches began: a watch "from now" may
    // start a little earlier (while a transaction anywhere on the server is
    // open, the gap-free feed holds back), so it may show some of them too.
    let earlier = |caller: Caller| -> HashSet<String> {
        let ids = match caller {
            Caller::Student | Caller::Coach => vec![&matrix.shared, &matrix.cancelled],
            Caller::OtherStudent | Caller::OtherCoach => vec![&matrix.theirs],
            _ => vec![&matrix.shared, &matrix.cancelled, &matrix.theirs],
        };
        ids.into_iter().map(|s| s.call_id.clone()).collect()
    };
    let mut after_x = String::new();
    for (caller, stream) in &mut streams {
        let wanted = expected(*caller);
        let last: Vec<&str> = [ada_dee.as_str(), cyd_bob.as_str()]
            .into_iter()
            .filter(|id| wanted.contains(*id))
            .collect();
        let (seen, changes) = calls_seen(stream, &last).await;
        let allowed: HashSet<String> = wanted.union(&earlier(*caller)).cloned().collect();
        assert!(
            wanted.is_subset(&seen) && seen.is_subset(&allowed),
            "{caller:?} watched the wrong calls: {seen:?}, should be {wanted:?}"
        );
        if *caller == Caller::Student {
            after_x = changes
                .iter()
                .find(|c| changed_call(c) == x)
                .expect("X's booking")
                .position
                .clone();
        }
    }

    // Resuming from the position of someone else's change shows only one's
    // own after it.
    let mut resumed = matrix
        .scheduling(Caller::OtherStudent)
        .watch_calls(pb::WatchCallsRequest { after: after_x })
        .await
        .expect("watch")
        .into_inner();
    let (seen, _) = calls_seen(&mut resumed, &[&cyd_bob]).await;
    assert_eq!(seen, expected(Caller::OtherStudent));

    // A list without a user is the caller's own calls, every one of them
    // and nobody else's; staff take part in none.
    for caller in watchers {
        let listed: HashSet<String> = matrix
            .scheduling(caller)
            .list_calls(pb::ListCallsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .calls
            .iter()
            .map(|c| card(c).call_id.clone())
            .collect();
        let wanted: HashSet<String> = match caller {
            Caller::Admin | Caller::Service => HashSet::new(),
            _ => expected(caller).union(&earlier(caller)).cloned().collect(),
        };
        assert_eq!(listed, wanted, "{caller:?} listed the wrong calls");
    }
}
