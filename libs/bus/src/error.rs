/// The error type of async-nats' many operation errors, kept as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong talking to NATS, from the caller's side. Every variant
/// names the server URL or the stream, subject or key involved, so a log line
/// alone tells where to look.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configured credentials could not be loaded (a creds file).
    #[error("cannot load the NATS credentials for {url}: {source}")]
    Credentials {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The first connection failed (nothing listens there, or the handshake
    /// failed). [`crate::Bus::connect`] does not retry; later reconnects are
    /// async-nats' own.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// Creating or updating a stream or the KV bucket failed, e.g. because a
    /// setting cannot be changed on an existing stream (its storage type).
    #[error("cannot set up {what} on NATS at {url}: {source}")]
    Topology {
        what: String,
        url: String,
        #[source]
        source: BoxError,
    },
    /// JetStream did not acknowledge a publish: the server is unreachable
    /// (`state` says whether the client is disconnected), no stream takes the
    /// subject, or the ack did not come within the timeout. The message may
    /// or may not be stored; publish it again with the same event id.
    #[error("publish to {subject} on NATS at {url} failed (client {state}): {source}")]
    Publish {
        subject: String,
        url: String,
        state: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    /// The event cannot be published as given: a subject with an empty or
    /// wildcard token, or a header value with a line break.
    #[error("invalid event {event_id}: {reason}")]
    InvalidEvent {
        event_id: uuid::Uuid,
        reason: String,
    },
    /// A KV read or write failed.
    #[error("key-value bucket {bucket}, key {key:?}: {source}")]
    KeyValue {
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    /// Creating or reading a durable consumer failed.
    #[error("consumer {durable} on stream {stream}: {source}")]
    Consumer {
        stream: String,
        durable: String,
        #[source]
        source: BoxError,
    },
    /// A [`crate::ConsumerConfig`] that cannot work (no lanes, an empty
    /// durable name); a bug in the caller.
    #[error("invalid consumer configuration for {durable:?}: {reason}")]
    InvalidConsumerConfig { durable: String, reason: String },
}

impl BusError {
    /// Whether trying again later may succeed: NATS was unreachable or slow.
    /// False for a malformed event or configuration.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            BusError::InvalidEvent { .. } | BusError::InvalidConsumerConfig { .. }
        )
    }
}
