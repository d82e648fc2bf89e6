//! `skileez coach …`: a coach's published hours and their bookable slots.
//!
//! Hours are written the way people say them: `--weekly "mon-fri
//! 09:00-12:00,13:00-17:00"`, `--override "2026-12-24 off"`, `--override
//! "2026-12-27 10:00-14:00"`. The parsing here only splits the text; the
//! service checks the values and names the field at fault.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use clap::{Args, Subcommand};
use skileez_proto::scheduling as pb;

use crate::{
    client::{Authed, Connection, channel},
    output,
};

#[derive(Args)]
pub struct CoachArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: CoachCommand,
}

#[derive(Subcommand)]
enum CoachCommand {
    /// A coach's published hours.
    #[command(subcommand)]
    Availability(AvailabilityCommand),
    /// Bookable starts with a coach in a range.
    Slots {
        /// The coach's user id.
        #[arg(long)]
        coach: String,
        /// From this instant (RFC 3339), or a local date or date-time
        /// (2027-03-15, 2027-03-15T08:00) in --viewer-tz (default UTC).
        #[arg(long)]
        from: String,
        /// Until this instant (exclusive), in the same forms as --from.
        #[arg(long)]
        to: String,
        /// The call's length in minutes (default: a free consultation's).
        #[arg(long, default_value_t = 0)]
        duration: u32,
        /// Minutes between starts, on the coach's wall clock.
        #[arg(long, default_value_t = 15)]
        step: u32,
        /// Show the slots in this IANA zone (default: your profile's).
        #[arg(long)]
        viewer_tz: Option<String>,
    },
}

#[derive(Subcommand)]
enum AvailabilityCommand {
    /// Publishes a coach's hours, replacing any before; lists the upcoming
    /// calls they leave outside (those stay valid).
    Set {
        /// The coach's user id.
        #[arg(long)]
        coach: String,
        /// The IANA zone the hours are in, e.g. Europe/Berlin.
        #[arg(long)]
        zone: String,
        /// Days and hours, e.g. "mon 09:00-12:00,13:00-17:00", "mon-fri
        /// 09:00-17:00", "sat,sun 10:00-14:00". Repeat for more days.
        #[arg(long = "weekly")]
        weekly: Vec<String>,
        /// A date's own hours, "2026-12-27 10:00-14:00", or a day off,
        /// "2026-12-24 off". Repeat for more dates.
        #[arg(long = "override")]
        overrides: Vec<String>,
        /// Minutes kept free before each call.
        #[arg(long, default_value_t = 0)]
        buffer_before: u32,
        /// Minutes kept free after each call.
        #[arg(long, default_value_t = 0)]
        buffer_after: u32,
        /// The coach's own minimum notice, in minutes.
        #[arg(long)]
        min_notice: Option<u32>,
        /// At most this many calls on one of the coach's days.
        #[arg(long)]
        daily_max: Option<u32>,
        /// A retry with the same id changes nothing twice.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Shows a coach's hours (and, to the coach and admins, the upcoming
    /// calls outside them).
    Show {
        /// The coach's user id.
        #[arg(long)]
        coach: String,
    },
    /// Withdraws a coach's hours: bookable at any time again.
    Clear {
        /// The coach's user id.
        #[arg(long)]
        coach: String,
        #[arg(long, default_value = "")]
        request_id: String,
    },
}

const WEEKDAYS: [pb::Weekday; 7] = [
    pb::Weekday::Monday,
    pb::Weekday::Tuesday,
    pb::Weekday::Wednesday,
    pb::Weekday::Thursday,
    pb::Weekday::Friday,
    pb::Weekday::Saturday,
    pb::Weekday::Sunday,
];

/// `mon`, `tues`, `Wednesday`: any prefix of a day's name of at least three
/// letters.
fn weekday_index(name: &str) -> anyhow::Result<usize> {
    const NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let name = name.trim().to_ascii_lowercase();
    NAMES
        .iter()
        .position(|full| name.len() >= 3 && full.starts_with(&name))
        .with_context(|| format!("{name:?} is not a weekday (mon … sun)"))
}

/// `mon`, `mon-fri`, `sat,sun`, `mon,wed-fri`: the days, Monday first.
fn parse_days(text: &str) -> anyhow::Result<Vec<pb::Weekday>> {
    let mut days = Vec::new();
    for part in text.split(',') {
        let indices = match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (weekday_index(first)?, weekday_index(last)?);
                anyhow::ensure!(first <= last, "{part:?}: a day range runs Monday to Sunday");
                (first..=last).collect()
            }
            None => vec![weekday_index(part)?],
        };
        days.extend(indices.into_iter().map(|i| WEEKDAYS[i]));
    }
    Ok(days)
}

/// `09:00-12:00,13:00-17:00`.
fn parse_intervals(text: &str) -> anyhow::Result<Vec<pb::TimeInterval>> {
    text.split(',')
        .map(|part| {
            let (start, end) = part
                .trim()
                .split_once('-')
                .with_context(|| format!("{part:?} is not an interval such as 09:00-12:00"))?;
            Ok(pb::TimeInterval {
                start: start.trim().to_owned(),
                end: end.trim().to_owned(),
            })
        })
        .collect()
}

/// `--weekly "mon-fri 09:00-12:00,13:00-17:00"`.
pub fn parse_weekly(text: &str) -> anyhow::Result<Vec<pb::WeeklyInterval>> {
    let (days, hours) = text
        .trim()
        .split_once(char::is_whitespace)
        .with_context(|| {
            format!("--weekly {text:?}: give days and hours, e.g. \"mon-fri 09:00-17:00\"")
        })?;
    let days = parse_days(days).with_context(|| format!("--weekly {text:?}"))?;
    let hours = parse_intervals(hours).with_context(|| format!("--weekly {text:?}"))?;
    Ok(days
        .into_iter()
        .flat_map(|day| {
            hours.iter().map(move |h| pb::WeeklyInterval {
                weekday: day as i32,
                start: h.start.clone(),
                end: h.end.clone(),
            })
        })
        .collect())
}

/// `--override "2026-12-24 off"` or `"2026-12-27 10:00-14:00"`.
pub fn parse_override(text: &str) -> anyhow::Result<pb::DateOverride> {
    let (date, hours) = text
        .trim()
        .split_once(char::is_whitespace)
        .with_context(|| {
            format!("--override {text:?}: give a date and hours or off, e.g. \"2026-12-24 off\"")
        })?;
    let hours = hours.trim();
    let off = hours.eq_ignore_ascii_case("off");
    Ok(pb::DateOverride {
        date: date.to_owned(),
        intervals: if off {
            Vec::new()
        } else {
            parse_intervals(hours).with_context(|| format!("--override {text:?}"))?
        },
        day_off: off,
    })
}

/// An instant (RFC 3339), or a local date or date-time in `zone`.
fn parse_instant(flag: &str, text: &str, zone: Tz) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .with_context(|| {
            format!("{flag} {text:?}: give an instant (2027-03-15T08:00:00Z) or a local date (2027-03-15) or date-time (2027-03-15T08:00)")
        })?;
    zone.from_local_datetime(&local)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
        .with_context(|| format!("{flag} {text:?} does not exist in {zone} (the clocks skip it)"))
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

fn client(
    channel: tonic::transport::Channel,
    bearer: crate::client::Bearer,
) -> pb::availability_service_client::AvailabilityServiceClient<Authed> {
    pb::availability_service_client::AvailabilityServiceClient::with_interceptor(channel, bearer)
}

pub async fn run(args: CoachArgs) -> anyhow::Result<()> {
    let conn = &args.conn;
    let out = output::Printer::new(conn.output, conn.tz.as_deref())?;
    // Parse everything before connecting: a typo needs no server.
    match args.command {
        CoachCommand::Availability(AvailabilityCommand::Set {
            coach,
            zone,
            weekly,
            overrides,
            buffer_before,
            buffer_after,
            min_notice,
            daily_max,
            request_id,
        }) => {
            let mut intervals = Vec::new();
            for text in &weekly {
                intervals.extend(parse_weekly(text)?);
            }
            let overrides = overrides
                .iter()
                .map(|text| parse_override(text))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = pb::SetCoachAvailabilityRequest {
                request_id,
                coach_id: coach,
                availability: Some(pb::Availability {
                    time_zone: zone,
                    weekly: intervals,
                    overrides,
                    buffer_before_minutes: buffer_before,
                    buffer_after_minutes: buffer_after,
                    min_notice_minutes: min_notice,
                    daily_max,
                }),
            };
            let (channel, bearer) = channel(conn).await?;
            let response = output::ok(
                client(channel, bearer)
                    .set_coach_availability(request)
                    .await,
            )?;
            out.set_availability(&response)
        }
        CoachCommand::Availability(AvailabilityCommand::Show { coach }) => {
            let (channel, bearer) = channel(conn).await?;
            let response = output::ok(
                client(channel, bearer)
                    .get_coach_availability(pb::GetCoachAvailabilityRequest { coach_id: coach })
                    .await,
            )?;
            out.availability(&response)
        }
        CoachCommand::Availability(AvailabilityCommand::Clear { coach, request_id }) => {
            let (channel, bearer) = channel(conn).await?;
            let response = output::ok(
                client(channel, bearer)
                    .clear_coach_availability(pb::ClearCoachAvailabilityRequest {
                        request_id,
                        coach_id: coach,
                    })
                    .await,
            )?;
            out.clear_availability(&response)
        }
        CoachCommand::Slots {
            coach,
            from,
            to,
            duration,
            step,
            viewer_tz,
        } => {
            let zone: Tz = match &viewer_tz {
                Some(z) => z
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--viewer-tz {z:?} is not an IANA time zone"))?,
                None => Tz::UTC,
            };
            let request = pb::FindSlotsRequest {
                coach_id: coach,
                from: Some(timestamp(parse_instant("--from", &from, zone)?)),
                to: Some(timestamp(parse_instant("--to", &to, zone)?)),
                duration_minutes: duration,
                viewer_time_zone: viewer_tz.unwrap_or_default(),
                step_minutes: step,
            };
            let (channel, bearer) = channel(conn).await?;
            let response = output::ok(client(channel, bearer).find_slots(request).await)?;
            out.slots(&response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_hours_read_as_people_write_them() {
        let hours = parse_weekly("mon-wed 09:00-12:00,13:00-17:00").unwrap();
        assert_eq!(hours.len(), 6);
        assert_eq!(hours[0].weekday, pb::Weekday::Monday as i32);
        assert_eq!(
            (hours[1].start.as_str(), hours[1].end.as_str()),
            ("13:00", "17:00")
        );
        assert_eq!(hours[5].weekday, pb::Weekday::Wednesday as i32);
        let hours = parse_weekly("Sat,sunday 10:00-14:00").unwrap();
        assert_eq!(
            hours.iter().map(|h| h.weekday).collect::<Vec<_>>(),
            [pb::Weekday::Saturday as i32, pb::Weekday::Sunday as i32]
        );
        assert!(parse_weekly("09:00-12:00").is_err());
        assert!(parse_weekly("fri-mon 09:00-12:00").is_err());
        assert!(parse_weekly("mo 09:00-12:00").is_err());
        assert!(parse_weekly("monk 09:00-12:00").is_err());
        assert!(parse_weekly("mon 09:00").is_err());
    }

    #[test]
    fn overrides_are_hours_or_off() {
        let off = parse_override("2026-12-24 off").unwrap();
        assert!(off.day_off && off.intervals.is_empty());
        let hours = parse_override("2026-12-27 10:00-14:00").unwrap();
        assert_eq!(hours.date, "2026-12-27");
        assert_eq!(hours.intervals.len(), 1);
        assert!(!hours.day_off);
        assert!(parse_override("2026-12-27").is_err());
    }

    #[test]
    fn ranges_take_instants_or_local_times_in_the_viewers_zone() {
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            parse_instant("--from", "2027-03-15T08:00:00Z", ny)
                .unwrap()
                .to_rfc3339(),
            "2027-03-15T08:00:00+00:00"
        );
        assert_eq!(
            parse_instant("--from", "2027-03-15", ny)
                .unwrap()
                .to_rfc3339(),
            "2027-03-15T04:00:00+00:00"
        );
        assert_eq!(
            parse_instant("--from", "2027-03-15T09:30", ny)
                .unwrap()
                .to_rfc3339(),
            "2027-03-15T13:30:00+00:00"
        );
        assert!(parse_instant("--from", "2027-03-14T02:30", ny).is_err());
        assert!(parse_instant("--from", "tomorrow", ny).is_err());
    }
}
