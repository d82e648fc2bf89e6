//! E-mail messages (RFC 5322 / MIME), composed with lettre's builder.
//!
//! With an invite (RFC 6047, iMIP), the structure is
//!
//! ```text
//! multipart/mixed
//! ├── multipart/alternative
//! │   ├── text/plain
//! │   ├── text/html
//! │   └── text/calendar; method=REQUEST|CANCEL   (what calendar clients act on)
//! └── application/ics; name="invite.ics"        (an attachment, for the rest)
//! ```
//!
//! and without one, `multipart/alternative` with the text and the HTML.
//! The `Message-ID` is a function of (call, kind, recipient) only, so a
//! duplicate that slips through (a crash between SMTP's answer and the
//! record of it) folds into the first one in mail clients.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

use crate::invite::Invite;
use crate::model::NotificationKind;
use crate::render::Rendered;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("not a valid e-mail address: {0:?}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("bad content type: {0}")]
    ContentType(String),
}

/// A message ready for SMTP.
#[derive(Debug, Clone)]
pub struct Composed {
    pub to: Address,
    pub message_id: String,
    /// The whole message, headers and body.
    pub bytes: Vec<u8>,
}

/// Everything that goes into one message.
pub struct Email<'a> {
    pub from: &'a Mailbox,
    pub to_name: &'a str,
    pub to_address: &'a str,
    pub message_id: String,
    pub rendered: &'a Rendered,
    pub invite: Option<&'a Invite>,
}

/// `<kind.call_id.recipient@domain>`: stable for (call, kind, recipient).
/// The recipient's id is written with `=XX` for every byte that may not
/// stand in a Message-ID's left part.
pub fn message_id(
    call_id: &str,
    kind: NotificationKind,
    recipient_id: &str,
    domain: &str,
) -> String {
    let mut recipient = String::with_capacity(recipient_id.len());
    for byte in recipient_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_') {
            recipient.push(char::from(byte));
        } else {
            recipient.push_str(&format!("={byte:02X}"));
        }
    }
    format!("<{}.{call_id}.{recipient}@{domain}>", kind.as_str())
}

pub fn compose(email: &Email<'_>) -> Result<Composed, MailError> {
    let to_address: Address = email
        .to_address
        .parse()
        .map_err(|_| MailError::Address(email.to_address.to_owned()))?;
    let to = Mailbox::new(
        Some(email.to_name.to_owned()).filter(|name| !name.is_empty()),
        to_address.clone(),
    );
    let rendered = email.rendered;
    let mut alternative = MultiPart::alternative()
        .singlepart(SinglePart::plain(rendered.text.clone()))
        .singlepart(SinglePart::html(rendered.html.clone()));
    let body = match email.invite {
        None => alternative,
        Some(invite) => {
            let ics = invite.to_ics();
            let method = invite.method.as_str();
            let calendar =
                ContentType::parse(&format!("text/calendar; method={method}; charset=utf-8"))
                    .map_err(|e| MailError::ContentType(e.to_string()))?;
            alternative =
                alternative.singlepart(SinglePart::builder().header(calendar).body(ics.clone()));
            let attachment_type = ContentType::parse("application/ics; name=\"invite.ics\"")
                .map_err(|e| MailError::ContentType(e.to_string()))?;
            MultiPart::mixed()
                .multipart(alternative)
                .singlepart(Attachment::new("invite.ics".to_owned()).body(ics, attachment_type))
        }
    };
    let mut message = Message::builder()
        .from(email.from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(email.message_id.clone()))
        .multipart(body)?;
    // RFC 3834: no vacation auto-replies to a machine.
    message.headers_mut().insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Auto-Submitted"),
        "auto-generated".to_owned(),
    ));
    Ok(Composed {
        to: to_address,
        message_id: email.message_id.clone(),
        bytes: message.formatted(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::invite::Party;
    use crate::model::InviteMethod;

    fn rendered() -> Rendered {
        Rendered {
            subject: "Booked: free consultation with Bö, Tue 4 Mar, 10:00 UTC".into(),
            text: "Hello Asha,\n\nYour call is booked.\n".into(),
            html: "<html><body>Hello Asha</body></html>".into(),
            title: "Call booked".into(),
            body: "Your call is booked.".into(),
        }
    }

    fn invite(method: InviteMethod) -> Invite {
        let start = Utc.with_ymd_and_hms(2025, 3, 4, 10, 0, 0).unwrap();
        Invite {
            method,
            uid: "chain@skileez".into(),
            sequence: 0,
            stamp: start,
            start,
            end: start + chrono::Duration::minutes(15),
            summary: "Free consultation".into(),
            description: "x".into(),
            organizer: Party {
                name: "Skileez".into(),
                email: "noreply@skileez.test".into(),
            },
            attendees: vec![],
        }
    }

    #[test]
    fn message_ids_are_stable_and_well_formed() {
        let a = message_id(
            "c-1",
            NotificationKind::Booked,
            "user.42@x:y",
            "skileez.test",
        );
        assert_eq!(a, "<booked.c-1.user=2E42=40x=3Ay@skileez.test>");
        assert_eq!(
            a,
            message_id(
                "c-1",
                NotificationKind::Booked,
                "user.42@x:y",
                "skileez.test"
            )
        );
        assert_ne!(
            a,
            message_id(
                "c-1",
                NotificationKind::Cancelled,
                "user.42@x:y",
                "skileez.test"
            )
        );
    }

    #[test]
    fn an_invite_mail_nests_the_calendar_in_the_alternative_and_attaches_it() {
        let from: Mailbox = "Skileez <noreply@skileez.test>".parse().unwrap();
        let rendered = rendered();
        let invite = invite(InviteMethod::Cancel);
        let composed = compose(&Email {
            from: &from,
            to_name: "Asha Rao",
            to_address: "asha@example.com",
            message_id: "<booked.c.u@skileez.test>".into(),
            rendered: &rendered,
            invite: Some(&invite),
        })
        .unwrap();
        let text = String::from_utf8(composed.bytes).unwrap();
        let mixed = text.find("multipart/mixed").expect(&text);
        let alternative = text.find("multipart/alternative").expect(&text);
        let calendar = text.find("text/calendar; method=CANCEL").expect(&text);
        let attachment = text.find("filename=\"invite.ics\"").expect(&text);
        assert!(mixed < alternative && alternative < calendar && calendar < attachment);
        assert!(
            text.contains("Message-ID: <booked.c.u@skileez.test>"),
            "{text}"
        );
        assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
        assert!(
            text.contains("To: \"Asha Rao\" <asha@example.com>"),
            "{text}"
        );
        assert_eq!(composed.to.to_string(), "asha@example.com");
    }

    #[test]
    fn a_mail_without_invite_is_just_the_alternative() {
        let from: Mailbox = "noreply@skileez.test".parse().unwrap();
        let rendered = rendered();
        let composed = compose(&Email {
            from: &from,
            to_name: "",
            to_address: "asha@example.com",
            message_id: "<x@y>".into(),
            rendered: &rendered,
            invite: None,
        })
        .unwrap();
        let text = String::from_utf8(composed.bytes).unwrap();
        assert!(text.contains("multipart/alternative"));
        assert!(!text.contains("multipart/mixed"));
        assert!(!text.contains("text/calendar"));
    }

    #[test]
    fn a_bad_address_is_refused() {
        let from: Mailbox = "noreply@skileez.test".parse().unwrap();
        let rendered = rendered();
        let err = compose(&Email {
            from: &from,
            to_name: "",
            to_address: "not an address",
            message_id: "<x@y>".into(),
            rendered: &rendered,
            invite: None,
        })
        .unwrap_err();
        assert!(matches!(err, MailError::Address(_)));
    }
}
