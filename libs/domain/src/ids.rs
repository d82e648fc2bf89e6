//! Identifiers of calls, people and contracts.
//!
//! Calls get UUIDs minted by this service (v7, so they sort by creation time
//! in B-tree indexes). People and contracts belong to other systems of the
//! platform, so their ids are opaque strings; they are validated once, here,
//! because they end up in database keys, NATS subjects and e-mail headers,
//! where a stray space or slash would do harm.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;

/// The id of one call. A rescheduled call gets a new id; the chain keeps the
/// id of its first call (see [`crate::Call::chain_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub Uuid);

impl CallId {
    /// A fresh UUIDv7. This reads the system clock and random source, so the
    /// decision functions never call it: call ids arrive in commands.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a hyphenated (or any form `uuid` accepts) call id from a request.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        Self::parse_field(value, "call_id")
    }

    /// Like [`CallId::parse`], naming `field` in the error (e.g. `new_call_id`).
    pub fn parse_field(value: &str, field: &'static str) -> Result<Self, DomainError> {
        Uuid::parse_str(value.trim())
            .map(Self)
            .map_err(|_| DomainError::InvalidArgument {
                field,
                message: format!("`{}` is not a UUID", truncate_for_message(value)),
            })
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for CallId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<Uuid> for CallId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

/// Longest accepted external id. Platform ids are far shorter; the cap keeps
/// hostile input out of indexes and subjects.
pub const MAX_EXTERNAL_ID_LEN: usize = 128;

/// Checks an external id: 1..=128 characters of `[A-Za-z0-9_.:@-]`.
/// These characters are safe as they are in NATS subject tokens, SQL keys and
/// mail headers alike (no spaces, `*`, `>`, `/`, no non-ASCII look-alikes).
fn validate_external_id(value: &str, field: &'static str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::InvalidArgument {
            field,
            message: "must not be empty".to_owned(),
        });
    }
    if value.len() > MAX_EXTERNAL_ID_LEN {
        return Err(DomainError::InvalidArgument {
            field,
            message: format!("must be at most {MAX_EXTERNAL_ID_LEN} characters"),
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-')))
    {
        return Err(DomainError::InvalidArgument {
            field,
            message: format!(
                "contains {bad:?}; use only letters, digits and _ . : @ - (e.g. `user_42`)"
            ),
        });
    }
    Ok(())
}

/// Error messages echo input back; keep hostile input from bloating them.
fn truncate_for_message(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut out: String = value.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        // Serialised as a bare string, and validated again on the way in:
        // a stored event or a bus message is input too.
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`; the error names this type's default field
            /// (`user_id` or `contract_id`).
            pub fn parse(value: &str) -> Result<Self, DomainError> {
                Self::parse_field(value, $field)
            }

            /// Like `parse`, naming `field` in the error (e.g. `student_id`).
            pub fn parse_field(value: &str, field: &'static str) -> Result<Self, DomainError> {
                validate_external_id(value, field)?;
                Ok(Self(value.to_owned()))
            }

            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                validate_external_id(&value, $field)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

external_id!(
    /// A platform user (student, coach or admin), as the identity provider names them.
    UserId,
    "user_id"
);

external_id!(
    /// A contract of the platform's contract system.
    ContractId,
    "contract_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_accept_the_documented_alphabet() {
        for ok in ["a", "user_42", "auth0:abc-DEF.1@x", &"x".repeat(128)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn user_ids_reject_empty_long_and_unsafe_input() {
        for bad in ["", " a", "a b", "a/b", "a*", "a>", "é", &"x".repeat(129)] {
            let err = UserId::parse(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    DomainError::InvalidArgument {
                        field: "user_id",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn contract_id_errors_name_their_field() {
        let err = ContractId::parse("no spaces").unwrap_err();
        assert_eq!(err.field(), Some("contract_id"));
        let err = UserId::parse_field("", "coach_id").unwrap_err();
        assert_eq!(err.field(), Some("coach_id"));
    }

    #[test]
    fn ids_serialise_as_bare_strings_and_validate_when_read() {
        let user = UserId::parse("u1").unwrap();
        assert_eq!(serde_json::to_string(&user).unwrap(), "\"u1\"");
        assert!(serde_json::from_str::<UserId>("\"bad id\"").is_err());
        let id = CallId(Uuid::from_u128(1));
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"00000000-0000-0000-0000-000000000001\""
        );
        assert_eq!(id.to_string(), "00000000-0000-0000-0000-000000000001");
    }

    #[test]
    fn call_ids_parse_and_new_ones_are_v7() {
        let id = CallId::parse("00000000-0000-0000-0000-000000000001").unwrap();
        assert_eq!(id, CallId(Uuid::from_u128(1)));
        assert!(CallId::parse("nope").is_err());
        assert_eq!(CallId::new().0.get_version_num(), 7);
    }
}
