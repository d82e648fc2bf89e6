//! Well-formed requests of every RPC, and a few near misses, for libFuzzer
//! to start from: raw bytes seldom decode into a nested message with a
//! valid zone name, and these get it there at once.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use prost_types::Timestamp;
use skileez_proto::{call as ev, notifications as npb, scheduling as pb};

use crate::frame;

const CALL: &str = "0192f0c4-9b4e-7a2b-8d3e-1f2a3b4c5d6e";

fn utc(seconds: i64, nanos: i32) -> Option<pb::StartTime> {
    Some(pb::StartTime {
        time: Some(pb::start_time::Time::Utc(Timestamp { seconds, nanos })),
    })
}

fn local(date_time: &str, zone: &str, fold: Option<pb::Fold>) -> Option<pb::StartTime> {
    Some(pb::StartTime {
        time: Some(pb::start_time::Time::Local(pb::LocalDateTime {
            date_time: date_time.to_owned(),
            time_zone: zone.to_owned(),
            fold: fold.map(|f| f as i32),
        })),
    })
}

/// Starts worth trying: ordinary, in a gap, in a fold, zone-less, at the
/// edges of the `Timestamp` range and beyond.
fn starts() -> Vec<Option<pb::StartTime>> {
    vec![
        utc(1_798_000_000, 0),
        utc(253_402_300_799, 999_999_999),
        utc(-62_135_596_800, 0),
        utc(i64::MAX, 0),
        utc(8_210_266_876_799, 0),
        utc(1_798_000_059, 1_500_000_000),
        local("2026-07-01T10:00", "Europe/Berlin", None),
        local("2026-03-08T02:30", "America/New_York", None),
        local(
            "2026-11-01T01:30",
            "America/New_York",
            Some(pb::Fold::Later),
        ),
        local("2026-04-05T01:45", "Australia/Lord_Howe", None),
        local("9999-12-31T23:59", "Pacific/Kiritimati", None),
        local("2026-07-01T10:00", "", None),
        None,
    ]
}

pub fn scheduling_service() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (i, start) in starts().into_iter().enumerate() {
        let zone = u8::try_from(i % 3).unwrap_or(0);
        seeds.push(frame(
            1,
            zone,
            &pb::CheckAvailabilityRequest {
                coach_id: "coach-1".into(),
                start: start.clone(),
                duration_minutes: 240,
                student_id: "stu-1".into(),
            },
        ));
        seeds.push(frame(
            2,
            zone,
            &pb::ScheduleFreeConsultationRequest {
                request_id: "r-1".into(),
                student_id: "stu-1".into(),
                coach_id: "coach-1".into(),
                start: start.clone(),
                note: "hello".into(),
            },
        ));
        seeds.push(frame(
            3,
            zone,
            &pb::SchedulePaidSessionRequest {
                request_id: String::new(),
                student_id: "stu-1".into(),
                coach_id: "coach-1".into(),
                contract_id: "contract-1".into(),
                start: start.clone(),
                note: String::new(),
            },
        ));
        seeds.push(frame(
            4,
            zone,
            &pb::RescheduleCallRequest {
                request_id: "r-2".into(),
                call_id: CALL.into(),
                new_start: start,
                reason: "moved".into(),
            },
        ));
    }
    seeds.push(frame(
        0,
        0,
        &pb::GetSchedulingOptionsRequest {
            student_id: "stu-1".into(),
            coach_id: "coach-1".into(),
        },
    ));
    seeds.push(frame(
        5,
        0,
        &pb::CancelCallRequest {
            request_id: "r-3".into(),
            call_id: CALL.into(),
            reason: "ill".into(),
        },
    ));
    seeds.push(frame(
        6,
        0,
        &pb::JoinCallRequest {
            request_id: String::new(),
            call_id: CALL.into(),
        },
    ));
    seeds.push(frame(
        7,
        0,
        &pb::EndCallRequest {
            request_id: String::new(),
            call_id: "x".repeat(300),
        },
    ));
    seeds.push(frame(
        8,
        0,
        &pb::GetCallRequest {
            call_id: CALL.into(),
        },
    ));
    seeds.push(frame(
        9,
        0,
        &pb::GetCallHistoryRequest {
            call_id: "not-a-uuid".into(),
        },
    ));
    let token = URL_SAFE_NO_PAD.encode(
        r#"{"user":"stu-1","filter":"Upcoming","after":{"start":"2026-07-01T10:00:00Z","call_id":"0192f0c4-9b4e-7a2b-8d3e-1f2a3b4c5d6e"}}"#,
    );
    for (filter, page_token) in [(1, token), (2, "bm9wZQ".to_owned()), (99, String::new())] {
        seeds.push(frame(
            10,
            0,
            &pb::ListCallsRequest {
                user_id: String::new(),
                filter,
                page_size: 500,
                page_token,
            },
        ));
    }
    for after in ["", "123-456", "18446744073709551616-1"] {
        seeds.push(frame(
            11,
            0,
            &pb::WatchCallsRequest {
                after: after.into(),
            },
        ));
    }
    seeds
}

fn weekly(weekday: pb::Weekday, start: &str, end: &str) -> pb::WeeklyInterval {
    pb::WeeklyInterval {
        weekday: weekday as i32,
        start: start.into(),
        end: end.into(),
    }
}

pub fn availability_service() -> Vec<Vec<u8>> {
    let hours = pb::Availability {
        time_zone: "Europe/Berlin".into(),
        weekly: vec![
            weekly(pb::Weekday::Monday, "09:00", "12:00"),
            weekly(pb::Weekday::Monday, "13:00", "24:00"),
            weekly(pb::Weekday::Sunday, "9:00", "08:00"),
        ],
        overrides: vec![
            pb::DateOverride {
                date: "2026-12-24".into(),
                intervals: vec![],
                day_off: true,
            },
            pb::DateOverride {
                date: "2026-12-31".into(),
                intervals: vec![pb::TimeInterval {
                    start: "10:00".into(),
                    end: "11:30".into(),
                }],
                day_off: false,
            },
        ],
        buffer_before_minutes: 10,
        buffer_after_minutes: 5,
        min_notice_minutes: Some(120),
        daily_max: Some(4),
    };
    let mut seeds = vec![
        frame(
            0,
            0,
            &pb::SetCoachAvailabilityRequest {
                request_id: "r-1".into(),
                coach_id: "coach-1".into(),
                availability: Some(hours.clone()),
            },
        ),
        frame(
            1,
            0,
            &pb::ClearCoachAvailabilityRequest {
                request_id: String::new(),
                coach_id: "coach-1".into(),
            },
        ),
        frame(
            2,
            0,
            &pb::GetCoachAvailabilityRequest {
                coach_id: "coach 1".into(),
            },
        ),
    ];
    let mut bad = hours;
    bad.weekly = (0..200)
        .map(|_| weekly(pb::Weekday::Unspecified, "9", "5"))
        .collect();
    seeds.push(frame(
        0,
        0,
        &pb::SetCoachAvailabilityRequest {
            request_id: String::new(),
            coach_id: "coach-1".into(),
            availability: Some(bad),
        },
    ));
    for (from, to) in [
        (1_798_000_000, 1_798_000_000 + 7 * 86_400),
        (253_402_300_000, 253_402_300_799),
        (8_210_266_000_000, 8_210_266_876_799),
        (-62_135_596_800, -62_135_000_000),
    ] {
        seeds.push(frame(
            3,
            0,
            &pb::FindSlotsRequest {
                coach_id: "coach-1".into(),
                from: Some(Timestamp {
                    seconds: from,
                    nanos: 0,
                }),
                to: Some(Timestamp {
                    seconds: to,
                    nanos: 0,
                }),
                duration_minutes: 240,
                viewer_time_zone: "Asia/Kathmandu".into(),
                step_minutes: 15,
            },
        ));
    }
    seeds
}

pub fn directory_service() -> Vec<Vec<u8>> {
    vec![
        frame(
            0,
            0,
            &pb::UpsertParticipantRequest {
                participant: Some(pb::Participant {
                    user_id: "stu-1".into(),
                    display_name: "Ada".into(),
                    email: "ada@example.com".into(),
                    time_zone: "Europe/Berlin".into(),
                    locale: "en-US".into(),
                    email_enabled: true,
                }),
            },
        ),
        frame(
            1,
            0,
            &pb::UpsertContractRequest {
                contract: Some(pb::Contract {
                    contract_id: "contract-1".into(),
                    student_id: "stu-1".into(),
                    coach_id: "coach-1".into(),
                    status: pb::ContractStatus::Paid as i32,
                    session_minutes: 60,
                    sessions: Some(pb::contract::Sessions::SessionsTotal(10)),
                    sessions_used: 0,
                }),
            },
        ),
        frame(
            2,
            0,
            &pb::GetParticipantRequest {
                user_id: "stu-1".into(),
            },
        ),
        frame(
            3,
            0,
            &pb::GetContractRequest {
                contract_id: "contract-1".into(),
            },
        ),
    ]
}

pub fn timer_service() -> Vec<Vec<u8>> {
    vec![
        frame(
            0,
            0,
            &pb::TimerCommandRequest {
                call_id: CALL.into(),
            },
        ),
        frame(
            2,
            0,
            &pb::TriggerReminderRequest {
                call_id: CALL.into(),
                kind: ev::ReminderKind::ReminderKind1h as i32,
            },
        ),
    ]
}

pub fn notification_service() -> Vec<Vec<u8>> {
    vec![
        frame(
            0,
            0,
            &npb::ListNotificationsRequest {
                unread_only: true,
                page_size: 20,
                page_token: "n42".into(),
            },
        ),
        frame(
            1,
            0,
            &npb::MarkReadRequest {
                notification_ids: vec![
                    CALL.into(),
                    " 0192f0c4-9b4e-7a2b-8d3e-1f2a3b4c5d6f ".into(),
                ],
                all: false,
            },
        ),
        frame(
            2,
            0,
            &npb::WatchNotificationsRequest {
                after_sequence: Some(u64::MAX),
            },
        ),
        frame(
            3,
            0,
            &npb::ListDeliveriesRequest {
                states: vec![1, 2, 99],
                call_id: CALL.into(),
                recipient_id: "stu-1".into(),
                channel: 1,
                page_size: 100,
                page_token: "d7".into(),
            },
        ),
        frame(
            4,
            0,
            &npb::RetryDeadLettersRequest {
                delivery_ids: vec![1, u64::MAX],
            },
        ),
    ]
}

/// Time inputs are `arbitrary`-built; a few bytes of each shape are enough.
pub fn local_time() -> Vec<Vec<u8>> {
    vec![vec![0; 64], vec![0xff; 64], (0u8..=255).collect()]
}
