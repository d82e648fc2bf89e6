//! The read models: calls, contracts, participants and request ids in
//! PostgreSQL. Writes take a connection inside the event store's append
//! transaction, so a read model never disagrees with the streams; reads take
//! the pool.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use skileez_domain::{
    Availability, Call, CallId, CallKind, ContractId, ContractSnapshot, ContractStatus, UserId,
};
// Dynamic SQL here only splices constant fragments (column lists, status
// sets, sort order), never input: input is always bound.
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

/// Postgres error codes we turn into domain answers.
pub const EXCLUSION_VIOLATION: &str = "23P01";
pub const UNIQUE_VIOLATION: &str = "23505";
pub const CHECK_VIOLATION: &str = "23514";

pub const COACH_OVERLAP: &str = "calls_coach_no_overlap";
pub const STUDENT_OVERLAP: &str = "calls_student_no_overlap";
pub const ONE_FREE_CONSULTATION: &str = "calls_one_free_consultation";
pub const REQUEST_IDS_PKEY: &str = "request_ids_pkey";

/// The SQLSTATE and constraint of a database error, if it is one.
pub fn db_violation(error: &sqlx::Error) -> Option<(String, String)> {
    let db = error.as_database_error()?;
    Some((
        db.code()?.into_owned(),
        db.constraint().unwrap_or_default().to_owned(),
    ))
}

pub fn kind_str(kind: CallKind) -> &'static str {
    match kind {
        CallKind::FreeConsultation => "free_consultation",
        CallKind::PaidSession => "paid_session",
    }
}

pub fn contract_status_str(status: ContractStatus) -> &'static str {
    match status {
        ContractStatus::Accepted => "accepted",
        ContractStatus::Paid => "paid",
        ContractStatus::Cancelled => "cancelled",
        ContractStatus::Completed => "completed",
    }
}

fn parse_contract_status(status: &str) -> Result<ContractStatus, sqlx::Error> {
    Ok(match status {
        "accepted" => ContractStatus::Accepted,
        "paid" => ContractStatus::Paid,
        "cancelled" => ContractStatus::Cancelled,
        "completed" => ContractStatus::Completed,
        other => {
            return Err(sqlx::Error::Decode(
                format!("unknown contract status {other:?}").into(),
            ));
        }
    })
}

const ACTIVE: &str = "('scheduled', 'ready', 'active')";

/// The `state` column of a `calls` row, parsed straight from the text
/// PostgreSQL sends (not through a `serde_json::Value` first: on a page of
/// calls that tree cost as much as the parse). The column is `json`, whose
/// binary form is its text; checked as UTF-8 once as a whole, the parser
/// then need not check every string in it again.
fn decode_state(row: &sqlx::postgres::PgRow) -> Result<Call, sqlx::Error> {
    let text: &str = row.try_get_unchecked("state")?;
    serde_json::from_str(text).map_err(|e| sqlx::Error::ColumnDecode {
        index: "state".to_owned(),
        source: e.into(),
    })
}

const UPSERT_CALL: &str =
    "INSERT INTO calls (call_id, chain_id, kind, student_id, coach_id, contract_id,
                            starts_at, ends_at, coach_busy_until, status, version, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::json)
         ON CONFLICT (call_id) DO UPDATE
            SET status = EXCLUDED.status, version = EXCLUDED.version,
                state = EXCLUDED.state, updated_at = now()";

/// [`UPSERT_CALL`] with the call bound as `$1`..`$12`.
fn bind_call<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    call: &'q Call,
    coach_buffer: Duration,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, sqlx::Error> {
    // Text, cast by the statement: `state` is json (migration 0010), kept as
    // written.
    let state = serde_json::to_string(call).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let end = call.end();
    Ok(query
        .bind(call.id.0)
        .bind(call.chain_id.0)
        .bind(kind_str(call.kind))
        .bind(call.student_id.as_str())
        .bind(call.coach_id.as_str())
        .bind(call.contract_id.as_ref().map(ContractId::as_str))
        .bind(call.start)
        .bind(end)
        .bind(end + coach_buffer)
        .bind(call.status.as_str())
        .bind(i64::try_from(call.version).unwrap_or(i64::MAX))
        .bind(state))
}

/// Writes a call's latest state. The exclusion constraints and the free
/// consultation index fire here, inside the booking's transaction.
pub async fn upsert_call(
    conn: &mut PgConnection,
    call: &Call,
    coach_buffer: Duration,
) -> Result<(), sqlx::Error> {
    bind_call(sqlx::query(UPSERT_CALL), call, coach_buffer)?
        .execute(conn)
        .await?;
    Ok(())
}

/// [`upsert_call`] and [`store_answer`] in one statement (one round trip):
/// a violation names its constraint, so the caller still tells a taken
/// slot (`calls_…`) from a retried request ([`REQUEST_IDS_PKEY`]).
pub async fn upsert_call_storing_answer(
    conn: &mut PgConnection,
    call: &Call,
    coach_buffer: Duration,
    principal: &str,
    request_id: &str,
    answer: &StoredAnswer,
) -> Result<(), sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH answer AS (
                INSERT INTO request_ids (principal, request_id, method, request, response)
                VALUES ($13, $14, $15, $16, $17))
             {UPSERT_CALL}"
        )
    });
    bind_call(sqlx::query(AssertSqlSafe(SQL.as_str())), call, coach_buffer)?
        .bind(principal)
        .bind(request_id)
        .bind(&answer.method)
        .bind(&answer.request)
        .bind(&answer.response)
        .execute(conn)
        .await?;
    Ok(())
}

/// The display names of a `calls` row's two people, as a JSON object: a
/// column for the statements that answer with cards, so they need no second
/// round trip for the names.
const ROW_NAMES: &str = "(SELECT coalesce(jsonb_object_agg(p.user_id, p.display_name), '{}'::jsonb)
                            FROM participants p WHERE p.user_id IN (student_id, coach_id)) AS names";

fn decode_names(
    row: &sqlx::postgres::PgRow,
    into: &mut HashMap<String, String>,
) -> Result<(), sqlx::Error> {
    let sqlx::types::Json(names) =
        row.try_get::<sqlx::types::Json<HashMap<String, String>>, _>("names")?;
    into.extend(names);
    Ok(())
}

/// A call from the read model, with the display names of its people.
pub async fn load_call(
    pool: &PgPool,
    id: CallId,
) -> Result<Option<(Call, HashMap<String, String>)>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT state, {ROW_NAMES} FROM calls WHERE call_id = $1"
    )))
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let mut names = HashMap::new();
        decode_names(&r, &mut names)?;
        Ok((decode_state(&r)?, names))
    })
    .transpose()
}

/// A busy interval that clashes with a requested one.
#[derive(Debug, Clone)]
pub struct Clash {
    pub call_id: CallId,
    pub student_id: String,
    pub coach_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub coach_busy_until: DateTime<Utc>,
}

/// Active calls that would clash with `[start, end)` for this coach (with the
/// buffer on both sides) or this student — the same test as the exclusion
/// constraints, used to name the clashing call and to answer
/// CheckAvailability.
pub async fn clashes(
    pool: &PgPool,
    coach: &UserId,
    student: Option<&UserId>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    coach_buffer: Duration,
) -> Result<Vec<Clash>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT call_id, student_id, coach_id, starts_at, ends_at, coach_busy_until FROM calls
          WHERE status IN {ACTIVE}
            AND ((coach_id = $1 AND tstzrange(starts_at, coach_busy_until, '[)') && tstzrange($3, $5, '[)'))
              OR (student_id = $2 AND tstzrange(starts_at, ends_at, '[)') && tstzrange($3, $4, '[)')))
          ORDER BY starts_at"
    )))
    .bind(coach.as_str())
    .bind(student.map(UserId::as_str))
    .bind(start)
    .bind(end)
    .bind(end + coach_buffer)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Clash {
            call_id: CallId(r.get("call_id")),
            student_id: r.get("student_id"),
            coach_id: r.get("coach_id"),
            start: r.get("starts_at"),
            end: r.get("ends_at"),
            coach_busy_until: r.get("coach_busy_until"),
        })
        .collect())
}

/// An active call of a coach, as the availability rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoachCall {
    pub call_id: CallId,
    pub student_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The coach's active calls that start after `now`, soonest first.
pub async fn upcoming_coach_calls<'e>(
    db: impl sqlx::PgExecutor<'e>,
    coach: &UserId,
    now: DateTime<Utc>,
) -> Result<Vec<Call>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT state FROM calls
          WHERE coach_id = $1 AND starts_at > $2 AND status IN {ACTIVE}
          ORDER BY starts_at, call_id"
    )))
    .bind(coach.as_str())
    .bind(now)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(|r| decode_state(&r)).collect()
}

/// A coach's published hours as the read model holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedHours {
    pub availability: Availability,
    /// The coach stream's version that published them.
    pub version: u64,
    pub updated_at: DateTime<Utc>,
}

/// Everything a booking checks against its coach, and the names its answer
/// shows, read in one statement (one round trip instead of three).
#[derive(Debug)]
pub struct CoachContext {
    /// The coach's published hours; `None`: bookable at any time.
    pub hours: Option<PublishedHours>,
    /// The coach's active calls that overlap `[from, to)`, by start.
    pub calls: Vec<CoachCall>,
    /// As [`display_names`] returns them, for `people`.
    pub names: HashMap<String, String>,
}

/// [`coach_availability`], the coach's active calls overlapping `[from, to)`
/// and [`display_names`] of `people`, in one statement: on the pool for a
/// query, or inside a booking's transaction (after its coach lock).
pub async fn coach_context<'e>(
    db: impl sqlx::PgExecutor<'e>,
    coach: &UserId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    people: &[&str],
) -> Result<CoachContext, sqlx::Error> {
    // One row: the hours and the names (computed once), the calls as
    // arrays in start order (hours repeated on every call's row would
    // multiply the bytes by the calls in the window).
    // A call lasts at most a day (240 minutes in fact), so one that overlaps
    // `[from, to)` starts after `from − 1 day`: that bound keeps the scan of
    // `calls_coach_start` to the window instead of the coach's history.
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT a.availability, a.version, a.updated_at,
                (SELECT coalesce(jsonb_object_agg(user_id, display_name), '{{}}'::jsonb)
                   FROM participants WHERE user_id = ANY($5)) AS names,
                c.ids, c.students, c.starts, c.ends
           FROM (SELECT 1) one
           LEFT JOIN coach_availability a ON a.coach_id = $1
           CROSS JOIN LATERAL (
                SELECT array_agg(call_id ORDER BY starts_at) AS ids,
                       array_agg(student_id ORDER BY starts_at) AS students,
                       array_agg(starts_at ORDER BY starts_at) AS starts,
                       array_agg(ends_at ORDER BY starts_at) AS ends
                  FROM calls
                 WHERE coach_id = $1 AND starts_at > $4 AND starts_at < $3 AND ends_at > $2
                   AND status IN {ACTIVE}
           ) c"
    )))
    .bind(coach.as_str())
    .bind(from)
    .bind(to)
    .bind(from - Duration::days(1))
    .bind(people)
    .fetch_one(db)
    .await?;
    let hours = row
        .get::<Option<serde_json::Value>, _>("availability")
        .map(|availability| {
            Ok::<_, sqlx::Error>(PublishedHours {
                availability: serde_json::from_value(availability)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                version: u64::try_from(row.get::<i64, _>("version")).unwrap_or(0),
                updated_at: row.get("updated_at"),
            })
        })
        .transpose()?;
    let names: HashMap<String, String> =
        serde_json::from_value(row.get("names")).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let ids: Vec<uuid::Uuid> = row.get::<Option<_>, _>("ids").unwrap_or_default();
    let students: Vec<String> = row.get::<Option<_>, _>("students").unwrap_or_default();
    let starts: Vec<DateTime<Utc>> = row.get::<Option<_>, _>("starts").unwrap_or_default();
    let ends: Vec<DateTime<Utc>> = row.get::<Option<_>, _>("ends").unwrap_or_default();
    let calls = ids
        .into_iter()
        .zip(students)
        .zip(starts.into_iter().zip(ends))
        .map(|((id, student_id), (start, end))| CoachCall {
            call_id: CallId(id),
            student_id,
            start,
            end,
        })
        .collect();
    Ok(CoachContext {
        hours,
        calls,
        names,
    })
}

/// The coach's published hours; `None`: bookable at any time.
pub async fn coach_availability<'e>(
    db: impl sqlx::PgExecutor<'e>,
    coach: &UserId,
) -> Result<Option<PublishedHours>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT availability, version, updated_at FROM coach_availability WHERE coach_id = $1",
    )
    .bind(coach.as_str())
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(PublishedHours {
            availability: serde_json::from_value(r.get("availability"))
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            version: u64::try_from(r.get::<i64, _>("version")).unwrap_or(0),
            updated_at: r.get("updated_at"),
        })
    })
    .transpose()
}

/// Writes the coach's hours (inside the append of the event that published
/// them).
pub async fn upsert_coach_availability(
    conn: &mut PgConnection,
    coach: &UserId,
    hours: &PublishedHours,
) -> Result<(), sqlx::Error> {
    let availability =
        serde_json::to_value(&hours.availability).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO coach_availability (coach_id, availability, version, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (coach_id) DO UPDATE
            SET availability = EXCLUDED.availability, version = EXCLUDED.version,
                updated_at = EXCLUDED.updated_at",
    )
    .bind(coach.as_str())
    .bind(availability)
    .bind(i64::try_from(hours.version).unwrap_or(i64::MAX))
    .bind(hours.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the coach's hours (inside the append of the event that cleared
/// them).
pub async fn delete_coach_availability(
    conn: &mut PgConnection,
    coach: &UserId,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM coach_availability WHERE coach_id = $1")
        .bind(coach.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// The student's active calls that overlap `[start, end)` with coaches other
/// than `coach` (clashes with `coach`'s own calls are the coach's side).
pub async fn student_clashes(
    pool: &PgPool,
    student: &UserId,
    coach: &UserId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<Clash>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT call_id, student_id, coach_id, starts_at, ends_at, coach_busy_until FROM calls
          WHERE student_id = $1 AND coach_id <> $2 AND status IN {ACTIVE}
            AND tstzrange(starts_at, ends_at, '[)') && tstzrange($3, $4, '[)')
          ORDER BY starts_at"
    )))
    .bind(student.as_str())
    .bind(coach.as_str())
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Clash {
            call_id: CallId(r.get("call_id")),
            student_id: r.get("student_id"),
            coach_id: r.get("coach_id"),
            start: r.get("starts_at"),
            end: r.get("ends_at"),
            coach_busy_until: r.get("coach_busy_until"),
        })
        .collect())
}

/// The pair's free consultation that still counts (not cancelled, not moved).
pub async fn free_consultation(
    pool: &PgPool,
    student: &UserId,
    coach: &UserId,
) -> Result<Option<Call>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT state FROM calls
          WHERE student_id = $1 AND coach_id = $2 AND kind = 'free_consultation'
            AND status NOT IN ('cancelled', 'rescheduled')",
    )
    .bind(student.as_str())
    .bind(coach.as_str())
    .fetch_optional(pool)
    .await?;
    row.map(|r| decode_state(&r)).transpose()
}

fn contract_from_row(row: &sqlx::postgres::PgRow) -> Result<ContractSnapshot, sqlx::Error> {
    let decode = |e: skileez_domain::DomainError| sqlx::Error::Decode(e.to_string().into());
    let total: Option<i32> = row.get("sessions_total");
    Ok(ContractSnapshot {
        id: ContractId::parse(row.get::<&str, _>("contract_id")).map_err(decode)?,
        student_id: UserId::parse(row.get::<&str, _>("student_id")).map_err(decode)?,
        coach_id: UserId::parse(row.get::<&str, _>("coach_id")).map_err(decode)?,
        status: parse_contract_status(row.get("status"))?,
        session_minutes: u32::try_from(row.get::<i32, _>("session_minutes")).unwrap_or(0),
        sessions_total: total.map(|t| u32::try_from(t).unwrap_or(0)),
        sessions_used: u32::try_from(row.get::<i32, _>("sessions_used")).unwrap_or(0),
    })
}

const CONTRACT_COLUMNS: &str =
    "contract_id, student_id, coach_id, status, session_minutes, sessions_total, sessions_used";

pub async fn contract(
    pool: &PgPool,
    id: &ContractId,
) -> Result<Option<ContractSnapshot>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONTRACT_COLUMNS} FROM contracts WHERE contract_id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(contract_from_row).transpose()
}

pub async fn contracts_between(
    pool: &PgPool,
    student: &UserId,
    coach: &UserId,
) -> Result<Vec<ContractSnapshot>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONTRACT_COLUMNS} FROM contracts
          WHERE student_id = $1 AND coach_id = $2 ORDER BY contract_id"
    )))
    .bind(student.as_str())
    .bind(coach.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(contract_from_row).collect()
}

/// Uses up one session of a paid contract; false when none is left (or the
/// contract is no longer paid) — the row lock serialises racing bookings.
pub async fn take_session(conn: &mut PgConnection, id: &ContractId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE contracts SET sessions_used = sessions_used + 1, updated_at = now()
          WHERE contract_id = $1 AND status = 'paid'
            AND (sessions_total IS NULL OR sessions_used < sessions_total)",
    )
    .bind(id.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn return_session(conn: &mut PgConnection, id: &ContractId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE contracts SET sessions_used = greatest(sessions_used - 1, 0), updated_at = now()
          WHERE contract_id = $1",
    )
    .bind(id.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn upsert_contract(
    pool: &PgPool,
    c: &ContractSnapshot,
) -> Result<ContractSnapshot, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO contracts (contract_id, student_id, coach_id, status, session_minutes, sessions_total)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (contract_id) DO UPDATE
            SET student_id = EXCLUDED.student_id, coach_id = EXCLUDED.coach_id,
                status = EXCLUDED.status, session_minutes = EXCLUDED.session_minutes,
                sessions_total = EXCLUDED.sessions_total, updated_at = now()
         RETURNING {CONTRACT_COLUMNS}"
    )))
    .bind(c.id.as_str())
    .bind(c.student_id.as_str())
    .bind(c.coach_id.as_str())
    .bind(contract_status_str(c.status))
    .bind(i32::try_from(c.session_minutes).unwrap_or(i32::MAX))
    .bind(c.sessions_total.map(|t| i32::try_from(t).unwrap_or(i32::MAX)))
    .fetch_one(pool)
    .await?;
    contract_from_row(&row)
}

/// Projects a contract fact of `version`; false when the row already holds
/// that version or a newer one (a redelivery or a late message).
pub async fn ingest_contract(
    conn: &mut PgConnection,
    c: &ContractSnapshot,
    version: u64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO contracts (contract_id, student_id, coach_id, status, session_minutes, sessions_total, source_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (contract_id) DO UPDATE
            SET student_id = EXCLUDED.student_id, coach_id = EXCLUDED.coach_id,
                status = EXCLUDED.status, session_minutes = EXCLUDED.session_minutes,
                sessions_total = EXCLUDED.sessions_total, source_version = EXCLUDED.source_version,
                updated_at = now()
          WHERE contracts.source_version < EXCLUDED.source_version",
    )
    .bind(c.id.as_str())
    .bind(c.student_id.as_str())
    .bind(c.coach_id.as_str())
    .bind(contract_status_str(c.status))
    .bind(i32::try_from(c.session_minutes).unwrap_or(i32::MAX))
    .bind(c.sessions_total.map(|t| i32::try_from(t).unwrap_or(i32::MAX)))
    .bind(i64::try_from(version).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Projects a participant fact of `version`; false when the row already holds
/// that version or a newer one.
pub async fn ingest_participant(
    conn: &mut PgConnection,
    p: &ParticipantRow,
    version: u64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO participants (user_id, display_name, email, time_zone, locale, email_enabled, source_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (user_id) DO UPDATE
            SET display_name = EXCLUDED.display_name, email = EXCLUDED.email,
                time_zone = EXCLUDED.time_zone, locale = EXCLUDED.locale,
                email_enabled = EXCLUDED.email_enabled, source_version = EXCLUDED.source_version,
                updated_at = now()
          WHERE participants.source_version < EXCLUDED.source_version",
    )
    .bind(&p.user_id)
    .bind(&p.display_name)
    .bind(&p.email)
    .bind(&p.time_zone)
    .bind(&p.locale)
    .bind(p.email_enabled)
    .bind(i64::try_from(version).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRow {
    pub user_id: String,
    pub display_name: String,
    pub email: String,
    pub time_zone: String,
    pub locale: String,
    pub email_enabled: bool,
}

const PARTICIPANT_COLUMNS: &str = "user_id, display_name, email, time_zone, locale, email_enabled";

fn participant_from_row(row: &sqlx::postgres::PgRow) -> ParticipantRow {
    ParticipantRow {
        user_id: row.get("user_id"),
        display_name: row.get("display_name"),
        email: row.get("email"),
        time_zone: row.get("time_zone"),
        locale: row.get("locale"),
        email_enabled: row.get("email_enabled"),
    }
}

pub async fn participant(pool: &PgPool, id: &str) -> Result<Option<ParticipantRow>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {PARTICIPANT_COLUMNS} FROM participants WHERE user_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(participant_from_row))
}

/// Display names of these users, for call cards.
pub async fn display_names(
    conn: &mut PgConnection,
    ids: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT user_id, display_name FROM participants WHERE user_id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get("user_id"), r.get("display_name")))
        .collect())
}

pub async fn upsert_participant(
    pool: &PgPool,
    p: &ParticipantRow,
) -> Result<ParticipantRow, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO participants (user_id, display_name, email, time_zone, locale, email_enabled)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE
            SET display_name = EXCLUDED.display_name, email = EXCLUDED.email,
                time_zone = EXCLUDED.time_zone, locale = EXCLUDED.locale,
                email_enabled = EXCLUDED.email_enabled, updated_at = now()
         RETURNING {PARTICIPANT_COLUMNS}"
    )))
    .bind(&p.user_id)
    .bind(&p.display_name)
    .bind(&p.email)
    .bind(&p.time_zone)
    .bind(&p.locale)
    .bind(p.email_enabled)
    .fetch_one(pool)
    .await?;
    Ok(participant_from_row(&row))
}

/// Which calls ListCalls returns, and in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListFilter {
    /// Active calls, soonest first.
    Upcoming,
    /// Ended calls, latest first.
    Past,
    /// Everything, soonest first.
    All,
}

/// Keyset position after the last call of a page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageKey {
    pub start: DateTime<Utc>,
    pub call_id: uuid::Uuid,
}

/// Up to `limit` of the user's calls after `after`, in the filter's order.
pub async fn list_calls(
    pool: &PgPool,
    user: &UserId,
    filter: ListFilter,
    after: Option<&PageKey>,
    limit: u32,
) -> Result<Page, sqlx::Error> {
    let (status_clause, order, cmp) = match filter {
        ListFilter::Upcoming => (format!("AND status IN {ACTIVE}"), "ASC", ">"),
        ListFilter::Past => (format!("AND status NOT IN {ACTIVE}"), "DESC", "<"),
        ListFilter::All => (String::new(), "ASC", ">"),
    };
    let keyset = if after.is_some() {
        format!("AND (starts_at, call_id) {cmp} ($2, $3)")
    } else {
        String::new()
    };
    // Two halves instead of `student_id = $1 OR coach_id = $1`, each in the
    // order of its (user, starts_at, call_id) index and cut at the page
    // size, merged: at most two pages of rows are read, never all of the
    // user's calls sorted (without the per-half order PostgreSQL sorted a
    // coach's every call, and took the exclusion constraints' GiST index for
    // the student's half).
    let half = |who: &str| {
        format!(
            "(SELECT state, starts_at, call_id FROM calls
               WHERE {who} {status_clause} {keyset}
               ORDER BY starts_at {order}, call_id {order} LIMIT $4)"
        )
    };
    // The user's own name comes with the page (one lookup); their
    // counterparts' from the service's memory (see `names`), as of the
    // directory epoch this same snapshot sees.
    let sql = format!(
        "SELECT state, (SELECT epoch FROM directory_epoch) AS epoch,
                (SELECT display_name FROM participants WHERE user_id = $1) AS own_name
           FROM ({} UNION ALL {}) c
          ORDER BY starts_at {order}, call_id {order} LIMIT $4",
        half("student_id = $1"),
        half("coach_id = $1 AND student_id <> $1"),
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(user.as_str())
        .bind(after.map(|a| a.start))
        .bind(after.map(|a| a.call_id))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    let calls = rows.iter().map(decode_state).collect::<Result<_, _>>()?;
    let directory = match rows.first() {
        Some(row) => Some(PageDirectory {
            epoch: row.try_get("epoch")?,
            own_name: row.try_get("own_name")?,
        }),
        None => None,
    };
    Ok(Page { calls, directory })
}

/// A page of ListCalls.
#[derive(Debug)]
pub struct Page {
    pub calls: Vec<Call>,
    /// What the page's statement saw of the directory; none for an empty
    /// page.
    pub directory: Option<PageDirectory>,
}

#[derive(Debug)]
pub struct PageDirectory {
    pub epoch: i64,
    /// The listed user's display name, if the directory knows them.
    pub own_name: Option<String>,
}

/// The display names of these users now, and the directory epoch they are
/// of. Users unknown to the directory have none.
pub async fn display_names_now(
    pool: &PgPool,
    ids: &[&str],
) -> Result<(i64, HashMap<String, String>), sqlx::Error> {
    let row = sqlx::query(
        "SELECT epoch,
                (SELECT coalesce(json_object_agg(user_id, display_name), '{}')
                   FROM participants WHERE user_id = ANY($1)) AS names
           FROM directory_epoch",
    )
    .bind(ids)
    .fetch_one(pool)
    .await?;
    let mut names = HashMap::with_capacity(ids.len());
    decode_names(&row, &mut names)?;
    Ok((row.try_get("epoch")?, names))
}

/// Which of these calls the user takes part in.
pub async fn calls_of_user(
    pool: &PgPool,
    user: &str,
    ids: &[uuid::Uuid],
) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT call_id FROM calls WHERE call_id = ANY($1) AND (student_id = $2 OR coach_id = $2)",
    )
    .bind(ids)
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.get("call_id")).collect())
}

/// A stored first answer to a request id.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub method: String,
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

pub async fn stored_answer(
    pool: &PgPool,
    principal: &str,
    request_id: &str,
) -> Result<Option<StoredAnswer>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT method, request, response FROM request_ids WHERE principal = $1 AND request_id = $2",
    )
    .bind(principal)
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| StoredAnswer {
        method: r.get("method"),
        request: r.get("request"),
        response: r.get("response"),
    }))
}

pub async fn store_answer(
    conn: &mut PgConnection,
    principal: &str,
    request_id: &str,
    answer: &StoredAnswer,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO request_ids (principal, request_id, method, request, response)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(principal)
    .bind(request_id)
    .bind(&answer.method)
    .bind(&answer.request)
    .bind(&answer.response)
    .execute(conn)
    .await?;
    Ok(())
}
