//! A large store for the `read` and `scale` benchmarks, written set-based by
//! PostgreSQL itself: one booked free consultation per call (its
//! `CallScheduled` event, stream row, call row and stored request id, as a
//! booking through the service leaves them), plus every coach's and
//! student's directory entry.
//!
//! The JSON of the event and of the call state comes from the domain (a
//! sample booking decided and serialised as the service does), with
//! placeholders PostgreSQL replaces per row, so the rows decode exactly as
//! the service's own. The relay's checkpoint is put after the seeded events:
//! they stand for history published long ago.
//!
//! Layout, for `coaches` coaches with `per_coach` calls each: call
//! `j = coach * per_coach + k` starts at `base + k·3 h + (coach / 1000)·15 min`
//! and lasts 15 minutes; its student is `(coach % 1000) · per_coach + k`, so
//! each student has one call with each of (up to 12) coaches, back to back,
//! and no two calls of a person overlap. Coaches are named as the `book`
//! load's (`bench-coach-N`), students not (`seed-stu-N`): booking load on a
//! seeded store meets the coaches' history (see [`super::book::slot`]).

use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use skileez_domain::{
    Actor, ActorRole, CallId, CallKind, Command, Policy, RequestedStart, ScheduleCall, UserId,
    decide, evolve,
};
use sqlx::PgPool;

pub const SEED_SPACING_HOURS: i64 = 3;
const ID_PREFIX: &str = "00000000-0000-4000-8000-";
const PLACEHOLDER_ID: &str = "00000000-0000-4000-8000-ffffffffffff";
const PLACEHOLDER_STUDENT: &str = "placeholder-student";
const PLACEHOLDER_COACH: &str = "placeholder-coach";

/// The id of seeded call `j`.
pub fn call_id(j: usize) -> String {
    format!("{ID_PREFIX}{j:012x}")
}

/// The student of seeded call `j`.
pub fn student(j: usize, per_coach: usize) -> String {
    let (coach, k) = (j / per_coach, j % per_coach);
    format!("seed-stu-{}", (coach % 1000) * per_coach + k)
}

/// The coach of seeded call `j`.
pub fn coach(j: usize, per_coach: usize) -> String {
    format!("bench-coach-{}", j / per_coach)
}

/// The start of seeded call `j`.
pub fn start(base: DateTime<Utc>, j: usize, per_coach: usize) -> DateTime<Utc> {
    let (coach, k) = (j / per_coach, j % per_coach);
    base + chrono::Duration::hours(SEED_SPACING_HOURS * k as i64)
        + chrono::Duration::minutes(15 * (coach / 1000) as i64)
}

/// A start free for both people of seeded call `j`: its coach's calls
/// start at most 135 minutes into each 3-hour block, its student's end by
/// 150 minutes in, so a 15-minute call 150 minutes into `j`'s block meets
/// neither.
pub fn free_start(base: DateTime<Utc>, j: usize, per_coach: usize) -> DateTime<Utc> {
    base + chrono::Duration::hours(SEED_SPACING_HOURS * (j % per_coach) as i64)
        + chrono::Duration::minutes(150)
}

/// A sample booking, decided and serialised as the service would: the
/// templates of every seeded row.
struct Sample {
    /// The sample's start as serialised, replaced per row.
    stamp: String,
    event_type: &'static str,
    event_json: String,
    state_json: String,
}

fn sample(policy: &Policy, base: DateTime<Utc>, now: DateTime<Utc>) -> anyhow::Result<Sample> {
    let sample_start = base + chrono::Duration::days(1);
    let stamp = sample_start.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let call_id = CallId(uuid::Uuid::parse_str(PLACEHOLDER_ID)?);
    let command = Command::Schedule(ScheduleCall {
        call_id,
        kind: CallKind::FreeConsultation,
        student_id: UserId::parse(PLACEHOLDER_STUDENT)?,
        coach_id: UserId::parse(PLACEHOLDER_COACH)?,
        contract: None,
        start: RequestedStart::utc(sample_start),
        by: Actor {
            user_id: UserId::parse("bench-admin")?,
            role: ActorRole::Admin,
        },
        existing_free_consultation: None,
        note: None,
    });
    let decided = decide(None, &command, now, policy)?;
    let [booked] = decided.as_slice() else {
        anyhow::bail!("a booking decided {} events, not one", decided.len());
    };
    let call = evolve(None, &booked.event).context("a booked call")?;
    let event_json = serde_json::to_string(&booked.event)?;
    let state_json = serde_json::to_string(&call)?;
    anyhow::ensure!(
        event_json.contains(&stamp) && state_json.contains(&stamp),
        "the start is not serialised as {stamp}: {event_json}"
    );
    Ok(Sample {
        stamp,
        event_type: booked.event.event_type(),
        event_json,
        state_json,
    })
}

/// What a seeded store's rows look like, as 8 hex digits: it changes when
/// the domain serialises a booking differently, so a kept store of the old
/// form is not reused (the booking time is fixed here, not the clock's).
pub fn fingerprint(policy: &Policy, base: DateTime<Utc>) -> anyhow::Result<String> {
    let Sample {
        event_json,
        state_json,
        ..
    } = sample(policy, base, base - chrono::Duration::days(2))?;
    // FNV-1a: stable across processes and Rust versions.
    let hash = [event_json, state_json]
        .iter()
        .flat_map(|json| json.bytes())
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    Ok(format!("{hash:08x}"))
}

pub async fn seed(
    pool: &PgPool,
    policy: &Policy,
    base: DateTime<Utc>,
    coaches: usize,
    per_coach: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        coaches <= 12_000,
        "at most 12,000 coaches: a student's calls would overlap"
    );
    let began = Instant::now();
    let total = coaches * per_coach;
    let Sample {
        stamp,
        event_type,
        event_json,
        state_json,
    } = sample(policy, base, Utc::now())?;
    let metadata = serde_json::json!({ "actor": { "user_id": "bench-admin", "role": "admin" } });

    // Per row: its id, student, coach, start and JSON, from the templates.
    let rows = format!(
        "SELECT j, '{ID_PREFIX}' || lpad(to_hex(j), 12, '0') AS id,
                'seed-stu-' || (((j / $2) % 1000) * $2 + j % $2) AS student,
                'bench-coach-' || (j / $2) AS coach,
                $3::timestamptz + (j % $2) * interval '{SEED_SPACING_HOURS} hours'
                                + (j / $2 / 1000) * interval '15 minutes' AS starts_at
           FROM generate_series(0::bigint, $1 - 1) j"
    );
    let fill = |template: &str| {
        format!(
            "replace(replace(replace(replace({template}, '{PLACEHOLDER_ID}', id), '{PLACEHOLDER_STUDENT}', student), '{PLACEHOLDER_COACH}', coach), '{stamp}', to_char(starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))"
        )
    };
    let bind_rows = |sql: String| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(total as i64)
            .bind(per_coach as i64)
            .bind(base)
    };
    let mut tx = pool.begin().await?;
    bind_rows(format!(
        "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload, metadata)
         SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(j), 12, '0'))::uuid, 'call-' || id, 'call', 1,
                $4, $5, {}::jsonb, $6::jsonb
           FROM ({rows}) r",
        fill("$7")
    ))
    .bind(event_type)
    .bind(skileez_scheduling::app::EVENT_SCHEMA_VERSION)
    .bind(metadata.to_string())
    .bind(&event_json)
    .execute(&mut *tx)
    .await?;
    bind_rows(format!(
        "INSERT INTO streams (stream_id, stream_type, version) SELECT 'call-' || id, 'call', 1 FROM ({rows}) r"
    ))
    .execute(&mut *tx)
    .await?;
    bind_rows(format!(
        "INSERT INTO calls (call_id, chain_id, kind, student_id, coach_id, contract_id,
                            starts_at, ends_at, coach_busy_until, status, version, state)
         SELECT id::uuid, id::uuid, 'free_consultation', student, coach, NULL,
                starts_at, starts_at + interval '15 minutes',
                starts_at + interval '15 minutes' + $4 * interval '1 second', 'scheduled', 1, {}::json
           FROM ({rows}) r",
        fill("$5")
    ))
    .bind(policy.coach_buffer.num_seconds() as f64)
    .bind(&state_json)
    .execute(&mut *tx)
    .await?;
    bind_rows(format!(
        "INSERT INTO request_ids (principal, request_id, method, request, response)
         SELECT 'student:' || student, 'seed-' || j, 'ScheduleFreeConsultation', '\\x00'::bytea, '\\x00'::bytea
           FROM ({rows}) r"
    ))
    .execute(&mut *tx)
    .await?;
    let students = 1000.min(coaches) * per_coach;
    sqlx::query(
        "INSERT INTO participants (user_id, display_name, email, time_zone, locale)
         SELECT 'bench-coach-' || i, 'Coach ' || i, 'coach' || i || '@example.com', 'Europe/Berlin', 'de'
           FROM generate_series(0, $1 - 1) i
         UNION ALL
         SELECT 'seed-stu-' || i, 'Student ' || i, 'student' || i || '@example.com', 'America/New_York', 'en'
           FROM generate_series(0, $2 - 1) i",
    )
    .bind(coaches as i64)
    .bind(students as i64)
    .execute(&mut *tx)
    .await?;
    // History the relay published long ago.
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, tx_id, position)
         SELECT $1, tx_id::text::bigint, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1",
    )
    .bind(skileez_scheduling::relay::RELAY_NAME)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // As a store that has lived: statistics and visibility maps up to date.
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    eprintln!(
        "bench: seeded {total} calls of {coaches} coaches and {students} students in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
