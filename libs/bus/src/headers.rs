//! The headers the bus writes and reads.
//!
//! An event message carries its CloudEvents attributes in binary mode (the
//! NATS protocol binding: `ce-` prefixed headers, the data content type in
//! `Content-Type`), the W3C trace context, and the event id a second time as
//! `Nats-Msg-Id`, which JetStream dedupes on. A dead letter carries the
//! original message's headers (but its own `Nats-Msg-Id`) plus the
//! `Skileez-Dlq-*` headers saying where it came from and why it was given up.

/// JetStream's dedupe id: the event id.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
pub const CONTENT_TYPE: &str = "Content-Type";
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Always `1.0`.
pub const CE_SPECVERSION: &str = "ce-specversion";
/// The event id.
pub const CE_ID: &str = "ce-id";
/// E.g. `skileez.call.v1.CallScheduled`.
pub const CE_TYPE: &str = "ce-type";
/// E.g. `//skileez/scheduling`.
pub const CE_SOURCE: &str = "ce-source";
/// The call (or contract, or user) id.
pub const CE_SUBJECT: &str = "ce-subject";
/// When the event happened, RFC 3339 in UTC.
pub const CE_TIME: &str = "ce-time";

/// The subject the dead message was published to.
pub const DLQ_SUBJECT: &str = "Skileez-Dlq-Subject";
/// The stream it was stored in.
pub const DLQ_STREAM: &str = "Skileez-Dlq-Stream";
/// Its sequence in that stream.
pub const DLQ_STREAM_SEQUENCE: &str = "Skileez-Dlq-Stream-Sequence";
/// Its event id (`Nats-Msg-Id`), when it had one.
pub const DLQ_EVENT_ID: &str = "Skileez-Dlq-Event-Id";
/// The consumer that gave up.
pub const DLQ_CONSUMER: &str = "Skileez-Dlq-Consumer";
/// The handler's last error, on one line, truncated to [`DLQ_ERROR_MAX_LEN`] bytes.
pub const DLQ_ERROR: &str = "Skileez-Dlq-Error";
/// How many times it had been delivered.
pub const DLQ_DELIVERED: &str = "Skileez-Dlq-Delivered";
/// `retry` (retries used up) or `poison` (the handler refused it).
pub const DLQ_REASON: &str = "Skileez-Dlq-Reason";

/// Longer errors are cut (at a character boundary) to keep headers small.
pub const DLQ_ERROR_MAX_LEN: usize = 1024;
