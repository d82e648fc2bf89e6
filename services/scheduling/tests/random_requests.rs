//! Random but well-typed requests to every RPC of the running service, with
//! valid tokens: every answer is a proper gRPC status (never the UNKNOWN or
//! INTERNAL of a panic, nor a dropped connection), and the service still
//! answers afterwards.
//!
//! The strings go from empty to hundreds of thousands of characters of any
//! script, the timestamps over the whole `i64` range with the edges of the
//! protobuf and chrono ranges in particular, the enums over every `i32`.
//! The fuzz targets in `fuzz/` cover the validation itself far more deeply;
//! this covers the handlers, the database and the gRPC layer around it.

mod support;

use std::{fmt::Debug, future::Future};

use chrono::{DateTime, Utc};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use prost_types::Timestamp;
use skileez_domain::ActorRole;
use skileez_proto::scheduling as pb;
use support::*;
use tokio::runtime::Runtime;
use tonic::{Code, Response, Status};

/// Requests per RPC. 24 RPCs; most answers are quick rejections, so the
/// whole test stays well under half a minute on two cores.
const CASES: u32 = 200;

const USERS: [&str; 4] = ["stu-1", "coach-1", "admin-1", "svc-1"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => prop::sample::select(&USERS[..]).prop_map(str::to_owned),
        2 => Just("0192f0c4-9b4e-7a2b-8d3e-1f2a3b4c5d6e".to_owned()),
        4 => "\\PC{0,40}",
        2 => "[a-z0-9_.:@-]{1,140}",
        1 => (any::<char>(), 1_000usize..300_000).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&USERS[..]).prop_map(str::to_owned),
        2 => text(),
    ]
}

fn seconds() -> impl Strategy<Value = i64> {
    let now = Utc::now().timestamp();
    let chrono_max = DateTime::<Utc>::MAX_UTC.timestamp();
    let chrono_min = DateTime::<Utc>::MIN_UTC.timestamp();
    prop_oneof![
        3 => (now - 86_400)..(now + 200 * 86_400),
        2 => any::<i64>(),
        2 => (chrono_max - 86_400)..=chrono_max,
        1 => chrono_min..=(chrono_min + 86_400),
        1 => (253_402_300_799i64 - 86_400)..=253_402_300_799,
        1 => -62_135_596_800i64..=(-62_135_596_800 + 86_400),
        1 => prop::sample::select(&[i64::MIN, i64::MAX, 0, -1][..]),
    ]
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    let nanos = prop_oneof![
        3 => Just(0),
        1 => 0..1_000_000_000i32,
        1 => 1_000_000_000..i32::MAX,
        1 => any::<i32>(),
    ];
    (seconds(), nanos).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0..9i32, 1 => any::<i32>()]
}

fn local_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u32..10_000, 0u32..14, 0u32..33, 0u32..26, 0u32..61).prop_map(
            |(y, mo, d, h, mi)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}")
        ),
        1 => text(),
    ]
}

fn zone() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(
            &[
                "Europe/Berlin",
                "America/New_York",
                "Australia/Lord_Howe",
                "Pacific/Kiritimati",
                "Asia/Kathmandu",
                "UTC",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

fn start() -> impl Strategy<Value = Option<pb::StartTime>> {
    let local = (local_text(), zone(), proptest::option::of(enum_value())).prop_map(
        |(date_time, time_zone, fold)| {
            pb::start_time::Time::Local(pb::LocalDateTime {
                date_time,
                time_zone,
                fold,
            })
        },
    );
    let time = prop_oneof![timestamp().prop_map(pb::start_time::Time::Utc), local];
    proptest::option::weighted(0.9, proptest::option::weighted(0.95, time))
        .prop_map(|time| time.map(|time| pb::StartTime { time }))
}

fn minutes() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 0..300u32, 1 => any::<u32>()]
}

fn availability() -> impl Strategy<Value = Option<pb::Availability>> {
    let hhmm = prop_oneof![
        3 => (0u32..26, 0u32..61).prop_map(|(h, m)| format!("{h:02}:{m:02}")),
        1 => text(),
    ]
    .boxed();
    let weekly = (enum_value(), hhmm.clone(), hhmm.clone())
        .prop_map(|(weekday, start, end)| pb::WeeklyInterval {
            weekday,
            start,
            end,
        })
        .boxed();
    let interval = (hhmm.clone(), hhmm).prop_map(|(start, end)| pb::TimeInterval { start, end });
    let date = prop_oneof![
        3 => (0u32..10_000, 0u32..14, 0u32..33).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        1 => text(),
    ];
    let overrides = (date, prop::collection::vec(interval, 0..4), any::<bool>())
        .prop_map(|(date, intervals, day_off)| pb::DateOverride {
            date,
            intervals,
            day_off,
        })
        .boxed();
    let weekly = prop_oneof![
        4 => prop::collection::vec(weekly.clone(), 0..10),
        1 => prop::collection::vec(weekly, 100..400),
    ];
    let overrides = prop_oneof![
        4 => prop::collection::vec(overrides.clone(), 0..5),
        1 => prop::collection::vec(overrides, 300..500),
    ];
    proptest::option::weighted(
        0.9,
        (
            zone(),
            weekly,
            overrides,
            minutes(),
            minutes(),
            proptest::option::of(minutes()),
            proptest::option::of(minutes()),
        )
            .prop_map(
                |(time_zone, weekly, overrides, before, after, notice, daily_max)| {
                    pb::Availability {
                        time_zone,
                        weekly,
                        overrides,
                        buffer_before_minutes: before,
                        buffer_after_minutes: after,
                        min_notice_minutes: notice,
                        daily_max,
                    }
                },
            ),
    )
}

/// Which token a request carries.
fn caller() -> impl Strategy<Value = (usize, ActorRole)> {
    prop::sample::select(
        &[
            (0, ActorRole::Student),
            (1, ActorRole::Coach),
            (2, ActorRole::Admin),
            (3, ActorRole::Service),
        ][..],
    )
}

/// An answer is fine when it is a success or a status the service meant to
/// send; UNKNOWN, INTERNAL, UNAVAILABLE and the like are what a panic, a
/// dropped connection or an unsendable error look like from here.
fn proper<T: Debug>(
    rpc: &str,
    request: &impl Debug,
    answer: Result<Response<T>, Status>,
) -> Result<(), TestCaseError> {
    let Err(status) = answer else {
        return Ok(());
    };
    let meant = matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::Unauthenticated
    );
    if meant && !status.message().is_empty() {
        return Ok(());
    }
    let shown = format!("{request:?}");
    Err(TestCaseError::fail(format!(
        "{rpc}: {:?} {:.300} for {:.600}",
        status.code(),
        status.message(),
        shown
    )))
}

struct Harness {
    rt: Runtime,
    app: TestApp,
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let app = rt.block_on(TestApp::spawn());
        Self { rt, app }
    }

    fn token(&self, (user, role): (usize, ActorRole)) -> Option<String> {
        Some(self.app.token(USERS[user], role))
    }

    /// Sends `CASES` requests drawn from `strategy` with `send`, then checks
    /// that the service still answers.
    fn run<S, F, Fut, T>(&self, rpc: &str, strategy: S, send: F)
    where
        S: Strategy,
        S::Value: Clone + Debug,
        F: Fn(S::Value) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
        T: Debug,
    {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |value| {
            let answer = self.rt.block_on(send(value.clone()));
            proper(rpc, &value, answer)
        });
        if let Err(error) = result {
            panic!("{rpc}: {error}");
        }
        self.assert_alive(rpc);
    }

    #[track_caller]
    fn assert_alive(&self, after: &str) {
        let answer = self
            .rt
            .block_on(self.app.admin().get_call(pb::GetCallRequest {
                call_id: "0192f0c4-9b4e-7a2b-8d3e-1f2a3b4c5d6e".into(),
            }));
        match answer {
            Err(status) if status.code() == Code::NotFound => {}
            other => panic!("after {after}, the service answers {other:?}"),
        }
    }
}

#[test]
fn random_requests_get_proper_answers_from_every_rpc() {
    let h = Harness::new();
    let app = &h.app;
    let scheduling = |who| app.scheduling_with(h.token(who));
    let hours = |who| app.hours_with(h.token(who));

    // SchedulingService
    h.run(
        "GetSchedulingOptions",
        (caller(), id(), id()),
        |(who, student_id, coach_id)| async move {
            scheduling(who)
                .get_scheduling_options(pb::GetSchedulingOptionsRequest {
                    student_id,
                    coach_id,
                })
                .await
        },
    );
    h.run(
        "CheckAvailability",
        (caller(), id(), start(), minutes(), id()),
        |(who, coach_id, start, duration_minutes, student_id)| async move {
            scheduling(who)
                .check_availability(pb::CheckAvailabilityRequest {
                    coach_id,
                    start,
                    duration_minutes,
                    student_id,
                })
                .await
        },
    );
    h.run(
        "ScheduleFreeConsultation",
        (caller(), text(), id(), id(), start(), text()),
        |(who, request_id, student_id, coach_id, start, note)| async move {
            scheduling(who)
                .schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
                    request_id,
                    student_id,
                    coach_id,
                    start,
                    note,
                })
                .await
        },
    );
    h.run(
        "SchedulePaidSession",
        (caller(), text(), id(), id(), text(), start(), text()),
        |(who, request_id, student_id, coach_id, contract_id, start, note)| async move {
            scheduling(who)
                .schedule_paid_session(pb::SchedulePaidSessionRequest {
                    request_id,
                    student_id,
                    coach_id,
                    contract_id,
                    start,
                    note,
                })
                .await
        },
    );
    h.run(
        "RescheduleCall",
        (caller(), text(), text(), start(), text()),
        |(who, request_id, call_id, new_start, reason)| async move {
            scheduling(who)
                .reschedule_call(pb::RescheduleCallRequest {
                    request_id,
                    call_id,
                    new_start,
                    reason,
                })
                .await
        },
    );
    h.run(
        "CancelCall",
        (caller(), text(), text(), text()),
        |(who, request_id, call_id, reason)| async move {
            scheduling(who)
                .cancel_call(pb::CancelCallRequest {
                    request_id,
                    call_id,
                    reason,
                })
                .await
        },
    );
    h.run(
        "JoinCall",
        (caller(), text(), text()),
        |(who, request_id, call_id)| async move {
            scheduling(who)
                .join_call(pb::JoinCallRequest {
                    request_id,
                    call_id,
                })
                .await
        },
    );
    h.run(
        "EndCall",
        (caller(), text(), text()),
        |(who, request_id, call_id)| async move {
            scheduling(who)
                .end_call(pb::EndCallRequest {
                    request_id,
                    call_id,
                })
                .await
        },
    );
    h.run("GetCall", (caller(), text()), |(who, call_id)| async move {
        scheduling(who)
            .get_call(pb::GetCallRequest { call_id })
            .await
    });
    h.run(
        "GetCallHistory",
        (caller(), text()),
        |(who, call_id)| async move {
            scheduling(who)
                .get_call_history(pb::GetCallHistoryRequest { call_id })
                .await
        },
    );
    h.run(
        "ListCalls",
        (caller(), id(), enum_value(), any::<i32>(), text()),
        |(who, user_id, filter, page_size, page_token)| async move {
            scheduling(who)
                .list_calls(pb::ListCallsRequest {
                    user_id,
                    filter,
                    page_size,
                    page_token,
                })
                .await
        },
    );
    let positions = prop_oneof![
        2 => text(),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(tx, at)| format!("{tx}-{at}")),
    ];
    h.run(
        "WatchCalls",
        (caller(), positions),
        |(who, after)| async move {
            // The stream is dropped at once: the answer to the call is what counts.
            scheduling(who)
                .watch_calls(pb::WatchCallsRequest { after })
                .await
                .map(|stream| stream.map(drop))
        },
    );

    // AvailabilityService
    h.run(
        "SetCoachAvailability",
        (caller(), text(), id(), availability()),
        |(who, request_id, coach_id, availability)| async move {
            hours(who)
                .set_coach_availability(pb::SetCoachAvailabilityRequest {
                    request_id,
                    coach_id,
                    availability,
                })
                .await
        },
    );
    h.run(
        "ClearCoachAvailability",
        (caller(), text(), id()),
        |(who, request_id, coach_id)| async move {
            hours(who)
                .clear_coach_availability(pb::ClearCoachAvailabilityRequest {
                    request_id,
                    coach_id,
                })
                .await
        },
    );
    h.run(
        "GetCoachAvailability",
        (caller(), id()),
        |(who, coach_id)| async move {
            hours(who)
                .get_coach_availability(pb::GetCoachAvailabilityRequest { coach_id })
                .await
        },
    );
    h.run(
        "FindSlots",
        (
            caller(),
            id(),
            proptest::option::weighted(0.9, timestamp()),
            proptest::option::weighted(0.9, timestamp()),
            minutes(),
            zone(),
            minutes(),
        ),
        |(who, coach_id, from, to, duration_minutes, viewer_time_zone, step_minutes)| async move {
            hours(who)
                .find_slots(pb::FindSlotsRequest {
                    coach_id,
                    from,
                    to,
                    duration_minutes,
                    viewer_time_zone,
                    step_minutes,
                })
                .await
        },
    );

    // DirectoryService (admin)
    let participant = (id(), text(), text(), zone(), text(), any::<bool>()).prop_map(
        |(user_id, display_name, email, time_zone, locale, email_enabled)| pb::Participant {
            user_id,
            display_name,
            email,
            time_zone,
            locale,
            email_enabled,
        },
    );
    h.run(
        "UpsertParticipant",
        proptest::option::weighted(0.95, participant),
        |participant| async move {
            app.directory()
                .upsert_participant(pb::UpsertParticipantRequest { participant })
                .await
        },
    );
    let sessions = proptest::option::of(prop_oneof![
        any::<u32>().prop_map(pb::contract::Sessions::SessionsTotal),
        any::<bool>().prop_map(pb::contract::Sessions::Unlimited),
    ]);
    let contract = (
        text(),
        id(),
        id(),
        enum_value(),
        minutes(),
        sessions,
        any::<u32>(),
    )
        .prop_map(
            |(
                contract_id,
                student_id,
                coach_id,
                status,
                session_minutes,
                sessions,
                sessions_used,
            )| {
                pb::Contract {
                    contract_id,
                    student_id,
                    coach_id,
                    status,
                    session_minutes,
                    sessions,
                    sessions_used,
                }
            },
        );
    h.run(
        "UpsertContract",
        proptest::option::weighted(0.95, contract),
        |contract| async move {
            app.directory()
                .upsert_contract(pb::UpsertContractRequest { contract })
                .await
        },
    );
    h.run("GetParticipant", id(), |user_id| async move {
        app.directory()
            .get_participant(pb::GetParticipantRequest { user_id })
            .await
    });
    h.run("GetContract", text(), |contract_id| async move {
        app.directory()
            .get_contract(pb::GetContractRequest { contract_id })
            .await
    });

    // CallTimerService (service)
    h.run("MarkCallReady", text(), |call_id| async move {
        app.timers()
            .mark_call_ready(pb::TimerCommandRequest { call_id })
            .await
    });
    h.run("MarkCallMissed", text(), |call_id| async move {
        app.timers()
            .mark_call_missed(pb::TimerCommandRequest { call_id })
            .await
    });
    h.run(
        "TriggerReminder",
        (text(), enum_value()),
        |(call_id, kind)| async move {
            app.timers()
                .trigger_reminder(pb::TriggerReminderRequest { call_id, kind })
                .await
        },
    );
    h.run("CompleteOverdueCall", text(), |call_id| async move {
        app.timers()
            .complete_overdue_call(pb::TimerCommandRequest { call_id })
            .await
    });
}
