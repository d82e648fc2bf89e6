//! `SchedulingService`: booking, changing, querying and watching calls.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use futures::Stream;
use skileez_domain::{
    ActorRole, CallId, CallKind, CoachBusy, Command, ContractId, ContractStatus, RescheduleCall,
    ScheduleCall, Unavailability, UserId, availability,
};
use skileez_eventstore::FeedPosition;
use skileez_proto::scheduling as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Context, check_access};
use crate::{
    app::{RequestKey, coach_window},
    auth::Principal,
    error::{ApiError, Violation},
    feed::{self, Change},
    mapping,
    names::PageNames,
    repo::{self, ListFilter, PageKey},
    validate::{self, Checks, MAX_NOTE_CHARS, MAX_REASON_CHARS},
};

pub struct SchedulingApi {
    ctx: Context,
}

impl SchedulingApi {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    /// The display names of a page's people: the listed user's from the
    /// page's statement, their counterparts' from memory when held for the
    /// directory epoch that statement saw, else read (and kept).
    async fn page_names<'a>(
        &self,
        user: &'a UserId,
        calls: &'a [skileez_domain::Call],
        directory: Option<repo::PageDirectory>,
    ) -> Result<PageNames<'a>, ApiError> {
        let Some(repo::PageDirectory { epoch, own_name }) = directory else {
            return Ok(PageNames::default());
        };
        let mut others: Vec<&str> = calls
            .iter()
            .flat_map(|c| [c.student_id.as_str(), c.coach_id.as_str()])
            .filter(|id| *id != user.as_str())
            .collect();
        others.sort_unstable();
        others.dedup();
        let mut names = match self.ctx.names.get(epoch, &others) {
            Some(names) => PageNames::from_sorted(others, names),
            None => {
                let (now, read) = repo::display_names_now(&self.ctx.reads, &others).await?;
                // People the directory does not know have no name.
                let (ids, names): (Vec<_>, Vec<Arc<str>>) = others
                    .into_iter()
                    .filter_map(|id| Some((id, Arc::from(read.get(id)?.as_str()))))
                    .unzip();
                // The page and the cache share each name read.
                self.ctx
                    .names
                    .put(now, ids.iter().copied().zip(names.iter().cloned()));
                PageNames::from_sorted(ids, names)
            }
        };
        if let Some(own) = own_name {
            let own: Arc<str> = own.into();
            // Kept too: the user is someone else's counterpart.
            self.ctx.names.put(epoch, [(user.as_str(), own.clone())]);
            names.insert(user.as_str(), own);
        }
        Ok(names)
    }

    /// The caller's own zone, for local times sent without one.
    async fn caller_zone(&self, principal: &Principal) -> Result<Option<String>, ApiError> {
        Ok(
            repo::participant(self.ctx.scheduler.pool(), principal.user_id.as_str())
                .await?
                .map(|p| p.time_zone),
        )
    }

    /// [`Self::caller_zone`], read only when `start` is a local time
    /// without a zone: a UTC start or one naming its zone needs no lookup.
    async fn caller_zone_for(
        &self,
        principal: &Principal,
        start: Option<&pb::StartTime>,
    ) -> Result<Option<String>, ApiError> {
        if validate::needs_caller_zone(start) {
            self.caller_zone(principal).await
        } else {
            Ok(None)
        }
    }

    /// A student books only for themself; coaches do not book; admins and
    /// services book for anyone.
    fn may_book_for(principal: &Principal, student: &UserId) -> Result<(), ApiError> {
        match principal.role {
            ActorRole::Student if &principal.user_id == student => Ok(()),
            ActorRole::Student => Err(ApiError::PermissionDenied(
                "a student books only for themself: student_id must be your own id".to_owned(),
            )),
            ActorRole::Coach => Err(ApiError::PermissionDenied(
                "calls are booked by the student (or an admin)".to_owned(),
            )),
            ActorRole::Admin | ActorRole::Service => Ok(()),
        }
    }

    async fn schedule(
        &self,
        principal: Principal,
        kind: CallKind,
        fields: BookingFields<'_>,
        request: Option<RequestKey>,
    ) -> Result<pb::ScheduleCallResponse, ApiError> {
        let BookingInput {
            student,
            coach,
            contract_id,
            note,
        } = validate_booking(&fields)?;
        Self::may_book_for(&principal, &student)?;
        let zone = self.caller_zone_for(&principal, fields.start).await?;
        let start = validate::start(validate::START, fields.start, zone.as_deref())?;
        let pool = self.ctx.scheduler.pool();

        let contract = match &contract_id {
            Some(id) => Some(
                repo::contract(pool, id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("contract {id} is not known")))?,
            ),
            None => None,
        };
        let existing = match kind {
            CallKind::FreeConsultation => repo::free_consultation(pool, &student, &coach)
                .await?
                .map(|c| c.id),
            CallKind::PaidSession => None,
        };
        let call_id = CallId::new();
        let command = Command::Schedule(ScheduleCall {
            call_id,
            kind,
            student_id: student,
            coach_id: coach,
            contract,
            start,
            by: principal.actor(),
            existing_free_consultation: existing,
            note,
        });
        self.ctx
            .scheduler
            .execute_new(
                &principal,
                call_id,
                request,
                |_| Ok(command.clone()),
                |outcome| pb::ScheduleCallResponse {
                    call: self.ctx.first_call(outcome),
                },
            )
            .await
    }

    /// Cancel, join and end: a command on one existing call.
    async fn act(
        &self,
        principal: Principal,
        call_id: &str,
        request: Option<RequestKey>,
        admin_ok: bool,
        command: impl Fn(&Principal) -> Command,
    ) -> Result<pb::CallResponse, ApiError> {
        let id = validate::call_id("call_id", call_id)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        self.ctx
            .scheduler
            .execute(
                &principal,
                id,
                request,
                |state| {
                    check_access(
                        &principal,
                        id,
                        state,
                        admin_ok && principal.role == ActorRole::Admin,
                    )?;
                    Ok(command(&principal))
                },
                |outcome| pb::CallResponse {
                    call: self.ctx.first_call(outcome),
                },
            )
            .await
    }

    async fn names_for(
        &self,
        calls: &[&skileez_domain::Call],
    ) -> Result<HashMap<String, String>, ApiError> {
        let people: Vec<&str> = calls
            .iter()
            .flat_map(|c| [c.student_id.as_str(), c.coach_id.as_str()])
            .collect();
        let mut conn = self.ctx.scheduler.pool().acquire().await?;
        Ok(repo::display_names(&mut conn, &people).await?)
    }
}

/// What the two booking RPCs have in common.
pub struct BookingFields<'a> {
    pub student_id: &'a str,
    pub coach_id: &'a str,
    pub contract_id: Option<&'a str>,
    pub start: Option<&'a pb::StartTime>,
    pub note: &'a str,
}

impl<'a> From<&'a pb::ScheduleFreeConsultationRequest> for BookingFields<'a> {
    fn from(message: &'a pb::ScheduleFreeConsultationRequest) -> Self {
        Self {
            student_id: &message.student_id,
            coach_id: &message.coach_id,
            contract_id: None,
            start: message.start.as_ref(),
            note: &message.note,
        }
    }
}

impl<'a> From<&'a pb::SchedulePaidSessionRequest> for BookingFields<'a> {
    fn from(message: &'a pb::SchedulePaidSessionRequest) -> Self {
        Self {
            student_id: &message.student_id,
            coach_id: &message.coach_id,
            contract_id: Some(&message.contract_id),
            start: message.start.as_ref(),
            note: &message.note,
        }
    }
}

/// A booking's fields but its start, checked. The start is resolved later
/// (`validate::start`), once the caller's profile zone is known.
#[derive(Debug)]
pub struct BookingInput {
    pub student: UserId,
    pub coach: UserId,
    pub contract_id: Option<ContractId>,
    pub note: Option<String>,
}

pub fn validate_booking(fields: &BookingFields<'_>) -> Result<BookingInput, ApiError> {
    let mut checks = Checks::new();
    let student = checks.take(validate::user_id("student_id", fields.student_id));
    let coach = checks.take(validate::user_id("coach_id", fields.coach_id));
    let contract_id = fields
        .contract_id
        .map(|id| validate::contract_id("contract_id", id))
        .transpose()
        .unwrap_or_else(|v| {
            checks.push(v);
            None
        });
    let note = checks
        .take(validate::text("note", fields.note, MAX_NOTE_CHARS))
        .flatten();
    checks.finish()?;
    let (Some(student), Some(coach)) = (student, coach) else {
        return Err(ApiError::invalid("student_id", "required"));
    };
    Ok(BookingInput {
        student,
        coach,
        contract_id,
        note,
    })
}

/// `GetSchedulingOptions`: the student and the coach.
pub fn validate_scheduling_options(
    message: &pb::GetSchedulingOptionsRequest,
) -> Result<(UserId, UserId), ApiError> {
    let mut checks = Checks::new();
    let student = checks.take(validate::user_id("student_id", &message.student_id));
    let coach = checks.take(validate::user_id("coach_id", &message.coach_id));
    checks.finish()?;
    let (Some(student), Some(coach)) = (student, coach) else {
        return Err(ApiError::invalid("student_id", "required"));
    };
    Ok((student, coach))
}

/// `CheckAvailability` but its start: the coach, the optional student and
/// the length in minutes (0 means `default_minutes`).
pub fn validate_check_availability(
    message: &pb::CheckAvailabilityRequest,
    default_minutes: u32,
) -> Result<(UserId, Option<UserId>, u32), ApiError> {
    let mut checks = Checks::new();
    let coach = checks.take(validate::user_id("coach_id", &message.coach_id));
    let student = if message.student_id.is_empty() {
        None
    } else {
        checks.take(validate::user_id("student_id", &message.student_id))
    };
    let duration = match message.duration_minutes {
        0 => default_minutes,
        minutes @ 1..=240 => minutes,
        _ => {
            checks.push(Violation::new(
                "duration_minutes",
                "must be between 1 and 240 (0 means the free consultation's 15)",
            ));
            0
        }
    };
    checks.finish()?;
    let Some(coach) = coach else {
        return Err(ApiError::invalid("coach_id", "required"));
    };
    Ok((coach, student, duration))
}

/// `CheckAvailability`'s start and end, the start read in `caller_zone` when
/// it is a local time without a zone.
pub fn check_availability_window(
    message: &pb::CheckAvailabilityRequest,
    caller_zone: Option<&str>,
    duration_minutes: u32,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let start = validate::start(validate::START, message.start.as_ref(), caller_zone)?.utc;
    // Cannot overflow: `start` is inside the Timestamp range, far from chrono's edges.
    let end = start + Duration::minutes(i64::from(duration_minutes));
    if !validate::in_timestamp_range(end) {
        return Err(ApiError::invalid(
            validate::START.root,
            "too late: the call would end after 9999-12-31T23:59:59Z, which no answer can carry",
        ));
    }
    Ok((start, end))
}

/// `RescheduleCall` but its new start: the call and the optional reason.
pub fn validate_reschedule(
    message: &pb::RescheduleCallRequest,
) -> Result<(CallId, Option<String>), ApiError> {
    let mut checks = Checks::new();
    let id = checks.take(validate::call_id("call_id", &message.call_id));
    let reason = checks
        .take(validate::text("reason", &message.reason, MAX_REASON_CHARS))
        .flatten();
    checks.finish()?;
    let id = id.ok_or_else(|| ApiError::invalid("call_id", "required"))?;
    Ok((id, reason))
}

/// What `ListCalls` asks for.
#[derive(Debug)]
pub struct ListQuery {
    pub user: UserId,
    pub filter: ListFilter,
    pub page_size: u32,
    pub after: Option<PageKey>,
}

/// `ListCalls`: an empty `user_id` means `caller`; whether the caller may
/// list that user's calls is the handler's check.
pub fn validate_list_calls(
    message: &pb::ListCallsRequest,
    caller: &UserId,
) -> Result<ListQuery, ApiError> {
    let mut checks = Checks::new();
    let user = if message.user_id.is_empty() {
        Some(caller.clone())
    } else {
        checks.take(validate::user_id("user_id", &message.user_id))
    };
    let filter = match pb::CallFilter::try_from(message.filter) {
        Ok(pb::CallFilter::Upcoming) => ListFilter::Upcoming,
        Ok(pb::CallFilter::Past) => ListFilter::Past,
        Ok(pb::CallFilter::All | pb::CallFilter::Unspecified) => ListFilter::All,
        Err(_) => {
            checks.push(Violation::new("filter", "must be UPCOMING, PAST or ALL"));
            ListFilter::All
        }
    };
    let page_size = checks
        .take(validate::page_size(message.page_size))
        .unwrap_or(20);
    let user = user.unwrap_or_else(|| caller.clone());
    let after = checks
        .take(decode_page_token(&message.page_token, &user, filter))
        .flatten();
    checks.finish()?;
    Ok(ListQuery {
        user,
        filter,
        page_size,
        after,
    })
}

/// `WatchCalls`' `after`: `None` (empty) means from the feed's head.
pub fn validate_watch_after(after: &str) -> Result<Option<FeedPosition>, ApiError> {
    if after.is_empty() {
        return Ok(None);
    }
    after
        .parse::<FeedPosition>()
        .map(Some)
        .map_err(|_| ApiError::invalid("after", "not a position from a previous CallChange"))
}

pub(super) fn request_key(
    principal: &Principal,
    request_id: &str,
    method: &'static str,
    message: &impl prost::Message,
) -> Result<Option<RequestKey>, ApiError> {
    let id = validate::request_id(request_id).map_err(|v| ApiError::InvalidArgument(vec![v]))?;
    Ok(RequestKey::new(principal, id, method, message))
}

/// AIP-158 page token: where the previous page ended, bound to the query it
/// belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
struct PageToken {
    user: String,
    filter: ListFilter,
    after: PageKey,
}

fn encode_page_token(token: &PageToken) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

fn decode_page_token(
    value: &str,
    user: &UserId,
    filter: ListFilter,
) -> Result<Option<PageKey>, Violation> {
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Violation::new(
            "page_token",
            "not a page token from a previous ListCalls answer with the same user and filter",
        )
    };
    let token: PageToken = URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(invalid)?;
    if token.user != user.as_str() || token.filter != filter {
        return Err(invalid());
    }
    Ok(Some(token.after))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::CallChange, Status>> + Send>>;

#[tonic::async_trait]
impl pb::scheduling_service_server::SchedulingService for SchedulingApi {
    #[tracing::instrument(name = "GetSchedulingOptions", skip_all)]
    async fn get_scheduling_options(
        &self,
        request: Request<pb::GetSchedulingOptionsRequest>,
    ) -> Result<Response<pb::GetSchedulingOptionsResponse>, Status> {
        let principal = self.ctx.principal(&request)?;
        let (student, coach) = validate_scheduling_options(request.get_ref())?;
        if !principal.is_privileged() && principal.user_id != student && principal.user_id != coach
        {
            return Err(ApiError::PermissionDenied(
                "you may only ask about your own options: you must be the student or the coach"
                    .to_owned(),
            )
            .into());
        }
        let pool = &self.ctx.reads;
        let existing = repo::free_consultation(pool, &student, &coach)
            .await
            .map_err(ApiError::from)?;
        let contracts = repo::contracts_between(pool, &student, &coach)
            .await
            .map_err(ApiError::from)?;
        let names = match &existing {
            Some(call) => self.names_for(&[call]).await?,
            None => Default::default(),
        };
        let now = Utc::now();
        let policy = self.ctx.scheduler.policy();
        Ok(Response::new(pb::GetSchedulingOptionsResponse {
            free_consultation: Some(pb::FreeConsultationOption {
                available: existing.is_none() && student != coach,
                existing: existing
                    .as_ref()
                    .map(|c| mapping::call(c, &names, now, policy)),
            }),
            paid_sessions: contracts
                .into_iter()
                .filter(|c| c.status == ContractStatus::Paid)
                .filter_map(|c| {
                    let left = c.sessions_total.map(|t| t.saturating_sub(c.sessions_used));
                    (left != Some(0)).then(|| pb::PaidSessionOption {
                        contract_id: c.id.to_string(),
                        session_minutes: c.session_minutes,
                        sessions_left: left,
                        sessions_used: c.sessions_used,
                    })
                })
                .collect(),
        }))
    }

    #[tracing::instrument(name = "CheckAvailability", skip_all)]
    async fn check_availability(
        &self,
        request: Request<pb::CheckAvailabilityRequest>,
    ) -> Result<Response<pb::CheckAvailabilityResponse>, Status> {
        let principal = self.ctx.principal(&request)?;
        let message = request.get_ref();
        let (coach, student, duration) = validate_check_availability(
            message,
            self.ctx.scheduler.policy().free_consultation_minutes,
        )?;
        if let Some(student) = &student
            && !principal.is_privileged()
            && &principal.user_id != student
        {
            return Err(ApiError::PermissionDenied(
                "you may only check your own calls: student_id must be your id or empty".to_owned(),
            )
            .into());
        }
        let zone = self
            .caller_zone_for(&principal, message.start.as_ref())
            .await?;
        let (start, end) = check_availability_window(message, zone.as_deref(), duration)?;
        let policy = self.ctx.scheduler.policy();
        let now = Utc::now();

        let pool = &self.ctx.reads;

        // The coach's side: the rules of a booking, with the coach's hours,
        // buffers, own notice and daily maximum when they published them.
        let (from, to) = coach_window(policy, start, end);
        let context = repo::coach_context(pool, &coach, from, to, &[])
            .await
            .map_err(ApiError::from)?;
        let hours = context.hours.map(|h| h.availability);
        let coach_calls = context.calls;
        let busy: Vec<CoachBusy> = coach_calls
            .iter()
            .map(|c| CoachBusy {
                start: c.start,
                end: c.end,
            })
            .collect();
        let reasons = availability::explain(policy, hours.as_ref(), &busy, now, start, duration)
            .map_err(ApiError::from)?;
        let reveal = |call_id: CallId, student: &str, coach_id: &str| {
            let mine =
                student == principal.user_id.as_str() || coach_id == principal.user_id.as_str();
            if mine || principal.is_privileged() {
                call_id.to_string()
            } else {
                String::new()
            }
        };
        let mut violations = Vec::new();
        let mut conflicts = Vec::new();
        for reason in &reasons {
            let (call_start, call_end, buffer_only) = match *reason {
                Unavailability::Clash { start, end } => (start, end, false),
                Unavailability::Buffer {
                    clashing_start,
                    clashing_end,
                } => {
                    violations.push(pb::RuleViolation {
                        reason: reason.reason().to_owned(),
                        message: mapping::buffer_message(
                            policy,
                            hours.as_ref(),
                            clashing_start,
                            clashing_end,
                        ),
                    });
                    (clashing_start, clashing_end, true)
                }
                _ => {
                    violations.push(pb::RuleViolation {
                        reason: reason.reason().to_owned(),
                        message: reason.to_error(start, end).to_string(),
                    });
                    continue;
                }
            };
            let (busy_start, busy_end) =
                availability::coach_busy_range(policy, hours.as_ref(), call_start, call_end);
            let call_id = coach_calls
                .iter()
                .find(|c| c.start == call_start && c.end == call_end)
                .map(|c| reveal(c.call_id, &c.student_id, coach.as_str()))
                .unwrap_or_default();
            conflicts.push(pb::Conflict {
                party: pb::ConflictParty::Coach.into(),
                start: Some(mapping::timestamp(busy_start)),
                end: Some(mapping::timestamp(busy_end)),
                call_id,
                call_start: Some(mapping::timestamp(call_start)),
                call_end: Some(mapping::timestamp(call_end)),
                buffer_only,
            });
        }

        // The student's side: their calls with other coaches.
        if let Some(student) = &student {
            let clashes = repo::student_clashes(pool, student, &coach, start, end)
                .await
                .map_err(ApiError::from)?;
            conflicts.extend(clashes.into_iter().map(|clash| pb::Conflict {
                party: pb::ConflictParty::Student.into(),
                start: Some(mapping::timestamp(clash.start)),
                end: Some(mapping::timestamp(clash.end)),
                call_id: reveal(clash.call_id, &clash.student_id, &clash.coach_id),
                call_start: Some(mapping::timestamp(clash.start)),
                call_end: Some(mapping::timestamp(clash.end)),
                buffer_only: false,
            }));
        }
        Ok(Response::new(pb::CheckAvailabilityResponse {
            available: conflicts.is_empty() && violations.is_empty(),
            start: Some(mapping::timestamp(start)),
            end: Some(mapping::timestamp(end)),
            conflicts,
            violations,
        }))
    }

    #[tracing::instrument(name = "ScheduleFreeConsultation", skip_all)]
    async fn schedule_free_consultation(
        &self,
        request: Request<pb::ScheduleFreeConsultationRequest>,
    ) -> Result<Response<pb::ScheduleCallResponse>, Status> {
        let principal = self.ctx.limited_principal(&request)?;
        let message = request.get_ref();
        let key = request_key(
            &principal,
            &message.request_id,
            "ScheduleFreeConsultation",
            message,
        )?;
        Ok(Response::new(
            self.schedule(principal, CallKind::FreeConsultation, message.into(), key)
                .await?,
        ))
    }

    #[tracing::instrument(name = "SchedulePaidSession", skip_all)]
    async fn schedule_paid_session(
        &self,
        request: Request<pb::SchedulePaidSessionRequest>,
    ) -> Result<Response<pb::ScheduleCallResponse>, Status> {
        let principal = self.ctx.limited_principal(&request)?;
        let message = request.get_ref();
        let key = request_key(
            &principal,
            &message.request_id,
            "SchedulePaidSession",
            message,
        )?;
        Ok(Response::new(
            self.schedule(principal, CallKind::PaidSession, message.into(), key)
                .await?,
        ))
    }

    #[tracing::instrument(name = "RescheduleCall", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn reschedule_call(
        &self,
        request: Request<pb::RescheduleCallRequest>,
    ) -> Result<Response<pb::RescheduleCallResponse>, Status> {
        let principal = self.ctx.limited_principal(&request)?;
        let message = request.get_ref();
        let key = request_key(&principal, &message.request_id, "RescheduleCall", message)?;
        let (id, reason) = validate_reschedule(message)?;
        let zone = self
            .caller_zone_for(&principal, message.new_start.as_ref())
            .await?;
        let new_start = validate::start(
            validate::NEW_START,
            message.new_start.as_ref(),
            zone.as_deref(),
        )?;
        let new_call_id = CallId::new();
        let response = self
            .ctx
            .scheduler
            .execute(
                &principal,
                id,
                key,
                |state| {
                    check_access(&principal, id, state, false)?;
                    Ok(Command::Reschedule(RescheduleCall {
                        by: principal.actor(),
                        new_call_id,
                        new_start: new_start.clone(),
                        reason: reason.clone(),
                    }))
                },
                |outcome| pb::RescheduleCallResponse {
                    previous: self.ctx.first_call(outcome),
                    call: outcome.calls.get(1).map(|c| self.ctx.show(c, outcome)),
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(name = "CancelCall", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn cancel_call(
        &self,
        request: Request<pb::CancelCallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let principal = self.ctx.limited_principal(&request)?;
        let message = request.get_ref();
        let key = request_key(&principal, &message.request_id, "CancelCall", message)?;
        let reason = validate::text("reason", &message.reason, MAX_REASON_CHARS)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        let response = self
            .act(principal, &message.call_id, key, true, |p| {
                Command::Cancel {
                    by: p.actor(),
                    reason: reason.clone(),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(name = "JoinCall", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn join_call(
        &self,
        request: Request<pb::JoinCallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let principal = self.ctx.limited_principal(&request)?;
        let message = request.get_ref();
        let key = request_key(&principal, &message.request_id, "JoinCall", message)?;
        let response = self
            .act(principal, &message.call_id, key, false, |p| Command::Join {
                by: p.actor(),
            })
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(name = "EndCall", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn end_call(
        &self,
        request: Request<pb::EndCallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let principal = self.ctx.limited_principal(&request)?;
        let message = request.get_ref();
        let key = request_key(&principal, &message.request_id, "EndCall", message)?;
        let response = self
            .act(principal, &message.call_id, key, false, |p| Command::End {
                by: p.actor(),
            })
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(name = "GetCall", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn get_call(
        &self,
        request: Request<pb::GetCallRequest>,
    ) -> Result<Response<pb::Call>, Status> {
        let principal = self.ctx.principal(&request)?;
        let id = validate::call_id("call_id", &request.get_ref().call_id)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        // The names come along (one round trip); nothing of the row is
        // revealed before the access check.
        let (call, names) = match repo::load_call(&self.ctx.reads, id)
            .await
            .map_err(ApiError::from)?
        {
            Some((call, names)) => (Some(call), names),
            None => (None, HashMap::new()),
        };
        let call = check_access(&principal, id, call.as_ref(), true)?;
        Ok(Response::new(mapping::call(
            call,
            &names,
            Utc::now(),
            self.ctx.scheduler.policy(),
        )))
    }

    #[tracing::instrument(name = "GetCallHistory", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn get_call_history(
        &self,
        request: Request<pb::GetCallHistoryRequest>,
    ) -> Result<Response<pb::GetCallHistoryResponse>, Status> {
        let principal = self.ctx.principal(&request)?;
        let id = validate::call_id("call_id", &request.get_ref().call_id)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        let scheduler = &self.ctx.scheduler;
        let records = scheduler
            .store()
            .read_stream(&crate::app::call_stream(id))
            .await
            .map_err(ApiError::from)?;
        let last = crate::app::replay_records(&records)?
            .pop()
            .map(|(_, call)| call);
        check_access(&principal, id, last.as_ref(), true)?;
        let changes = feed::to_changes(scheduler.store(), scheduler.policy(), &records).await?;
        Ok(Response::new(pb::GetCallHistoryResponse {
            events: changes.into_iter().map(|c| c.event).collect(),
        }))
    }

    #[tracing::instrument(name = "ListCalls", skip_all)]
    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let principal = self.ctx.principal(&request)?;
        let ListQuery {
            user,
            filter,
            page_size,
            after,
        } = validate_list_calls(request.get_ref(), &principal.user_id)?;
        if user != principal.user_id && principal.role != ActorRole::Admin {
            return Err(ApiError::PermissionDenied(
                "only admins may list another user's calls".to_owned(),
            )
            .into());
        }
        let repo::Page {
            mut calls,
            directory,
        } = repo::list_calls(
            &self.ctx.reads,
            &user,
            filter,
            after.as_ref(),
            page_size + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let more = calls.len() > page_size as usize;
        calls.truncate(page_size as usize);
        let names = self.page_names(&user, &calls, directory).await?;
        let next_page_token = match (more, calls.last()) {
            (true, Some(last)) => encode_page_token(&PageToken {
                user: user.to_string(),
                filter,
                after: PageKey {
                    start: last.start,
                    call_id: last.id.0,
                },
            }),
            _ => String::new(),
        };
        let now = Utc::now();
        let policy = self.ctx.scheduler.policy();
        Ok(Response::new(pb::ListCallsResponse {
            calls: calls
                .iter()
                .map(|c| mapping::call(c, &names, now, policy))
                .collect(),
            next_page_token,
        }))
    }

    type WatchCallsStream = WatchStream;

    #[tracing::instrument(name = "WatchCalls", skip_all)]
    async fn watch_calls(
        &self,
        request: Request<pb::WatchCallsRequest>,
    ) -> Result<Response<Self::WatchCallsStream>, Status> {
        let principal = self.ctx.principal(&request)?;
        let after = validate_watch_after(&request.get_ref().after)?;
        let store = self.ctx.scheduler.store().clone();
        let start = match after {
            Some(position) => position,
            None => feed::head(&store).await?,
        };
        // Subscribe before catching up, so nothing committed meanwhile is lost.
        let live = self.ctx.hub.subscribe();
        let (sender, receiver) = mpsc::channel(64);
        let watcher = Watcher {
            store,
            policy: self.ctx.scheduler.policy().clone(),
            user: (!principal.is_privileged()).then(|| principal.user_id.to_string()),
            sender,
        };
        let shutdown = self.ctx.shutdown.clone();
        self.ctx.tasks.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = watcher.run(start, live) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "watch ended");
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// One client's watch.
struct Watcher {
    store: skileez_eventstore::EventStore,
    policy: skileez_domain::Policy,
    /// `None` for admins and services, who see every call.
    user: Option<String>,
    sender: mpsc::Sender<Result<pb::CallChange, Status>>,
}

/// Why a watch stopped.
#[derive(Debug, thiserror::Error)]
enum WatchEnd {
    #[error("the client went away")]
    ClientGone,
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl Watcher {
    async fn run(
        self,
        mut position: FeedPosition,
        mut live: broadcast::Receiver<Arc<Change>>,
    ) -> Result<(), WatchEnd> {
        loop {
            // Catch up from the store until it has nothing newer.
            loop {
                let records = self
                    .store
                    .read_feed(position, 500)
                    .await
                    .map_err(ApiError::from)?;
                let Some(last) = records.last() else { break };
                let last = last.feed_position();
                for change in feed::to_changes(&self.store, &self.policy, &records).await? {
                    self.send(&change).await?;
                }
                position = last;
            }
            // Then follow the live feed until we fall behind it.
            loop {
                match live.recv().await {
                    Ok(change) if change.position <= position => {}
                    Ok(change) => {
                        self.send(&change).await?;
                        position = change.position;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }

    async fn send(&self, change: &Change) -> Result<(), WatchEnd> {
        if let Some(user) = &self.user
            && !change.concerns(user)
        {
            return Ok(());
        }
        self.sender
            .send(Ok(pb::CallChange {
                position: change.position.to_string(),
                event: Some(change.event.clone()),
            }))
            .await
            .map_err(|_| WatchEnd::ClientGone)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Found by the `scheduling_service` fuzz target (`crash-cc4cc88c…`): `[rpc, zone]`
    /// then a CheckAvailabilityRequest starting at chrono's last second,
    /// 240 minutes long. The end overflowed (`DateTime + TimeDelta`
    /// panicked) before `validate::timestamp` kept to the protobuf range.
    const CHECK_AVAILABILITY_AT_CHRONOS_END: &[u8] = &[
        0x01, 0x01, 0x0a, 0x07, 0x63, 0x6f, 0x61, 0x63, 0x68, 0x2d, 0x31, 0x12, 0x0a, 0x0a, 0x08,
        0x08, 0xff, 0xd6, 0xa9, 0xd0, 0xf9, 0xee, 0x01, 0x18, 0xf0, 0x01, 0x22, 0x05, 0x73, 0x74,
        0x75, 0x2d, 0x31,
    ];

    #[test]
    fn a_start_at_the_end_of_time_is_rejected_not_overflowed() {
        let message =
            pb::CheckAvailabilityRequest::decode(&CHECK_AVAILABILITY_AT_CHRONOS_END[2..]).unwrap();
        let (_, _, minutes) = validate_check_availability(&message, 15).unwrap();
        assert_eq!(minutes, 240);
        match check_availability_window(&message, Some("Europe/Berlin"), minutes) {
            Err(ApiError::InvalidArgument(violations)) => {
                assert_eq!(violations[0].field, "start.utc");
            }
            other => panic!("expected INVALID_ARGUMENT on start.utc, got {other:?}"),
        }
    }

    /// Found by the `scheduling_service` fuzz target (`crash-a51873da…`): a check from
    /// the last nanosecond of 9999, whose end no Timestamp can carry.
    const CHECK_AVAILABILITY_ENDING_AFTER_9999: &[u8] = &[
        0x01, 0x01, 0x0a, 0x07, 0x63, 0x6f, 0x61, 0x63, 0x68, 0x2d, 0x31, 0x12, 0x0f, 0x0a, 0x0d,
        0x08, 0xff, 0x82, 0xd1, 0xff, 0xaf, 0x07, 0x10, 0xff, 0x93, 0xeb, 0xdc, 0x03, 0x18, 0xf0,
        0x01, 0x22, 0x05, 0x73, 0x74, 0x75, 0x2d, 0x31,
    ];

    #[test]
    fn a_check_ending_after_9999_is_rejected() {
        let message =
            pb::CheckAvailabilityRequest::decode(&CHECK_AVAILABILITY_ENDING_AFTER_9999[2..])
                .unwrap();
        match check_availability_window(&message, Some("Europe/Berlin"), 240) {
            Err(ApiError::InvalidArgument(violations)) => assert_eq!(violations[0].field, "start"),
            other => panic!("expected INVALID_ARGUMENT on start, got {other:?}"),
        }
        assert!(check_availability_window(&message, None, 0).is_ok());
    }
}
