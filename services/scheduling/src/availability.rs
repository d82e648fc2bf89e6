//! Coaches' published hours: their stream, their read model, and changing
//! them.
//!
//! A coach's availability is event-sourced like a call: the events of
//! `skileez_domain::availability` in the coach's own stream `coach-<id>`
//! (stream type `coach`), decided with `decide_availability` against the
//! stream's state and appended with the stream's version as the expected one.
//! The same transaction upserts (or deletes) the `coach_availability` read
//! model, which bookings read under the coach's stream lock (see
//! `Scheduler::enforce_coach_rules` in `app`), and lists the coach's upcoming
//! calls that the new hours leave outside: they stay valid, the coach is only
//! told.
//!
//! Coach streams share the store's feed with call streams; the change feed
//! and the relay skip them (they are not call events) but move past them.

use chrono::{DateTime, Utc};
use prost::Message;
use skileez_domain::{
    Call, UserId,
    availability::{
        self, Availability, AvailabilityCommand, AvailabilityEvent, decide_availability,
        evolve_availability, replay_availability,
    },
};
use skileez_eventstore::{ExpectedVersion, NewEvent, RecordedEvent, StreamAppend};
use sqlx::PgConnection;

use crate::{
    app::{EVENT_SCHEMA_VERSION, MAX_ATTEMPTS, RequestKey, Scheduler, event_metadata, people},
    auth::Principal,
    error::ApiError,
    repo::{self, PublishedHours, StoredAnswer},
};

pub const COACH_STREAM_TYPE: &str = "coach";

/// The stream of a coach's availability.
pub fn coach_stream(coach: &UserId) -> String {
    format!("coach-{coach}")
}

/// What a change of availability did.
#[derive(Debug, Clone)]
pub struct AvailabilityOutcome {
    pub coach_id: UserId,
    /// The hours now in force; `None`: bookable at any time.
    pub hours: Option<PublishedHours>,
    /// The coach stream's version (0: no stream).
    pub version: u64,
    /// False when the change was no change.
    pub applied: bool,
    /// The coach's upcoming calls outside the hours now in force.
    pub outside: Vec<Call>,
    /// Display names for their cards.
    pub names: std::collections::HashMap<String, String>,
}

/// Errors of one attempt, keeping apart a request id stored meanwhile.
enum Attempt {
    Api(ApiError),
    DuplicateRequest,
}

impl From<ApiError> for Attempt {
    fn from(error: ApiError) -> Self {
        Attempt::Api(error)
    }
}

/// Decodes a coach stream into its events.
pub fn decode_events(records: &[RecordedEvent]) -> Result<Vec<AvailabilityEvent>, ApiError> {
    records
        .iter()
        .map(|record| {
            serde_json::from_value(record.payload.clone()).map_err(|e| {
                ApiError::Internal(format!(
                    "event {} of {} does not decode: {e}",
                    record.version, record.stream_id
                ))
            })
        })
        .collect()
}

/// The coach's upcoming active calls that do not fit `hours`.
pub async fn upcoming_outside_hours(
    conn: &mut PgConnection,
    coach: &UserId,
    hours: Option<&Availability>,
    now: DateTime<Utc>,
) -> Result<Vec<Call>, ApiError> {
    let Some(hours) = hours else {
        return Ok(Vec::new());
    };
    let calls = repo::upcoming_coach_calls(&mut *conn, coach, now).await?;
    Ok(calls
        .into_iter()
        .filter(|call| {
            availability::check_within_hours(Some(hours), call.start, call.end()).is_err()
        })
        .collect())
}

impl Scheduler {
    /// Publishes or clears a coach's hours. `command` is authorised by the
    /// domain (the coach themself, admins and services); `respond` turns the
    /// outcome into the RPC's answer, stored with the request id in the same
    /// transaction as the events.
    pub async fn change_availability<R, F>(
        &self,
        principal: &Principal,
        command: AvailabilityCommand,
        request: Option<RequestKey>,
        respond: F,
    ) -> Result<R, ApiError>
    where
        R: Message + Default,
        F: Fn(&AvailabilityOutcome) -> R,
    {
        let coach = match &command {
            AvailabilityCommand::Publish { coach_id, by, .. }
            | AvailabilityCommand::Clear { coach_id, by } => {
                // Permission before anything is read.
                availability::check_may_edit_availability(by, coach_id)?;
                coach_id.clone()
            }
        };
        let metadata = event_metadata(principal, request.as_ref());
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Also on a retry: a twin of this request that won the race on
            // the stream has stored its answer, which is ours too.
            if let Some(key) = &request
                && let Some(answer) = self.stored_answer(key).await?
            {
                return Ok(answer);
            }
            match self
                .try_change_availability(&coach, &command, request.as_ref(), &metadata, &respond)
                .await
            {
                Ok(response) => return Ok(response),
                Err(Attempt::Api(ApiError::ConcurrentChange) | Attempt::DuplicateRequest)
                    if attempt < MAX_ATTEMPTS =>
                {
                    tracing::debug!(%coach, attempt, "lost a race on the coach's stream; deciding again");
                }
                Err(Attempt::Api(error)) => return Err(error),
                Err(Attempt::DuplicateRequest) => return Err(ApiError::ConcurrentChange),
            }
        }
    }

    async fn try_change_availability<R, F>(
        &self,
        coach: &UserId,
        command: &AvailabilityCommand,
        request: Option<&RequestKey>,
        metadata: &serde_json::Value,
        respond: &F,
    ) -> Result<R, Attempt>
    where
        R: Message + Default,
        F: Fn(&AvailabilityOutcome) -> R,
    {
        let stream = coach_stream(coach);
        let records = self
            .store()
            .read_stream(&stream)
            .await
            .map_err(ApiError::from)?;
        let state = replay_availability(&decode_events(&records)?);
        let version = records.last().map_or(0, |r| r.version);
        let now = Utc::now();
        let decided = decide_availability(state.as_ref(), command, now).map_err(ApiError::from)?;

        if decided.is_empty() {
            // Nothing to change: answer with what is in force.
            let mut conn = self.pool().acquire().await.map_err(ApiError::from)?;
            let hours = repo::coach_availability(&mut *conn, coach)
                .await
                .map_err(ApiError::from)?;
            let outside = upcoming_outside_hours(
                &mut conn,
                coach,
                hours.as_ref().map(|h| &h.availability),
                now,
            )
            .await?;
            let names = repo::display_names(&mut conn, &people(&outside))
                .await
                .map_err(ApiError::from)?;
            return Ok(respond(&AvailabilityOutcome {
                coach_id: coach.clone(),
                hours,
                version,
                applied: false,
                outside,
                names,
            }));
        }

        let append = StreamAppend {
            stream_id: stream,
            stream_type: COACH_STREAM_TYPE.to_owned(),
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events: decided
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
        };
        // The append takes the coach stream's lock: from here until the
        // commit, no booking with this coach can check its rules.
        let mut uow = self
            .store()
            .append(vec![append])
            .await
            .map_err(ApiError::from)?;
        let version = uow.events().last().map_or(version, |e| e.version);
        let after = decided.iter().fold(state, evolve_availability);
        let hours = after.map(|availability| PublishedHours {
            availability,
            version,
            updated_at: decided.last().map_or(now, AvailabilityEvent::at),
        });
        match &hours {
            Some(hours) => repo::upsert_coach_availability(uow.conn(), coach, hours).await,
            None => repo::delete_coach_availability(uow.conn(), coach).await,
        }
        .map_err(ApiError::from)?;
        // Read under the lock: exactly the calls committed before this change.
        let outside = upcoming_outside_hours(
            uow.conn(),
            coach,
            hours.as_ref().map(|h| &h.availability),
            now,
        )
        .await?;
        let names = repo::display_names(uow.conn(), &people(&outside))
            .await
            .map_err(ApiError::from)?;
        let response = respond(&AvailabilityOutcome {
            coach_id: coach.clone(),
            hours,
            version,
            applied: true,
            outside,
            names,
        });
        if let Some(key) = request {
            let answer = StoredAnswer {
                method: key.method.to_owned(),
                request: key.request.clone(),
                response: response.encode_to_vec(),
            };
            if let Err(e) =
                repo::store_answer(uow.conn(), &key.principal, &key.request_id, &answer).await
            {
                return Err(match repo::db_violation(&e) {
                    Some((code, _)) if code == repo::UNIQUE_VIOLATION => Attempt::DuplicateRequest,
                    _ => ApiError::from(e).into(),
                });
            }
        }
        uow.commit().await.map_err(ApiError::from)?;
        // The feed and the relay move past the coach's events at once.
        self.committed().notify_waiters();
        Ok(response)
    }
}
