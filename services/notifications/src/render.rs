//! The words: every notification rendered for its recipient, from the
//! templates in `templates/` (minijinja; `.html` ones auto-escape), with
//! every time in the recipient's own zone, with the zone's abbreviation.
//!
//! Only English text exists so far; the locale picks the clock (12-hour for
//! regions that use it) and the HTML `lang`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, context};
use skileez_proto::call as ev;

use crate::model::{InviteMethod, NotificationKind};

/// Who a notification is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub user_id: String,
    pub name: String,
    pub zone: Tz,
    pub locale: String,
    pub role: Role,
}

/// The other participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    pub user_id: String,
    pub name: String,
}

/// The recipient's part in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Student,
    Coach,
}

/// What the event says, as far as the words go.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub kind: NotificationKind,
    pub call_kind: ev::CallKind,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub duration_minutes: u32,
    /// A reschedule: where the call was before.
    pub previous_start: Option<DateTime<Utc>>,
    /// A cancellation: the reason given, and who cancelled.
    pub reason: Option<String>,
    pub actor_id: Option<String>,
    /// A completed or missed call: who came.
    pub attendance: Option<ev::Attendance>,
}

/// A notification in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The in-app notification.
    pub title: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot render the {template} template: {source}")]
pub struct RenderError {
    template: &'static str,
    #[source]
    source: minijinja::Error,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("subject.txt", include_str!("../templates/subject.txt")),
    ("title.txt", include_str!("../templates/title.txt")),
    ("headline.txt", include_str!("../templates/headline.txt")),
    ("email.txt", include_str!("../templates/email.txt")),
    ("email.html", include_str!("../templates/email.html")),
];

/// The compiled templates. Cheap to share.
pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Compiles the templates; fails only on a template syntax error, which
    /// the unit tests catch.
    pub fn new() -> Result<Renderer, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|source| RenderError {
                    template: name,
                    source,
                })?;
        }
        Ok(Renderer { env })
    }

    /// Renders `facts` for `recipient`, who meets `other`.
    pub fn render(
        &self,
        facts: &Facts,
        recipient: &Recipient,
        other: &Other,
    ) -> Result<Rendered, RenderError> {
        let zone = recipient.zone;
        let locale = recipient.locale.as_str();
        let cancelled_by = match facts.actor_id.as_deref() {
            Some(actor) if actor == recipient.user_id => "you",
            Some(actor) if actor == other.user_id => "other",
            // An admin or a service.
            _ => "system",
        };
        let base = context! {
            kind => facts.kind.as_str(),
            invite => facts.kind.invite().map(InviteMethod::as_str).unwrap_or_default(),
            name => recipient.name.as_str(),
            other => other.name.as_str(),
            other_role => match recipient.role { Role::Student => "coach", Role::Coach => "student" },
            call_label => call_label(facts.call_kind),
            start => local_time(facts.start, zone, locale),
            start_short => short_time(facts.start, zone, locale),
            end_time => clock(facts.end, zone, locale),
            duration => facts.duration_minutes,
            previous_start => facts.previous_start.map(|at| local_time(at, zone, locale)).unwrap_or_default(),
            reason => facts.reason.clone().unwrap_or_default(),
            cancelled_by => cancelled_by,
            attendance => attendance_text(facts.attendance, recipient.role, &other.name),
            zone => zone.name(),
            lang => locale.split(['-', '_']).next().filter(|l| !l.is_empty()).unwrap_or("en"),
        };
        let headline = self.one("headline.txt", &base)?;
        let subject = self.one("subject.txt", &base)?;
        let title = self.one("title.txt", &base)?;
        let with_headline =
            context! { headline => headline.as_str(), subject => subject.as_str(), ..base };
        let text = self.render_template("email.txt", &with_headline)?;
        let html = self.render_template("email.html", &with_headline)?;
        Ok(Rendered {
            subject,
            text,
            html,
            title,
            body: headline,
        })
    }

    /// A one-line template: trimmed, inner line breaks folded.
    fn one(&self, name: &'static str, ctx: &minijinja::Value) -> Result<String, RenderError> {
        let text = self.render_template(name, ctx)?;
        Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    fn render_template(
        &self,
        name: &'static str,
        ctx: &minijinja::Value,
    ) -> Result<String, RenderError> {
        let wrap = |source| RenderError {
            template: name,
            source,
        };
        self.env
            .get_template(name)
            .map_err(wrap)?
            .render(ctx)
            .map_err(wrap)
    }
}

fn call_label(kind: ev::CallKind) -> &'static str {
    match kind {
        ev::CallKind::FreeConsultation => "free consultation",
        ev::CallKind::PaidSession => "session",
        ev::CallKind::Unspecified => "call",
    }
}

fn attendance_text(attendance: Option<ev::Attendance>, role: Role, other: &str) -> String {
    use ev::Attendance as A;
    let you_only = || "You came; ".to_owned() + other + " did not join.";
    let other_only = || format!("{other} came; you did not join.");
    match (attendance, role) {
        (Some(A::Both), _) => "Both of you attended.".to_owned(),
        (Some(A::Nobody), _) => "Neither of you joined.".to_owned(),
        (Some(A::StudentOnly), Role::Student) | (Some(A::CoachOnly), Role::Coach) => you_only(),
        (Some(A::StudentOnly), Role::Coach) | (Some(A::CoachOnly), Role::Student) => other_only(),
        _ => String::new(),
    }
}

/// Whether the locale's region reads a 12-hour clock.
fn twelve_hour(locale: &str) -> bool {
    let region = locale
        .split(['-', '_'])
        .nth(1)
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(
        region.as_str(),
        "US" | "CA" | "AU" | "NZ" | "IN" | "PH" | "PK" | "EG"
    )
}

/// The time of day with the zone's abbreviation: `3:30 PM PDT`, `15:30 IST`.
pub fn clock(at: DateTime<Utc>, zone: Tz, locale: &str) -> String {
    let local = at.with_timezone(&zone);
    let format = if twelve_hour(locale) {
        "%-I:%M %p %Z"
    } else {
        "%H:%M %Z"
    };
    local.format(format).to_string()
}

/// A full date and time in `zone`: `Tuesday, March 4, 2025, 3:30 PM PST`
/// (12-hour locales) or `Tuesday 4 March 2025, 15:30 IST`.
pub fn local_time(at: DateTime<Utc>, zone: Tz, locale: &str) -> String {
    let local = at.with_timezone(&zone);
    let date = if twelve_hour(locale) {
        local.format("%A, %B %-d, %Y")
    } else {
        local.format("%A %-d %B %Y")
    };
    format!("{date}, {}", clock(at, zone, locale))
}

/// A short date and time for subjects: `Tue Mar 4, 3:30 PM PST`, `Tue 4 Mar, 15:30 IST`.
pub fn short_time(at: DateTime<Utc>, zone: Tz, locale: &str) -> String {
    let local = at.with_timezone(&zone);
    let date = if twelve_hour(locale) {
        local.format("%a %b %-d")
    } else {
        local.format("%a %-d %b")
    };
    format!("{date}, {}", clock(at, zone, locale))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn facts(kind: NotificationKind) -> Facts {
        let start = Utc.with_ymd_and_hms(2025, 3, 4, 10, 0, 0).unwrap();
        Facts {
            kind,
            call_kind: ev::CallKind::FreeConsultation,
            start,
            end: start + chrono::Duration::minutes(15),
            duration_minutes: 15,
            previous_start: None,
            reason: None,
            actor_id: None,
            attendance: None,
        }
    }

    fn bo() -> Other {
        Other {
            user_id: "coach-9".into(),
            name: "Bo".into(),
        }
    }

    fn recipient(zone: Tz, locale: &str, role: Role) -> Recipient {
        Recipient {
            user_id: "u1".into(),
            name: "Asha <Rao>".into(),
            zone,
            locale: locale.into(),
            role,
        }
    }

    #[test]
    fn the_same_instant_reads_in_each_recipients_zone_with_its_abbreviation() {
        let at = Utc.with_ymd_and_hms(2025, 3, 4, 10, 0, 0).unwrap();
        assert_eq!(
            local_time(at, chrono_tz::Asia::Kolkata, "en-IN"),
            "Tuesday, March 4, 2025, 3:30 PM IST"
        );
        assert_eq!(
            local_time(at, chrono_tz::America::Los_Angeles, "en-US"),
            "Tuesday, March 4, 2025, 2:00 AM PST"
        );
        assert_eq!(
            local_time(at, chrono_tz::Europe::Berlin, "de-DE"),
            "Tuesday 4 March 2025, 11:00 CET"
        );
        // Summer time shows its own abbreviation.
        let summer = Utc.with_ymd_and_hms(2025, 7, 4, 10, 0, 0).unwrap();
        assert!(clock(summer, chrono_tz::America::Los_Angeles, "en-US").ends_with("PDT"));
    }

    #[test]
    fn every_kind_renders_for_both_roles() {
        let renderer = Renderer::new().unwrap();
        for kind in NotificationKind::ALL {
            for role in [Role::Student, Role::Coach] {
                let mut facts = facts(kind);
                facts.attendance = Some(ev::Attendance::StudentOnly);
                let r = renderer
                    .render(&facts, &recipient(chrono_tz::UTC, "en-GB", role), &bo())
                    .unwrap();
                for text in [&r.subject, &r.title, &r.body] {
                    assert!(
                        !text.is_empty() && !text.contains('\n'),
                        "{kind:?}: {text:?}"
                    );
                }
                assert!(r.text.contains("Bo"), "{kind:?}: {}", r.text);
                assert!(r.html.contains("<html"), "{kind:?}");
            }
        }
    }

    #[test]
    fn a_reschedule_says_where_from_and_a_cancel_who_and_why() {
        let renderer = Renderer::new().unwrap();
        let mut moved = facts(NotificationKind::Rescheduled);
        moved.previous_start = Some(moved.start - chrono::Duration::hours(1));
        let r = renderer
            .render(
                &moved,
                &recipient(chrono_tz::UTC, "en-GB", Role::Student),
                &bo(),
            )
            .unwrap();
        assert!(
            r.body.contains(
                "from Tuesday 4 March 2025, 09:00 UTC to Tuesday 4 March 2025, 10:00 UTC"
            ),
            "{}",
            r.body
        );
        assert!(
            r.text.contains("moves the call in your calendar"),
            "{}",
            r.text
        );

        let mut cancelled = facts(NotificationKind::Cancelled);
        cancelled.reason = Some("ill".into());
        cancelled.actor_id = Some("coach-9".into());
        let r = renderer
            .render(
                &cancelled,
                &recipient(chrono_tz::UTC, "en-GB", Role::Student),
                &bo(),
            )
            .unwrap();
        assert!(r.body.starts_with("Bo cancelled"), "{}", r.body);
        assert!(r.body.contains("ill"), "{}", r.body);
        cancelled.actor_id = Some("u1".into());
        let r = renderer
            .render(
                &cancelled,
                &recipient(chrono_tz::UTC, "en-GB", Role::Student),
                &bo(),
            )
            .unwrap();
        assert!(r.body.starts_with("You cancelled"), "{}", r.body);
        assert!(r.text.contains("removes the call from your calendar"));
    }

    #[test]
    fn html_escapes_names_and_text_does_not() {
        let renderer = Renderer::new().unwrap();
        let r = renderer
            .render(
                &facts(NotificationKind::Booked),
                &recipient(chrono_tz::UTC, "en-GB", Role::Student),
                &Other {
                    user_id: "x".into(),
                    name: "Bo & <b>Co</b>".into(),
                },
            )
            .unwrap();
        assert!(r.html.contains("Asha &lt;Rao&gt;"), "{}", r.html);
        assert!(r.html.contains("Bo &amp; &lt;b&gt;Co&lt;"), "{}", r.html);
        assert!(!r.html.contains("<b>Co</b>"));
        assert!(r.text.contains("Asha <Rao>"));
        assert!(r.text.contains("Bo & <b>Co</b>"));
    }

    #[test]
    fn attendance_is_told_from_the_recipients_side() {
        use ev::Attendance as A;
        assert_eq!(
            attendance_text(Some(A::Both), Role::Coach, "Bo"),
            "Both of you attended."
        );
        assert!(attendance_text(Some(A::StudentOnly), Role::Coach, "Bo").starts_with("Bo came"));
        assert!(attendance_text(Some(A::StudentOnly), Role::Student, "Bo").starts_with("You came"));
        assert!(attendance_text(Some(A::CoachOnly), Role::Student, "Bo").starts_with("Bo came"));
        assert_eq!(attendance_text(None, Role::Coach, "Bo"), "");
    }
}
