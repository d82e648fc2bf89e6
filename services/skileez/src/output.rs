//! What the client commands print: readable text, or the API's messages as
//! protobuf JSON (`--output json`), and gRPC errors with their details.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use skileez_proto::{call as ev, scheduling as pb};
use tonic::{Response, Status};
use tonic_types::StatusExt;

use crate::OutputFormat;

/// Unwraps a response, or turns the status into a readable error that names
/// the code, the reason and every bad field.
pub fn ok<T>(result: Result<Response<T>, Status>) -> anyhow::Result<T> {
    result.map(Response::into_inner).map_err(status_error)
}

pub fn status_error(status: Status) -> anyhow::Error {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let details = status.get_error_details();
    if let Some(info) = details.error_info() {
        text.push_str(&format!("\n  reason: {}", info.reason));
        for (key, value) in &info.metadata {
            text.push_str(&format!("\n  {key}: {value}"));
        }
    }
    if let Some(bad) = details.bad_request() {
        for violation in &bad.field_violations {
            text.push_str(&format!(
                "\n  {}: {}",
                violation.field, violation.description
            ));
        }
    }
    anyhow::anyhow!(text)
}

pub struct Printer {
    format: OutputFormat,
    zone: Tz,
    pool: DescriptorPool,
}

impl Printer {
    pub fn new(format: OutputFormat, zone: Option<&str>) -> anyhow::Result<Self> {
        let zone = match zone {
            Some(z) => z
                .parse()
                .map_err(|_| anyhow::anyhow!("--tz {z:?} is not an IANA time zone"))?,
            None => Tz::UTC,
        };
        let pool = DescriptorPool::decode(skileez_proto::FILE_DESCRIPTOR_SET)
            .context("reading the proto descriptors")?;
        Ok(Self { format, zone, pool })
    }

    /// Prints any API message as protobuf JSON.
    pub fn json<M: Message>(&self, message: &M, name: &str) -> anyhow::Result<()> {
        let descriptor = self
            .pool
            .get_message_by_name(name)
            .with_context(|| format!("unknown message {name}"))?;
        let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
        println!("{}", serde_json::to_string_pretty(&dynamic)?);
        Ok(())
    }

    pub fn message<M: Message + std::fmt::Debug>(
        &self,
        message: &M,
        name: &str,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(message, name),
            OutputFormat::Text => {
                println!("{message:#?}");
                Ok(())
            }
        }
    }

    fn time(&self, ts: Option<&prost_types::Timestamp>) -> String {
        ts.and_then(|t| {
            DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .map(|t| {
            t.with_timezone(&self.zone)
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
    }

    fn call_text(&self, call: &pb::Call) -> String {
        let Some(card) = &call.card else {
            return "(empty call)".to_owned();
        };
        let status = ev::CallStatus::try_from(card.status)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("CALL_STATUS_")
                    .to_owned()
            })
            .unwrap_or_default();
        let kind = match ev::CallKind::try_from(card.kind) {
            Ok(ev::CallKind::FreeConsultation) => "free consultation",
            Ok(ev::CallKind::PaidSession) => "paid session",
            _ => "call",
        };
        let person = |p: &Option<ev::Person>| {
            p.as_ref()
                .map(|p| {
                    if p.display_name.is_empty() {
                        p.user_id.clone()
                    } else {
                        format!("{} ({})", p.user_id, p.display_name)
                    }
                })
                .unwrap_or_default()
        };
        let actions: Vec<String> = card
            .allowed_actions
            .iter()
            .filter_map(|a| ev::CallAction::try_from(*a).ok())
            .map(|a| {
                a.as_str_name()
                    .trim_start_matches("CALL_ACTION_")
                    .to_lowercase()
            })
            .collect();
        let mut text = format!(
            "call {}  {status}  {kind}\n  start    {} ({} min), joinable from {}\n  student  {}\n  coach    {}",
            card.call_id,
            self.time(card.start.as_ref()),
            card.duration_minutes,
            self.time(card.joinable_from.as_ref()),
            person(&card.student),
            person(&card.coach),
        );
        if !card.contract_id.is_empty() {
            text.push_str(&format!("\n  contract {}", card.contract_id));
        }
        if !card.rescheduled_from.is_empty() {
            text.push_str(&format!("\n  moved from {}", card.rescheduled_from));
        }
        if !card.rescheduled_to.is_empty() {
            text.push_str(&format!("\n  moved to {}", card.rescheduled_to));
        }
        if let Some(c) = &call.cancellation {
            text.push_str(&format!(
                "\n  cancelled by {}{}{}",
                c.by.as_ref().map(|a| a.user_id.as_str()).unwrap_or("?"),
                if c.late { " (late)" } else { "" },
                if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.reason)
                }
            ));
        }
        for join in &call.joins {
            text.push_str(&format!(
                "\n  joined   {} at {}",
                join.user_id,
                self.time(join.joined_at.as_ref())
            ));
        }
        if let Ok(attendance) = ev::Attendance::try_from(card.attendance)
            && attendance != ev::Attendance::Unspecified
        {
            text.push_str(&format!(
                "\n  attended {}",
                attendance
                    .as_str_name()
                    .trim_start_matches("ATTENDANCE_")
                    .to_lowercase()
            ));
        }
        if !actions.is_empty() {
            text.push_str(&format!("\n  actions  {}", actions.join(", ")));
        }
        text
    }

    pub fn call(&self, call: &pb::Call) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(call, "skileez.scheduling.v1.Call"),
            OutputFormat::Text => {
                println!("{}", self.call_text(call));
                Ok(())
            }
        }
    }

    pub fn call_response(&self, response: &pb::CallResponse) -> anyhow::Result<()> {
        match (self.format, &response.call) {
            (OutputFormat::Json, _) => self.json(response, "skileez.scheduling.v1.CallResponse"),
            (OutputFormat::Text, Some(call)) => self.call(call),
            (OutputFormat::Text, None) => Ok(()),
        }
    }

    pub fn schedule(&self, response: &pb::ScheduleCallResponse) -> anyhow::Result<()> {
        match (self.format, &response.call) {
            (OutputFormat::Json, _) => {
                self.json(response, "skileez.scheduling.v1.ScheduleCallResponse")
            }
            (OutputFormat::Text, Some(call)) => self.call(call),
            (OutputFormat::Text, None) => Ok(()),
        }
    }

    pub fn reschedule(&self, response: &pb::RescheduleCallResponse) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => {
                self.json(response, "skileez.scheduling.v1.RescheduleCallResponse")
            }
            OutputFormat::Text => {
                if let Some(call) = &response.call {
                    println!("{}", self.call_text(call));
                }
                Ok(())
            }
        }
    }

    pub fn list(&self, response: &pb::ListCallsResponse) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(response, "skileez.scheduling.v1.ListCallsResponse"),
            OutputFormat::Text => {
                if response.calls.is_empty() {
                    println!("no calls");
                }
                for call in &response.calls {
                    println!("{}\n", self.call_text(call));
                }
                if !response.next_page_token.is_empty() {
                    println!("more: --page-token {}", response.next_page_token);
                }
                Ok(())
            }
        }
    }

    /// A coach's hours, one line per weekday and override.
    fn hours_text(&self, state: &pb::CoachAvailability) -> String {
        let Some(hours) = &state.availability else {
            return format!(
                "coach {} has published no hours: bookable at any time{}",
                state.coach_id,
                if state.version > 0 {
                    format!(" (version {})", state.version)
                } else {
                    String::new()
                }
            );
        };
        let mut text = format!(
            "coach {}: hours in {} (version {}, published {})",
            state.coach_id,
            hours.time_zone,
            state.version,
            self.time(state.updated_at.as_ref())
        );
        let span = |start: &str, end: &str| format!("{start}–{end}");
        for day in 1..=7 {
            let spans: Vec<String> = hours
                .weekly
                .iter()
                .filter(|w| w.weekday == day)
                .map(|w| span(&w.start, &w.end))
                .collect();
            if spans.is_empty() {
                continue;
            }
            let name = pb::Weekday::try_from(day)
                .map(|d| d.as_str_name().trim_start_matches("WEEKDAY_")[..3].to_lowercase())
                .unwrap_or_default();
            text.push_str(&format!("\n  {name:<11} {}", spans.join(", ")));
        }
        if hours.weekly.is_empty() {
            text.push_str("\n  no weekly hours");
        }
        for o in &hours.overrides {
            let spans = if o.intervals.is_empty() {
                "off".to_owned()
            } else {
                o.intervals
                    .iter()
                    .map(|i| span(&i.start, &i.end))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            text.push_str(&format!("\n  {:<11} {spans}", o.date));
        }
        if hours.buffer_before_minutes > 0 || hours.buffer_after_minutes > 0 {
            text.push_str(&format!(
                "\n  buffers     {} min before, {} min after each call",
                hours.buffer_before_minutes, hours.buffer_after_minutes
            ));
        }
        if let Some(notice) = hours.min_notice_minutes {
            text.push_str(&format!("\n  notice      at least {notice} min ahead"));
        }
        if let Some(max) = hours.daily_max {
            text.push_str(&format!("\n  daily max   {max} calls"));
        }
        text
    }

    fn outside_text(&self, calls: &[pb::Call]) -> String {
        if calls.is_empty() {
            return "no upcoming call falls outside these hours".to_owned();
        }
        let mut text = format!(
            "{} upcoming call{} now outside these hours (still valid):",
            calls.len(),
            if calls.len() == 1 { "" } else { "s" }
        );
        for call in calls {
            text.push_str(&format!("\n\n{}", self.call_text(call)));
        }
        text
    }

    pub fn set_availability(
        &self,
        response: &pb::SetCoachAvailabilityResponse,
    ) -> anyhow::Result<()> {
        match (self.format, &response.coach_availability) {
            (OutputFormat::Json, _) => self.json(
                response,
                "skileez.scheduling.v1.SetCoachAvailabilityResponse",
            ),
            (OutputFormat::Text, Some(state)) => {
                if !response.applied {
                    println!("no change: these hours were already published");
                }
                println!(
                    "{}\n\n{}",
                    self.hours_text(state),
                    self.outside_text(&state.upcoming_outside_hours)
                );
                Ok(())
            }
            (OutputFormat::Text, None) => Ok(()),
        }
    }

    pub fn clear_availability(
        &self,
        response: &pb::ClearCoachAvailabilityResponse,
    ) -> anyhow::Result<()> {
        match (self.format, &response.coach_availability) {
            (OutputFormat::Json, _) => self.json(
                response,
                "skileez.scheduling.v1.ClearCoachAvailabilityResponse",
            ),
            (OutputFormat::Text, Some(state)) => {
                if !response.applied {
                    println!("no change: no hours were published");
                }
                println!("{}", self.hours_text(state));
                Ok(())
            }
            (OutputFormat::Text, None) => Ok(()),
        }
    }

    pub fn availability(&self, state: &pb::CoachAvailability) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(state, "skileez.scheduling.v1.CoachAvailability"),
            OutputFormat::Text => {
                println!("{}", self.hours_text(state));
                if state.availability.is_some() && !state.upcoming_outside_hours.is_empty() {
                    println!("\n{}", self.outside_text(&state.upcoming_outside_hours));
                }
                Ok(())
            }
        }
    }

    pub fn slots(&self, response: &pb::FindSlotsResponse) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(response, "skileez.scheduling.v1.FindSlotsResponse"),
            OutputFormat::Text => {
                let coach_zone = if response.coach_time_zone.is_empty() {
                    "no published hours".to_owned()
                } else {
                    format!("the coach's hours are in {}", response.coach_time_zone)
                };
                println!(
                    "{} slot{} of {} min every {} min, shown in {} ({coach_zone})",
                    response.slots.len(),
                    if response.slots.len() == 1 { "" } else { "s" },
                    response.duration_minutes,
                    response.step_minutes,
                    response.viewer_time_zone
                );
                for slot in &response.slots {
                    let utc = slot
                        .start
                        .as_ref()
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0))
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default();
                    println!(
                        "  {} {}  {utc}",
                        slot.viewer_local.replace('T', " "),
                        slot.viewer_offset
                    );
                }
                Ok(())
            }
        }
    }

    fn event_text(&self, event: &ev::CallEvent) -> String {
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
            None => "?",
        };
        let actor = event
            .actor
            .as_ref()
            .map(|a| {
                format!(
                    "{} ({})",
                    a.user_id,
                    ev::ActorRole::try_from(a.role)
                        .map(|r| r
                            .as_str_name()
                            .trim_start_matches("ACTOR_ROLE_")
                            .to_lowercase())
                        .unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "-".to_owned());
        format!(
            "{:>3}  {}  {:<18} by {}  call {}",
            event.stream_version,
            self.time(event.occurred_at.as_ref()),
            name,
            actor,
            event.call_id
        )
    }

    pub fn history(&self, response: &pb::GetCallHistoryResponse) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => {
                self.json(response, "skileez.scheduling.v1.GetCallHistoryResponse")
            }
            OutputFormat::Text => {
                for event in &response.events {
                    println!("{}", self.event_text(event));
                }
                Ok(())
            }
        }
    }

    pub fn change(&self, change: &pb::CallChange) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => {
                let descriptor = self
                    .pool
                    .get_message_by_name("skileez.scheduling.v1.CallChange")
                    .context("unknown message CallChange")?;
                let dynamic =
                    DynamicMessage::decode(descriptor, change.encode_to_vec().as_slice())?;
                println!("{}", serde_json::to_string(&dynamic)?);
                Ok(())
            }
            OutputFormat::Text => {
                if let Some(event) = &change.event {
                    println!("{}  [{}]", self.event_text(event), change.position);
                }
                Ok(())
            }
        }
    }

    /// One message of the CALL_EVENTS stream.
    pub fn stream_event(
        &self,
        sequence: u64,
        subject: &str,
        event: &ev::CallEvent,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => {
                let descriptor = self
                    .pool
                    .get_message_by_name("skileez.call.v1.CallEvent")
                    .context("unknown message CallEvent")?;
                let dynamic = DynamicMessage::decode(descriptor, event.encode_to_vec().as_slice())?;
                let line = serde_json::json!({ "sequence": sequence, "subject": subject, "event": dynamic });
                println!("{line}");
            }
            OutputFormat::Text => println!("#{sequence:<6} {}", self.event_text(event)),
        }
        Ok(())
    }
}
