use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::testing::{at, call_id, user};

fn t(hh_mm: &str) -> DateTime<Utc> {
    at(&format!("2026-03-10T{hh_mm}:00Z"))
}

fn slot(n: u128, student: &str, coach: &str, from: &str, to: &str) -> BusySlot {
    BusySlot {
        call_id: call_id(n),
        student_id: user(student),
        coach_id: user(coach),
        start: t(from),
        end: t(to),
    }
}

fn conflict<'a>(
    existing: &'a [BusySlot],
    student: &str,
    coach: &str,
    from: &str,
    to: &str,
    buffer_minutes: i64,
) -> Option<&'a BusySlot> {
    find_conflict(
        existing,
        &user(student),
        &user(coach),
        t(from),
        t(to),
        Duration::minutes(buffer_minutes),
    )
}

#[test]
fn back_to_back_calls_do_not_conflict() {
    let existing = [slot(1, "s1", "c1", "10:00", "10:15")];
    assert_eq!(conflict(&existing, "s1", "c1", "10:15", "10:30", 0), None);
    assert_eq!(conflict(&existing, "s1", "c1", "09:45", "10:00", 0), None);
}

#[test]
fn overlapping_calls_of_one_student_conflict() {
    let existing = [slot(1, "s1", "c1", "10:00", "10:30")];
    let clash = conflict(&existing, "s1", "c2", "10:29", "11:00", 0);
    assert_eq!(clash.map(|s| s.call_id), Some(call_id(1)));
    assert_eq!(
        clash.map(BusySlot::to_error),
        Some(DomainError::SlotTaken {
            clashing_start: t("10:00"),
            clashing_end: t("10:30"),
        })
    );
}

#[test]
fn overlapping_calls_of_one_coach_conflict() {
    let existing = [slot(1, "s1", "c1", "10:00", "10:30")];
    assert!(conflict(&existing, "s2", "c1", "09:45", "10:01", 0).is_some());
    // Containing and contained ranges clash too.
    assert!(conflict(&existing, "s2", "c1", "09:00", "11:00", 0).is_some());
    assert!(conflict(&existing, "s2", "c1", "10:10", "10:20", 0).is_some());
}

#[test]
fn other_peoples_calls_do_not_conflict() {
    let existing = [slot(1, "s1", "c1", "10:00", "10:30")];
    assert_eq!(conflict(&existing, "s2", "c2", "10:00", "10:30", 15), None);
}

#[test]
fn the_coach_buffer_keeps_a_gap_after_each_call() {
    let existing = [slot(1, "s1", "c1", "10:00", "10:30")];
    // A call right after needs the buffer...
    assert!(conflict(&existing, "s2", "c1", "10:30", "11:00", 10).is_some());
    assert!(conflict(&existing, "s2", "c1", "10:39", "11:00", 10).is_some());
    assert_eq!(conflict(&existing, "s2", "c1", "10:40", "11:00", 10), None);
    // ...and so does a call right before.
    assert!(conflict(&existing, "s2", "c1", "09:30", "10:00", 10).is_some());
    assert_eq!(conflict(&existing, "s2", "c1", "09:30", "09:50", 10), None);
    // The buffer is the coach's; the student may go back to back.
    assert_eq!(conflict(&existing, "s1", "c2", "10:30", "11:00", 10), None);
    // A negative buffer counts as none.
    assert_eq!(conflict(&existing, "s2", "c1", "10:30", "11:00", -10), None);
}

#[test]
fn a_rescheduled_call_does_not_block_its_successor() {
    let existing = [slot(1, "s1", "c1", "10:00", "10:30")];
    let moved = find_conflict_except(
        &existing,
        Some(call_id(1)),
        &user("s1"),
        &user("c1"),
        t("10:15"),
        t("10:45"),
        Duration::zero(),
    );
    assert_eq!(moved, None);
    assert_eq!(
        check_no_conflict(
            &existing,
            &user("s1"),
            &user("c1"),
            t("10:15"),
            t("10:45"),
            Duration::zero()
        ),
        Err(existing[0].to_error())
    );
}

#[test]
fn empty_ranges_overlap_nothing() {
    assert!(!ranges_overlap(
        t("10:00"),
        t("10:00"),
        t("09:00"),
        t("11:00")
    ));
    assert!(!ranges_overlap(
        t("09:00"),
        t("11:00"),
        t("10:00"),
        t("10:00")
    ));
    assert!(ranges_overlap(
        t("09:00"),
        t("11:00"),
        t("10:00"),
        t("10:01")
    ));
}

#[test]
fn only_active_calls_hold_a_slot() {
    let event = crate::testing::free_call_scheduled(call_id(1), t("10:00"));
    let mut call = crate::replay([&event]).unwrap();
    assert_eq!(
        call.busy_slot(),
        Some(BusySlot {
            call_id: call_id(1),
            student_id: crate::testing::student(),
            coach_id: crate::testing::coach(),
            start: t("10:00"),
            end: t("10:15"),
        })
    );
    call.status = crate::CallStatus::Cancelled;
    assert_eq!(call.busy_slot(), None);
}

#[test]
fn reasons_are_normalised() {
    assert_eq!(normalize_reason(None), Ok(None));
    assert_eq!(normalize_reason(Some(" ")), Ok(None));
    assert_eq!(normalize_reason(Some(" a b ")), Ok(Some("a b".into())));
    assert!(normalize_reason(Some(&"x".repeat(501))).is_err());
}

#[test]
fn booking_time_rules_are_usable_on_their_own() {
    let p = Policy::default();
    let now = t("10:00");
    assert_eq!(check_booking_time(&p, now, t("10:15")), Ok(()));
    assert_eq!(
        check_booking_time(&p, now, t("10:14")),
        Err(DomainError::NotEnoughNotice {
            earliest: t("10:15")
        })
    );
    assert_eq!(
        check_whole_minute(&Policy::default(), t("10:15") + Duration::milliseconds(1)),
        Err(DomainError::StartNotWholeMinute)
    );
    // Extreme policies clamp instead of overflowing.
    let p = Policy {
        max_horizon: Duration::MAX,
        min_notice: Duration::MIN,
        ..Policy::default()
    };
    assert_eq!(
        check_booking_time(&p, now, DateTime::<Utc>::MIN_UTC),
        Ok(())
    );
}
