//! The values that go into and come out of the store.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::InvalidFeedPosition;

/// An event to append. The writer chooses the id, so a retried command that
/// reuses its ids is rejected as [`crate::StoreError::DuplicateEvent`] instead of
/// being appended twice; the id is also the publish dedupe id downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    /// Free-form: actor, traceparent, request id, causation.
    pub metadata: serde_json::Value,
}

/// What the writer believes the stream's version to be, checked under the
/// stream's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// The stream must not exist yet. `Exact(0)` means the same.
    NoStream,
    /// The stream's last event must have this version (versions are 1-based).
    Exact(u64),
    /// No check: append after whatever is there, creating the stream if needed.
    Any,
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "version {version}"),
            Self::Any => f.write_str("any version"),
        }
    }
}

/// Events for one stream, with the version the writer expects it to be at.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub stream_type: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub tx_id: u64,
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_type: String,
    /// 1-based, without gaps, per stream.
    pub version: u64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    /// Start of the writing transaction (Postgres `now()`), not its commit.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Where this event sits in the feed; pass it to [`crate::EventStore::read_feed`]
    /// to continue after it.
    pub fn feed_position(&self) -> FeedPosition {
        FeedPosition {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

/// A place in the feed: the writing transaction's id, then the event's
/// position. Ordered the way the feed is.
///
/// Clients treat it as an opaque token: it displays as `<tx_id>-<position>`
/// and parses back from exactly that form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPosition {
    // Field order matters: the derived `Ord` compares `tx_id` first.
    pub tx_id: u64,
    pub position: i64,
}

impl FeedPosition {
    /// Before the first event.
    pub const START: FeedPosition = FeedPosition {
        tx_id: 0,
        position: 0,
    };
}

impl Default for FeedPosition {
    fn default() -> Self {
        Self::START
    }
}

impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx_id, self.position)
    }
}

impl FromStr for FeedPosition {
    type Err = InvalidFeedPosition;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidFeedPosition {
            token: token.chars().take(64).collect(),
        };
        // Only ASCII digits: `u64::from_str` would also take a leading `+`,
        // and one position must have exactly one spelling.
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (tx_id, position) = token.split_once('-').ok_or_else(invalid)?;
        if !digits(tx_id) || !digits(position) {
            return Err(invalid());
        }
        Ok(FeedPosition {
            tx_id: tx_id.parse().map_err(|_| invalid())?,
            position: position.parse().map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_position_token_round_trips() {
        for position in [
            FeedPosition::START,
            FeedPosition {
                tx_id: 742,
                position: 17,
            },
            FeedPosition {
                tx_id: u64::MAX,
                position: i64::MAX,
            },
        ] {
            let token = position.to_string();
            assert_eq!(token.parse::<FeedPosition>(), Ok(position), "{token}");
        }
        assert_eq!(FeedPosition::START.to_string(), "0-0");
    }

    #[test]
    fn malformed_feed_position_tokens_are_rejected() {
        for token in [
            "",
            "-",
            "12",
            "12-",
            "-12",
            "+1-2",
            "1-+2",
            "1--2",
            "1-2-3",
            " 1-2",
            "1-2 ",
            "a-1",
            "1-0x2",
            "18446744073709551616-1", // tx_id beyond u64
            "1-9223372036854775808",  // position beyond i64
        ] {
            assert!(
                token.parse::<FeedPosition>().is_err(),
                "{token:?} was accepted"
            );
        }
    }

    #[test]
    fn feed_positions_order_by_transaction_first() {
        let earlier_tx_later_row = FeedPosition {
            tx_id: 10,
            position: 99,
        };
        let later_tx_earlier_row = FeedPosition {
            tx_id: 11,
            position: 5,
        };
        assert!(earlier_tx_later_row < later_tx_earlier_row);
        assert!(FeedPosition::START < earlier_tx_later_row);
    }
}
