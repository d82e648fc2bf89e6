//! The scheduling service's targets: every RPC of `SchedulingService`,
//! `AvailabilityService`, `DirectoryService` and `CallTimerService`, through
//! the same validation steps as its handler (`services/scheduling/src/api`).

use std::fmt::Debug;

use chrono::Duration;
use skileez_domain::{UserId, availability::MAX_SLOT_RANGE_DAYS, time};
use skileez_proto::scheduling as pb;
use skileez_scheduling::{
    api::{availability as hours, directory, scheduling as calls, timers},
    validate,
};

use crate::{Input, assert_timestamp, check_scheduling as check, check_violation};

/// The free consultation's length, what a duration of 0 means.
const DEFAULT_MINUTES: u32 = 15;

fn request_id(id: &str, request: &dyn Debug) {
    if let Some(Some(kept)) = check_violation(validate::request_id(id), request) {
        assert!(kept.len() <= validate::MAX_REQUEST_ID_LEN);
    }
}

fn call_id(id: &str, request: &dyn Debug) {
    check_violation(validate::call_id("call_id", id), request);
}

fn start(
    field: validate::StartField,
    value: Option<&pb::StartTime>,
    zone: Option<&str>,
    request: &dyn Debug,
) {
    if let Some(start) = check(validate::start(field, value, zone), request) {
        assert_timestamp(start.utc, request);
        if let Some(zone) = &start.time_zone {
            assert!(time::parse_zone(zone).is_ok(), "kept zone {zone:?}");
        }
    }
}

/// `SchedulingService`.
pub fn scheduling_service(data: &[u8]) {
    let Some(input) = Input::split(data) else {
        return;
    };
    let zone = input.caller_zone;
    match input.rpc % 12 {
        0 => {
            let Some(m) = input.decode::<pb::GetSchedulingOptionsRequest>() else {
                return;
            };
            check(calls::validate_scheduling_options(&m), &m);
        }
        1 => {
            let Some(m) = input.decode::<pb::CheckAvailabilityRequest>() else {
                return;
            };
            let checked = check(calls::validate_check_availability(&m, DEFAULT_MINUTES), &m);
            let duration = checked.map_or(DEFAULT_MINUTES, |(_, _, minutes)| minutes);
            assert!((1..=240).contains(&duration));
            if let Some((from, to)) =
                check(calls::check_availability_window(&m, zone, duration), &m)
            {
                assert_timestamp(from, &m);
                assert_timestamp(to, &m);
                assert_eq!(to - from, Duration::minutes(i64::from(duration)));
            }
        }
        2 => {
            let Some(m) = input.decode::<pb::ScheduleFreeConsultationRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            let fields = calls::BookingFields::from(&m);
            if let Some(booking) = check(calls::validate_booking(&fields), &m) {
                assert!(booking.contract_id.is_none());
            }
            start(validate::START, m.start.as_ref(), zone, &m);
        }
        3 => {
            let Some(m) = input.decode::<pb::SchedulePaidSessionRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            let fields = calls::BookingFields::from(&m);
            if let Some(booking) = check(calls::validate_booking(&fields), &m) {
                assert!(booking.contract_id.is_some());
            }
            start(validate::START, m.start.as_ref(), zone, &m);
        }
        4 => {
            let Some(m) = input.decode::<pb::RescheduleCallRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            if let Some((_, Some(reason))) = check(calls::validate_reschedule(&m), &m) {
                assert!(reason.chars().count() <= validate::MAX_REASON_CHARS);
            }
            start(validate::NEW_START, m.new_start.as_ref(), zone, &m);
        }
        5 => {
            let Some(m) = input.decode::<pb::CancelCallRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            check_violation(
                validate::text("reason", &m.reason, validate::MAX_REASON_CHARS),
                &m,
            );
            call_id(&m.call_id, &m);
        }
        6 => {
            let Some(m) = input.decode::<pb::JoinCallRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            call_id(&m.call_id, &m);
        }
        7 => {
            let Some(m) = input.decode::<pb::EndCallRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            call_id(&m.call_id, &m);
        }
        8 => {
            let Some(m) = input.decode::<pb::GetCallRequest>() else {
                return;
            };
            call_id(&m.call_id, &m);
        }
        9 => {
            let Some(m) = input.decode::<pb::GetCallHistoryRequest>() else {
                return;
            };
            call_id(&m.call_id, &m);
        }
        10 => {
            let Some(m) = input.decode::<pb::ListCallsRequest>() else {
                return;
            };
            let caller = UserId::parse("stu-1").expect("a user id");
            if let Some(query) = check(calls::validate_list_calls(&m, &caller), &m) {
                assert!((1..=100).contains(&query.page_size));
                if let Some(after) = &query.after {
                    assert_timestamp(after.start, &m);
                }
            }
        }
        _ => {
            let Some(m) = input.decode::<pb::WatchCallsRequest>() else {
                return;
            };
            check(calls::validate_watch_after(&m.after), &m);
        }
    }
}

/// `AvailabilityService`.
pub fn availability_service(data: &[u8]) {
    let Some(input) = Input::split(data) else {
        return;
    };
    match input.rpc % 4 {
        0 => {
            let Some(m) = input.decode::<pb::SetCoachAvailabilityRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            check(hours::coach_id(&m.coach_id), &m);
            if let Some(hours) = check(
                validate::availability("availability", m.availability.as_ref()),
                &m,
            ) {
                // What was accepted is what the domain accepts.
                assert!(hours.validate().is_ok(), "{hours:?}");
            }
        }
        1 => {
            let Some(m) = input.decode::<pb::ClearCoachAvailabilityRequest>() else {
                return;
            };
            request_id(&m.request_id, &m);
            check(hours::coach_id(&m.coach_id), &m);
        }
        2 => {
            let Some(m) = input.decode::<pb::GetCoachAvailabilityRequest>() else {
                return;
            };
            check(hours::coach_id(&m.coach_id), &m);
        }
        _ => {
            let Some(m) = input.decode::<pb::FindSlotsRequest>() else {
                return;
            };
            if let Some(query) = check(hours::validate_find_slots(&m, DEFAULT_MINUTES), &m) {
                assert_timestamp(query.from, &m);
                assert_timestamp(query.to, &m);
                assert!(query.from < query.to);
                assert!(query.to - query.from <= Duration::days(MAX_SLOT_RANGE_DAYS));
                assert!((1..=240).contains(&query.duration));
                assert!((1..=1440).contains(&query.step));
            }
        }
    }
}

/// `DirectoryService`.
pub fn directory_service(data: &[u8]) {
    let Some(input) = Input::split(data) else {
        return;
    };
    match input.rpc % 4 {
        0 => {
            let Some(m) = input.decode::<pb::UpsertParticipantRequest>() else {
                return;
            };
            let Some(participant) = &m.participant else {
                return;
            };
            if let Some(row) = check(directory::validate_participant(participant), &m) {
                assert!(UserId::parse(&row.user_id).is_ok());
                assert!(time::parse_zone(&row.time_zone).is_ok());
            }
        }
        1 => {
            let Some(m) = input.decode::<pb::UpsertContractRequest>() else {
                return;
            };
            let Some(contract) = &m.contract else {
                return;
            };
            if let Some(snapshot) = check(directory::validate_contract(contract), &m) {
                assert_ne!(snapshot.student_id, snapshot.coach_id);
                assert!(snapshot.sessions_total != Some(0));
            }
        }
        2 => {
            let Some(m) = input.decode::<pb::GetParticipantRequest>() else {
                return;
            };
            check_violation(validate::user_id("user_id", &m.user_id), &m);
        }
        _ => {
            let Some(m) = input.decode::<pb::GetContractRequest>() else {
                return;
            };
            check_violation(validate::contract_id("contract_id", &m.contract_id), &m);
        }
    }
}

/// `CallTimerService`.
pub fn timer_service(data: &[u8]) {
    let Some(input) = Input::split(data) else {
        return;
    };
    if input.rpc % 4 == 2 {
        let Some(m) = input.decode::<pb::TriggerReminderRequest>() else {
            return;
        };
        check(timers::reminder_kind(m.kind), &m);
        call_id(&m.call_id, &m);
    } else {
        // MarkCallReady, MarkCallMissed and CompleteOverdueCall.
        let Some(m) = input.decode::<pb::TimerCommandRequest>() else {
            return;
        };
        call_id(&m.call_id, &m);
    }
}
