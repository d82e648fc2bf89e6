//! `AvailabilityService`: coaches' published hours and `FindSlots`.
//!
//! Setting and clearing are commands on the coach's availability stream
//! (`crate::availability`), authorised to the coach themself and to admins
//! and services; reading the hours and finding slots are open to anyone
//! authenticated, since hours are public and a slot reveals nothing about
//! other people's calls.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use skileez_domain::{
    CoachBusy, SlotQuery, UserId,
    availability::{self, AvailabilityCommand},
    time,
};
use skileez_proto::scheduling as pb;
use tonic::{Request, Response, Status};

use super::{Context, scheduling::request_key};
use crate::{
    app::coach_window,
    auth::Principal,
    availability::{AvailabilityOutcome, coach_stream, upcoming_outside_hours},
    error::{ApiError, Violation},
    mapping, repo,
    validate::{self, Checks},
};

/// `step_minutes` when the request leaves it at 0.
pub const DEFAULT_STEP_MINUTES: u32 = 15;

pub struct AvailabilityApi {
    ctx: Context,
}

impl AvailabilityApi {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    /// The coach's hours with the calls outside them, as the API shows them.
    fn show(&self, outcome: &AvailabilityOutcome) -> pb::CoachAvailability {
        let now = Utc::now();
        let policy = self.ctx.scheduler.policy();
        pb::CoachAvailability {
            coach_id: outcome.coach_id.to_string(),
            availability: outcome
                .hours
                .as_ref()
                .map(|h| mapping::availability(&h.availability)),
            version: outcome.version,
            updated_at: outcome
                .hours
                .as_ref()
                .map(|h| mapping::timestamp(h.updated_at)),
            upcoming_outside_hours: outcome
                .outside
                .iter()
                .map(|c| mapping::call(c, &outcome.names, now, policy))
                .collect(),
        }
    }

    /// Whether the caller may see the coach's calls: the coach and staff.
    fn may_see_calls(principal: &Principal, coach: &UserId) -> bool {
        principal.is_privileged() || &principal.user_id == coach
    }

    /// The zone slots are shown in: the request's, else the caller's
    /// profile zone, else UTC.
    async fn viewer_zone(
        &self,
        principal: &Principal,
        requested: Option<Tz>,
    ) -> Result<Tz, ApiError> {
        if let Some(zone) = requested {
            return Ok(zone);
        }
        let profile =
            repo::participant(self.ctx.scheduler.pool(), principal.user_id.as_str()).await?;
        Ok(profile
            .and_then(|p| time::parse_zone(&p.time_zone).ok())
            .unwrap_or(Tz::UTC))
    }
}

/// The `coach_id` of every `AvailabilityService` request.
pub fn coach_id(value: &str) -> Result<UserId, ApiError> {
    validate::user_id("coach_id", value).map_err(|v| ApiError::InvalidArgument(vec![v]))
}

/// What `FindSlots` asks for, checked.
#[derive(Debug)]
pub struct FindSlotsInput {
    pub coach: UserId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub duration: u32,
    pub step: u32,
    /// `None`: the caller's profile zone, else UTC.
    pub viewer: Option<Tz>,
}

/// `FindSlots`: 0 minutes means `default_minutes`, a step of 0 means
/// [`DEFAULT_STEP_MINUTES`].
pub fn validate_find_slots(
    message: &pb::FindSlotsRequest,
    default_minutes: u32,
) -> Result<FindSlotsInput, ApiError> {
    let mut checks = Checks::new();
    let coach = checks.take(validate::user_id("coach_id", &message.coach_id));
    let mut instant = |field: &str, value: Option<&prost_types::Timestamp>| match value {
        Some(ts) => checks.take(validate::timestamp(field, ts)),
        None => {
            checks.push(Violation::new(field, "required: a timestamp"));
            None
        }
    };
    let from = instant("from", message.from.as_ref());
    let to = instant("to", message.to.as_ref());
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
    let step = match message.step_minutes {
        0 => DEFAULT_STEP_MINUTES,
        minutes @ 1..=1440 => minutes,
        _ => {
            checks.push(Violation::new(
                "step_minutes",
                format!("must be between 1 and 1440 (0 means {DEFAULT_STEP_MINUTES})"),
            ));
            0
        }
    };
    if let (Some(from), Some(to)) = (from, to) {
        if to <= from {
            checks.push(Violation::new("to", "must be after from"));
        } else if to - from > Duration::days(availability::MAX_SLOT_RANGE_DAYS) {
            checks.push(Violation::new(
                "to",
                format!(
                    "must be at most {} days after from",
                    availability::MAX_SLOT_RANGE_DAYS
                ),
            ));
        }
    }
    let viewer = if message.viewer_time_zone.is_empty() {
        None
    } else {
        checks.take(time::parse_zone(&message.viewer_time_zone).map_err(|_| {
            Violation::new(
                "viewer_time_zone",
                format!(
                    "{:?} is not an IANA time zone such as America/New_York",
                    message
                        .viewer_time_zone
                        .chars()
                        .take(64)
                        .collect::<String>()
                ),
            )
        }))
    };
    checks.finish()?;
    let (Some(coach), Some(from), Some(to)) = (coach, from, to) else {
        return Err(ApiError::invalid("coach_id", "required"));
    };
    Ok(FindSlotsInput {
        coach,
        from,
        to,
        duration,
        step,
        viewer,
    })
}

#[tonic::async_trait]
impl pb::availability_service_server::AvailabilityService for AvailabilityApi {
    #[tracing::instrument(
        name = "SetCoachAvailability",
        skip_all,
        fields(coach_id = %request.get_ref().coach_id)
    )]
    async fn set_coach_availability(
        &self,
        request: Request<pb::SetCoachAvailabilityRequest>,
    ) -> Result<Response<pb::SetCoachAvailabilityResponse>, Status> {
        let principal = self.ctx.principal(&request)?;
        let message = request.get_ref();
        let key = request_key(
            &principal,
            &message.request_id,
            "SetCoachAvailability",
            message,
        )?;
        let coach = coach_id(&message.coach_id)?;
        // Permission before the content: nobody learns what a request for
        // another coach would have failed on.
        availability::check_may_edit_availability(&principal.actor(), &coach)
            .map_err(ApiError::from)?;
        let hours = validate::availability("availability", message.availability.as_ref())?;
        let command = AvailabilityCommand::Publish {
            coach_id: coach,
            availability: hours,
            by: principal.actor(),
        };
        let response = self
            .ctx
            .scheduler
            .change_availability(&principal, command, key, |outcome| {
                pb::SetCoachAvailabilityResponse {
                    coach_availability: Some(self.show(outcome)),
                    applied: outcome.applied,
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(
        name = "ClearCoachAvailability",
        skip_all,
        fields(coach_id = %request.get_ref().coach_id)
    )]
    async fn clear_coach_availability(
        &self,
        request: Request<pb::ClearCoachAvailabilityRequest>,
    ) -> Result<Response<pb::ClearCoachAvailabilityResponse>, Status> {
        let principal = self.ctx.principal(&request)?;
        let message = request.get_ref();
        let key = request_key(
            &principal,
            &message.request_id,
            "ClearCoachAvailability",
            message,
        )?;
        let coach = coach_id(&message.coach_id)?;
        let command = AvailabilityCommand::Clear {
            coach_id: coach,
            by: principal.actor(),
        };
        let response = self
            .ctx
            .scheduler
            .change_availability(&principal, command, key, |outcome| {
                pb::ClearCoachAvailabilityResponse {
                    coach_availability: Some(self.show(outcome)),
                    applied: outcome.applied,
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(
        name = "GetCoachAvailability",
        skip_all,
        fields(coach_id = %request.get_ref().coach_id)
    )]
    async fn get_coach_availability(
        &self,
        request: Request<pb::GetCoachAvailabilityRequest>,
    ) -> Result<Response<pb::CoachAvailability>, Status> {
        let principal = self.ctx.principal(&request)?;
        let coach = coach_id(&request.get_ref().coach_id)?;
        let scheduler = &self.ctx.scheduler;
        let mut conn = self.ctx.reads.acquire().await.map_err(ApiError::from)?;
        let hours = repo::coach_availability(&mut *conn, &coach)
            .await
            .map_err(ApiError::from)?;
        let version = match &hours {
            Some(hours) => hours.version,
            // Cleared hours leave no row; the stream still counts.
            None => scheduler
                .store()
                .stream_version(&coach_stream(&coach))
                .await
                .map_err(ApiError::from)?
                .unwrap_or(0),
        };
        let outside = if Self::may_see_calls(&principal, &coach) {
            upcoming_outside_hours(
                &mut conn,
                &coach,
                hours.as_ref().map(|h| &h.availability),
                Utc::now(),
            )
            .await?
        } else {
            Vec::new()
        };
        let names = repo::display_names(&mut conn, &crate::app::people(&outside))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(self.show(&AvailabilityOutcome {
            coach_id: coach,
            hours,
            version,
            applied: false,
            outside,
            names,
        })))
    }

    #[tracing::instrument(
        name = "FindSlots",
        skip_all,
        fields(coach_id = %request.get_ref().coach_id)
    )]
    async fn find_slots(
        &self,
        request: Request<pb::FindSlotsRequest>,
    ) -> Result<Response<pb::FindSlotsResponse>, Status> {
        let principal = self.ctx.principal(&request)?;
        let message = request.get_ref();
        let policy = self.ctx.scheduler.policy();
        let FindSlotsInput {
            coach,
            from,
            to,
            duration,
            step,
            viewer,
        } = validate_find_slots(message, policy.free_consultation_minutes)?;
        let viewer = self.viewer_zone(&principal, viewer).await?;

        let pool = &self.ctx.reads;
        let (lo, hi) = coach_window(policy, from, to + Duration::minutes(i64::from(duration)));
        // Hours and calls from one statement: one snapshot, one round trip.
        let context = repo::coach_context(pool, &coach, lo, hi, &[])
            .await
            .map_err(ApiError::from)?;
        let hours = context.hours.map(|h| h.availability);
        let busy: Vec<CoachBusy> = context
            .calls
            .into_iter()
            .map(|c| CoachBusy {
                start: c.start,
                end: c.end,
            })
            .collect();
        let query = SlotQuery {
            from,
            to,
            duration_minutes: duration,
            step: Duration::minutes(i64::from(step)),
            viewer_zone: viewer,
        };
        let slots = availability::find_slots(policy, hours.as_ref(), &busy, Utc::now(), &query)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::FindSlotsResponse {
            slots: slots
                .into_iter()
                .map(|s| pb::Slot {
                    start: Some(mapping::timestamp(s.start_utc)),
                    viewer_local: s.viewer_local,
                    viewer_offset: s.viewer_offset,
                })
                .collect(),
            viewer_time_zone: viewer.name().to_owned(),
            coach_time_zone: hours.map(|h| h.time_zone).unwrap_or_default(),
            duration_minutes: duration,
            step_minutes: step,
        }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Found by the `availability_service` fuzz target (`crash-2a38f0cc…`): `[rpc, zone]`
    /// then a FindSlotsRequest for the last ten days chrono can hold. It was
    /// accepted, and the handler's `to + duration` would have overflowed.
    const FIND_SLOTS_AT_CHRONOS_END: &[u8] = &[
        0x03, 0x00, 0x0a, 0x07, 0x63, 0x6f, 0x61, 0x63, 0x68, 0x2d, 0x31, 0x12, 0x08, 0x08, 0x80,
        0x95, 0xf4, 0xcf, 0xf9, 0xee, 0x01, 0x1a, 0x08, 0x08, 0xff, 0xd6, 0xa9, 0xd0, 0xf9, 0xee,
        0x01, 0x20, 0xf0, 0x01, 0x2a, 0x0e, 0x41, 0x73, 0x69, 0x61, 0x2f, 0x4b, 0x61, 0x74, 0x68,
        0x6d, 0x61, 0x6e, 0x64, 0x75, 0x30, 0x0f,
    ];

    #[test]
    fn a_search_at_the_end_of_time_is_rejected() {
        let message = pb::FindSlotsRequest::decode(&FIND_SLOTS_AT_CHRONOS_END[2..]).unwrap();
        match validate_find_slots(&message, 15) {
            Err(ApiError::InvalidArgument(violations)) => {
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(fields, ["from", "to"]);
            }
            other => panic!("expected INVALID_ARGUMENT on from and to, got {other:?}"),
        }
    }
}
