//! Command handling: load a call's stream, decide against its state, append
//! the resulting events and update the read models in one transaction.
//!
//! This is the only place that writes call events. Races are settled by the
//! database: a concurrent change to the same call is a version conflict
//! (retried, then ABORTED), a clash with another call is an exclusion
//! violation (SLOT_TAKEN naming the clashing call), a second free consultation
//! is a unique violation (ALREADY_EXISTS). A booking also meets its coach's
//! published hours, checked under the coach's stream lock in the same
//! transaction (see [`Scheduler::enforce_coach_rules`]).

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use prost::Message;
use skileez_domain::{
    Call, CallEvent, CallId, CallKind, CoachBusy, Command, ContractId, Decided, DomainError,
    Policy, availability, decide, evolve,
};
use skileez_eventstore::{
    EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend, UnitOfWork,
};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    auth::{Principal, role_name},
    counters::Count,
    error::ApiError,
    repo::{self, StoredAnswer},
};

/// How many times a command is decided again after losing a race on its
/// call's stream before the caller gets ABORTED.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// Schema version of the JSON payloads we write; bump with an upcaster.
pub const EVENT_SCHEMA_VERSION: i32 = 1;

pub const CALL_STREAM_TYPE: &str = "call";

pub fn call_stream(id: CallId) -> String {
    format!("call-{}", id.0)
}

pub fn call_id_of_stream(stream_id: &str) -> Option<CallId> {
    stream_id
        .strip_prefix("call-")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .map(CallId)
}

/// An AIP-155 request id with what is needed to recognise a retry.
#[derive(Debug, Clone)]
pub struct RequestKey {
    pub principal: String,
    pub request_id: String,
    pub method: &'static str,
    pub request: Vec<u8>,
}

impl RequestKey {
    pub fn new(
        principal: &Principal,
        request_id: Option<String>,
        method: &'static str,
        request: &impl Message,
    ) -> Option<Self> {
        request_id.map(|request_id| Self {
            principal: format!("{}:{}", role_name(principal.role), principal.user_id),
            request_id,
            method,
            request: request.encode_to_vec(),
        })
    }
}

/// What a command did: the affected calls after it (the acted-on call first),
/// whether anything was appended, and display names for their cards.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub calls: Vec<Call>,
    pub applied: bool,
    pub names: HashMap<String, String>,
}

/// Whether the call's stream may exist: only a booking's fresh id is known
/// not to.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Existing,
    New,
}

/// Decides and applies commands to calls.
#[derive(Clone)]
pub struct Scheduler {
    store: EventStore,
    pool: PgPool,
    policy: Arc<Policy>,
    committed: Arc<Notify>,
    relay_leading: Arc<std::sync::atomic::AtomicBool>,
}

impl Scheduler {
    pub fn new(pool: PgPool, policy: Policy) -> Self {
        Self {
            store: EventStore::new(pool.clone()),
            pool,
            policy: Arc::new(policy),
            committed: Arc::new(Notify::new()),
            relay_leading: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether this instance's relay leads (so its commits wake it directly
    /// and need no `NOTIFY`); shared by the relay and the waker.
    pub fn relay_leading(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.relay_leading.clone()
    }

    /// Notified after every commit of this instance, so the change feed can
    /// pick new events up at once.
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// The current state of a call, from its stream.
    pub async fn load(&self, id: CallId) -> Result<Option<Call>, ApiError> {
        let records = self.store.read_stream(&call_stream(id)).await?;
        Ok(replay_records(&records)?.pop().map(|(_, call)| call))
    }

    /// Runs `command` against the call `call_id` (a fresh id for a booking).
    ///
    /// `command` sees the call's current state and builds the domain command,
    /// or refuses (authorisation is decided there, before anything about the
    /// call is revealed). `respond` turns the outcome into the RPC's answer,
    /// which is stored with the request id in the same transaction.
    pub async fn execute<R, C, F>(
        &self,
        principal: &Principal,
        call_id: CallId,
        request: Option<RequestKey>,
        command: C,
        respond: F,
    ) -> Result<R, ApiError>
    where
        R: Message + Default,
        C: Fn(Option<&Call>) -> Result<Command, ApiError>,
        F: Fn(&Outcome) -> R,
    {
        self.run(
            principal,
            call_id,
            Stream::Existing,
            request,
            command,
            respond,
        )
        .await
    }

    /// [`Scheduler::execute`] for a call id made just now (a booking): no
    /// stream can exist yet, so its (empty) read is skipped — one round trip
    /// less per booking. The append still expects no stream, so an id that
    /// did exist would be refused, not overwritten.
    pub async fn execute_new<R, C, F>(
        &self,
        principal: &Principal,
        call_id: CallId,
        request: Option<RequestKey>,
        command: C,
        respond: F,
    ) -> Result<R, ApiError>
    where
        R: Message + Default,
        C: Fn(Option<&Call>) -> Result<Command, ApiError>,
        F: Fn(&Outcome) -> R,
    {
        self.run(principal, call_id, Stream::New, request, command, respond)
            .await
    }

    async fn run<R, C, F>(
        &self,
        principal: &Principal,
        call_id: CallId,
        stream: Stream,
        request: Option<RequestKey>,
        command: C,
        respond: F,
    ) -> Result<R, ApiError>
    where
        R: Message + Default,
        C: Fn(Option<&Call>) -> Result<Command, ApiError>,
        F: Fn(&Outcome) -> R,
    {
        // A retry of a change finds its first answer here. A booking skips
        // this round trip: its retry cannot commit twice (the request id's
        // row is written in the booking's transaction, under a unique key),
        // and whatever stops it — that row, the slot its first attempt
        // took, the pair's free consultation — is an error, after which the
        // stored answer is looked up below.
        let first_answer_on_error = matches!(stream, Stream::New);
        if !first_answer_on_error
            && let Some(key) = &request
            && let Some(answer) = self.stored_answer(key).await?
        {
            return Ok(answer);
        }
        let metadata = event_metadata(principal, request.as_ref());
        let result = self
            .execute_once(
                call_id,
                stream,
                request.as_ref(),
                &metadata,
                &command,
                &respond,
            )
            .await;
        match (result, &request) {
            // A retry racing its first attempt: the loser fails on the
            // request id (or on the slot the winner took) and answers with the
            // winner's result.
            (Err(error), Some(key))
                if first_answer_on_error || error.may_be_duplicate_request() =>
            {
                match self.stored_answer(key).await? {
                    Some(answer) => Ok(answer),
                    None => Err(error.into_api()),
                }
            }
            (result, _) => result.map_err(ExecError::into_api),
        }
    }

    pub(crate) async fn stored_answer<R: Message + Default>(
        &self,
        key: &RequestKey,
    ) -> Result<Option<R>, ApiError> {
        let Some(stored) = repo::stored_answer(&self.pool, &key.principal, &key.request_id).await?
        else {
            return Ok(None);
        };
        if stored.method != key.method || stored.request != key.request {
            return Err(ApiError::RequestIdReused {
                request_id: key.request_id.clone(),
                method: stored.method,
            });
        }
        R::decode(stored.response.as_slice())
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("stored answer does not decode: {e}")))
    }

    async fn execute_once<R, C, F>(
        &self,
        call_id: CallId,
        stream: Stream,
        request: Option<&RequestKey>,
        metadata: &serde_json::Value,
        command: &C,
        respond: &F,
    ) -> Result<R, ExecError>
    where
        R: Message + Default,
        C: Fn(Option<&Call>) -> Result<Command, ApiError>,
        F: Fn(&Outcome) -> R,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .try_execute(call_id, stream, request, metadata, command, respond)
                .await
            {
                Err(ExecError::Api(ApiError::ConcurrentChange)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(%call_id, attempt, "lost a race on the call's stream; deciding again");
                }
                other => return other,
            }
        }
    }

    async fn try_execute<R, C, F>(
        &self,
        call_id: CallId,
        stream: Stream,
        request: Option<&RequestKey>,
        metadata: &serde_json::Value,
        command: &C,
        respond: &F,
    ) -> Result<R, ExecError>
    where
        R: Message + Default,
        C: Fn(Option<&Call>) -> Result<Command, ApiError>,
        F: Fn(&Outcome) -> R,
    {
        let state = match stream {
            Stream::Existing => self.load(call_id).await?,
            Stream::New => None,
        };
        let command = command(state.as_ref())?;
        let now = Utc::now();
        let decided =
            decide(state.as_ref(), &command, now, &self.policy).map_err(ApiError::from)?;
        if decided.is_empty() {
            let calls: Vec<Call> = state.into_iter().collect();
            let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
            let names = repo::display_names(&mut conn, &people(&calls))
                .await
                .map_err(ApiError::from)?;
            return Ok(respond(&Outcome {
                calls,
                applied: false,
                names,
            }));
        }

        let plan = Plan::new(call_id, state, decided);
        let counts = plan.counts();
        // A booking also locks its coach's availability stream: see
        // `enforce_coach_rules`.
        let coaches: Vec<String> = plan
            .booked()
            .map(|call| crate::availability::coach_stream(&call.coach_id))
            .collect();
        let mut uow = self
            .store
            .append_locking(plan.appends(metadata)?, &coaches)
            .await
            .map_err(ApiError::from)?;

        let names = match self.enforce_coach_rules(&mut uow, &plan, now).await {
            Ok(names) => names,
            Err(error) => {
                if let Err(rollback) = uow.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a coach rule refused the booking failed");
                }
                return Err(error);
            }
        };
        let contract_effects = plan.contract_effects();
        // The answer depends only on the calls and the names, so it is
        // known before they are written: the request id's row then rides
        // with the last call row, in one statement.
        let names = match names {
            Some(names) => names,
            None => repo::display_names(uow.conn(), &people(&plan.after))
                .await
                .map_err(ApiError::from)?,
        };
        let outcome = Outcome {
            calls: plan.after,
            applied: true,
            names,
        };
        let response = respond(&outcome);
        let answer = request.map(|key| {
            (
                key,
                StoredAnswer {
                    method: key.method.to_owned(),
                    request: key.request.clone(),
                    response: response.encode_to_vec(),
                },
            )
        });
        let last = outcome.calls.len().saturating_sub(1);
        for (i, call) in outcome.calls.iter().enumerate() {
            let written = match &answer {
                Some((key, answer)) if i == last => {
                    repo::upsert_call_storing_answer(
                        uow.conn(),
                        call,
                        self.policy.coach_buffer,
                        &key.principal,
                        &key.request_id,
                        answer,
                    )
                    .await
                }
                _ => repo::upsert_call(uow.conn(), call, self.policy.coach_buffer).await,
            };
            if let Err(e) = written {
                if matches!(repo::db_violation(&e), Some((code, constraint))
                    if code == repo::UNIQUE_VIOLATION && constraint == repo::REQUEST_IDS_PKEY)
                {
                    return Err(ExecError::DuplicateRequest);
                }
                // Give the connection back before asking what we clashed
                // with: holding it while taking another can starve the pool.
                if let Err(error) = uow.rollback().await {
                    tracing::warn!(%error, "rollback after a constraint violation failed");
                }
                return Err(self.explain_violation(e, call, &outcome.calls).await);
            }
        }
        for effect in contract_effects {
            match effect {
                ContractEffect::Take(contract) => {
                    if !repo::take_session(uow.conn(), &contract)
                        .await
                        .map_err(ApiError::from)?
                    {
                        return Err(ApiError::Domain(DomainError::NoSessionsLeft).into());
                    }
                }
                ContractEffect::Return(contract) => {
                    repo::return_session(uow.conn(), &contract)
                        .await
                        .map_err(ApiError::from)?;
                }
            }
        }
        uow.commit().await.map_err(ApiError::from)?;
        for count in &counts {
            count.record();
        }
        // Wakes this instance's feed and relay at once, and (through the
        // waker task in lib.rs) the relays of other instances.
        self.committed.notify_waiters();
        Ok(response)
    }

    /// The coach's published hours, buffers, own notice and daily maximum,
    /// for every call this decision books (a new booking, or the successor
    /// of a reschedule). Runs inside the booking's transaction, after the
    /// append and before the calls are written.
    ///
    /// Why this is race-free: the append took the advisory lock of the
    /// coach's availability stream (`coach-<id>`) along with the call
    /// streams' — the very lock an availability change takes when it
    /// appends to that stream — and the reads here are later statements
    /// (READ COMMITTED: each sees every commit before it started). So an
    /// availability change either committed before the lock was granted,
    /// and its hours are the ones checked here, or it waits until this
    /// booking has committed or rolled back: a booking always commits under
    /// the hours it was checked against. Two bookings of one coach serialise
    /// on the same lock, so each sees the other's call, which makes the
    /// buffer and daily-limit checks race-free too (the exclusion constraint
    /// stays as the last guard for overlaps).
    ///
    /// The coach's lock is taken in the append's one locking statement, in
    /// the store's global key order and before the first write, rather than
    /// after the append: no deadlock is possible (every transaction takes
    /// all its stream locks at once, in one order), and the transaction id,
    /// assigned at the first write, is taken only once the coach is held, so
    /// the feed's order agrees with the order in which bookings and
    /// availability changes of a coach were serialised (a lock taken after
    /// the append would let a booking hold a lower id than a change it was
    /// checked against).
    ///
    /// The same statement reads the display names of the plan's people
    /// (they do not change with the calls written after it), returned when
    /// the plan books anything, to save the answer a round trip.
    async fn enforce_coach_rules(
        &self,
        uow: &mut UnitOfWork,
        plan: &Plan,
        now: DateTime<Utc>,
    ) -> Result<Option<HashMap<String, String>>, ExecError> {
        let own: Vec<CallId> = plan.after.iter().map(|c| c.id).collect();
        let mut names = None;
        for call in plan.booked() {
            let (from, to) = coach_window(&self.policy, call.start, call.end());
            let context =
                repo::coach_context(uow.conn(), &call.coach_id, from, to, &people(&plan.after))
                    .await
                    .map_err(ApiError::from)?;
            names = Some(context.names);
            let hours = context.hours.map(|h| h.availability);
            // The predecessor of a reschedule gives its slot up in this
            // transaction: it never blocks its successor.
            let busy: Vec<CoachBusy> = context
                .calls
                .into_iter()
                .filter(|c| !own.contains(&c.call_id))
                .map(|c| CoachBusy {
                    start: c.start,
                    end: c.end,
                })
                .collect();
            availability::check_coach_rules(
                &self.policy,
                hours.as_ref(),
                &busy,
                now,
                call.start,
                call.duration_minutes,
            )
            .map_err(|error| match error {
                // A concurrent twin of the same request may have taken it.
                DomainError::SlotTaken { .. } | DomainError::DailyLimitReached { .. } => {
                    ExecError::SlotTaken(error)
                }
                other => ApiError::Domain(other).into(),
            })?;
        }
        Ok(names)
    }

    /// Turns a constraint violation on the calls table into the domain answer
    /// it stands for, naming the clashing call.
    async fn explain_violation(
        &self,
        error: sqlx::Error,
        call: &Call,
        after: &[Call],
    ) -> ExecError {
        let Some((code, constraint)) = repo::db_violation(&error) else {
            return ApiError::from(error).into();
        };
        match (code.as_str(), constraint.as_str()) {
            (repo::EXCLUSION_VIOLATION, repo::COACH_OVERLAP | repo::STUDENT_OVERLAP) => {
                let clashes = match repo::clashes(
                    &self.pool,
                    &call.coach_id,
                    Some(&call.student_id),
                    call.start,
                    call.end(),
                    self.policy.coach_buffer,
                )
                .await
                {
                    Ok(clashes) => clashes,
                    Err(e) => return ApiError::from(e).into(),
                };
                let own: Vec<CallId> = after.iter().map(|c| c.id).collect();
                match clashes.into_iter().find(|c| !own.contains(&c.call_id)) {
                    Some(clash) => ExecError::SlotTaken(DomainError::SlotTaken {
                        clashing_start: clash.start,
                        clashing_end: clash.end,
                    }),
                    // The clashing booking rolled back meanwhile: the slot may
                    // be free now, so the caller may retry.
                    None => ApiError::ConcurrentChange.into(),
                }
            }
            (repo::UNIQUE_VIOLATION, repo::ONE_FREE_CONSULTATION) => {
                match repo::free_consultation(&self.pool, &call.student_id, &call.coach_id).await {
                    Ok(Some(existing)) => {
                        ExecError::SlotTaken(DomainError::FreeConsultationExists {
                            call_id: existing.id,
                        })
                    }
                    Ok(None) => ApiError::ConcurrentChange.into(),
                    Err(e) => ApiError::from(e).into(),
                }
            }
            _ => ApiError::from(error).into(),
        }
    }
}

/// Errors of one execution, keeping apart those that a concurrent retry of the
/// same request id explains.
#[derive(Debug)]
enum ExecError {
    Api(ApiError),
    /// The request id was stored by a concurrent attempt.
    DuplicateRequest,
    /// The slot (or the pair's free consultation) was taken; by a concurrent
    /// attempt of the same request, if one committed.
    SlotTaken(DomainError),
}

impl From<ApiError> for ExecError {
    fn from(error: ApiError) -> Self {
        ExecError::Api(error)
    }
}

impl ExecError {
    fn may_be_duplicate_request(&self) -> bool {
        matches!(
            self,
            ExecError::DuplicateRequest
                | ExecError::SlotTaken(_)
                | ExecError::Api(ApiError::ConcurrentChange)
        )
    }

    fn into_api(self) -> ApiError {
        match self {
            ExecError::Api(error) => error,
            ExecError::DuplicateRequest => ApiError::ConcurrentChange,
            ExecError::SlotTaken(error) => ApiError::Domain(error),
        }
    }
}

/// The instants whose calls of a coach matter to a call `[start, end)`:
/// buffers reach at most a day each side (plus the policy's buffer), and the
/// coach-local date of the start lies within a day and a bit of it.
pub fn coach_window(
    policy: &Policy,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let margin = Duration::days(3) + policy.coach_buffer.max(Duration::zero());
    (start - margin, end + margin)
}

pub(crate) fn people(calls: &[Call]) -> Vec<&str> {
    calls
        .iter()
        .flat_map(|c| [c.student_id.as_str(), c.coach_id.as_str()])
        .collect()
}

/// Who caused the events and on which request; stored beside each event.
pub(crate) fn event_metadata(
    principal: &Principal,
    request: Option<&RequestKey>,
) -> serde_json::Value {
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "actor".into(),
        serde_json::json!({ "user_id": principal.user_id.as_str(), "role": role_name(principal.role) }),
    );
    if let Some(key) = request {
        metadata.insert("request_id".into(), key.request_id.clone().into());
    }
    // The request's trace, so the relay's publish and every consumer
    // continue it, however much later they run.
    if let Some(trace) = skileez_telemetry::propagation::current() {
        metadata.insert("traceparent".into(), trace.traceparent.into());
        if !trace.tracestate.is_empty() {
            metadata.insert("tracestate".into(), trace.tracestate.into());
        }
    }
    serde_json::Value::Object(metadata)
}

/// Replays stored records into the call's state after each of them.
pub fn replay_records(records: &[RecordedEvent]) -> Result<Vec<(CallEvent, Call)>, ApiError> {
    let mut state: Option<Call> = None;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let event: CallEvent = serde_json::from_value(record.payload.clone()).map_err(|e| {
            ApiError::Internal(format!(
                "event {} of {} does not decode: {e}",
                record.version, record.stream_id
            ))
        })?;
        state = evolve(state, &event);
        if let Some(call) = &state {
            out.push((event, call.clone()));
        }
    }
    Ok(out)
}

/// The events of one decision grouped per call, with each call's state after.
struct Plan {
    /// (call, expected version, events), the acted-on call first.
    streams: Vec<(CallId, ExpectedVersion, Vec<CallEvent>)>,
    after: Vec<Call>,
}

enum ContractEffect {
    Take(ContractId),
    Return(ContractId),
}

impl Plan {
    /// The business counters the decided events move once committed.
    fn counts(&self) -> Vec<Count> {
        self.streams
            .iter()
            .filter_map(|(id, _, events)| {
                let kind = self.after.iter().find(|call| call.id == *id)?.kind;
                Some(
                    events
                        .iter()
                        .filter_map(move |event| Count::of(kind, event)),
                )
            })
            .flatten()
            .collect()
    }

    fn new(call_id: CallId, state: Option<Call>, decided: Vec<Decided>) -> Self {
        let mut streams: Vec<(CallId, ExpectedVersion, Vec<CallEvent>)> = Vec::new();
        let mut states: Vec<Option<Call>> = Vec::new();
        for Decided { call_id: id, event } in decided {
            let index = match streams.iter().position(|(c, ..)| *c == id) {
                Some(index) => index,
                None => {
                    let base = if id == call_id { state.clone() } else { None };
                    let expected = match &base {
                        Some(call) => ExpectedVersion::Exact(call.version),
                        None => ExpectedVersion::NoStream,
                    };
                    streams.push((id, expected, Vec::new()));
                    states.push(base);
                    streams.len() - 1
                }
            };
            states[index] = evolve(states[index].take(), &event);
            streams[index].2.push(event);
        }
        Plan {
            streams,
            after: states.into_iter().flatten().collect(),
        }
    }

    fn appends(&self, metadata: &serde_json::Value) -> Result<Vec<StreamAppend>, ApiError> {
        self.streams
            .iter()
            .map(|(id, expected, events)| {
                Ok(StreamAppend {
                    stream_id: call_stream(*id),
                    stream_type: CALL_STREAM_TYPE.to_owned(),
                    expected: *expected,
                    events: events
                        .iter()
                        .map(|event| {
                            Ok(NewEvent {
                                event_id: uuid::Uuid::now_v7(),
                                event_type: event.event_type().to_owned(),
                                schema_version: EVENT_SCHEMA_VERSION,
                                payload: serde_json::to_value(event).map_err(|e| {
                                    ApiError::Internal(format!("event does not encode: {e}"))
                                })?,
                                metadata: metadata.clone(),
                            })
                        })
                        .collect::<Result<_, ApiError>>()?,
                })
            })
            .collect()
    }

    /// The calls this decision books: those with a `CallScheduled` (a new
    /// booking, or the successor of a reschedule).
    fn booked(&self) -> impl Iterator<Item = &Call> {
        self.streams
            .iter()
            .zip(&self.after)
            .filter(|((_, _, events), _)| {
                events.iter().any(|e| matches!(e, CallEvent::Scheduled(_)))
            })
            .map(|(_, call)| call)
    }

    /// What the decision does to contract sessions: a new paid booking takes
    /// one (a rescheduled call keeps its predecessor's), and a cancellation or
    /// miss that returns the session gives it back.
    fn contract_effects(&self) -> Vec<ContractEffect> {
        let mut effects = Vec::new();
        for ((_, _, events), call) in self.streams.iter().zip(&self.after) {
            let Some(contract) = call.contract_id.clone() else {
                continue;
            };
            for event in events {
                match event {
                    CallEvent::Scheduled(s)
                        if s.kind == CallKind::PaidSession && s.rescheduled_from.is_none() =>
                    {
                        effects.push(ContractEffect::Take(contract.clone()));
                    }
                    CallEvent::Cancelled(c) if c.session_returned => {
                        effects.push(ContractEffect::Return(contract.clone()));
                    }
                    CallEvent::Missed(m) if m.session_returned => {
                        effects.push(ContractEffect::Return(contract.clone()));
                    }
                    _ => {}
                }
            }
        }
        effects
    }
}
