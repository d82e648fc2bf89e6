//! Where the bus is and what its streams, bucket and subjects are called.

/// How to reach NATS and what to create there.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `nats://host:port`, or several separated by commas (a cluster's seeds).
    pub url: String,
    /// Replicas of every stream and of the KV bucket: 1 on one server, 3 on
    /// the production cluster. Changing it later is an update JetStream
    /// performs online.
    pub stream_replicas: usize,
    pub names: Names,
    /// Authentication and TLS (`NATS_USER`, `NATS_CREDS_FILE`, `NATS_TLS_*`…).
    pub security: crate::NatsSecurity,
    /// Whether this service creates and updates the streams and the bucket
    /// (`SKILEEZ_NATS_MANAGE_TOPOLOGY`, default true), or only checks that
    /// they exist: under least-privilege NATS users only the scheduling
    /// service may change them.
    pub manage_topology: bool,
}

impl BusConfig {
    /// The defaults, against `url`.
    pub fn new(url: impl Into<String>) -> BusConfig {
        BusConfig {
            url: url.into(),
            ..BusConfig::default()
        }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream_replicas: 1,
            names: Names::default(),
            security: crate::NatsSecurity::default(),
            manage_topology: true,
        }
    }
}

/// The names of everything the bus creates, and the subjects built from them.
/// Tests and parallel environments on one server change them; subjects are
/// always made here, never spelled out elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The call events: `<root>.call.v1.<EventName>.<call_id>`.
    pub call_stream: String,
    /// Facts from the platform: `<root>.contract.v1.>` and `<root>.user.v1.>`.
    pub platform_stream: String,
    /// Messages consumers gave up on: `<root>.dlq.<consumer>`.
    pub dead_letter_stream: String,
    /// The latest card of each call, keyed by call id.
    pub cards_bucket: String,
    /// The first token of every subject.
    pub subject_root: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            call_stream: "CALL_EVENTS".to_owned(),
            platform_stream: "PLATFORM_EVENTS".to_owned(),
            dead_letter_stream: "DEAD_LETTERS".to_owned(),
            cards_bucket: "CALL_CARDS".to_owned(),
            subject_root: "skileez".to_owned(),
        }
    }
}

impl Names {
    /// `<root>.call.v1.<event_type>.<call_id>`, e.g.
    /// `skileez.call.v1.CallScheduled.0192…`. Both parts must be single
    /// subject tokens (no `.`, `*`, `>` or whitespace); consumers take the
    /// last token as the call id. [`crate::Bus::publish_event`] rejects a
    /// subject that breaks this.
    pub fn call_subject(&self, event_type: &str, call_id: &str) -> String {
        format!("{}.call.v1.{event_type}.{call_id}", self.subject_root)
    }

    /// Every call event: the call stream's subject, and the filter of a
    /// consumer that wants them all.
    pub fn call_subjects(&self) -> String {
        format!("{}.call.v1.>", self.subject_root)
    }

    /// One type of call event, for a consumer that filters:
    /// `<root>.call.v1.<event_type>.*`.
    pub fn call_event_filter(&self, event_type: &str) -> String {
        format!("{}.call.v1.{event_type}.*", self.subject_root)
    }

    /// `<root>.contract.v1.<event_type>.<contract_id>`.
    pub fn contract_subject(&self, event_type: &str, contract_id: &str) -> String {
        format!(
            "{}.contract.v1.{event_type}.{contract_id}",
            self.subject_root
        )
    }

    /// `<root>.user.v1.<event_type>.<user_id>`.
    pub fn user_subject(&self, event_type: &str, user_id: &str) -> String {
        format!("{}.user.v1.{event_type}.{user_id}", self.subject_root)
    }

    /// The platform stream's subjects, which are also the filters of a
    /// consumer that wants every platform fact.
    pub fn platform_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.contract.v1.>", self.subject_root),
            format!("{}.user.v1.>", self.subject_root),
        ]
    }

    /// Where the consumer `durable` puts what it gave up on: `<root>.dlq.<durable>`.
    pub fn dead_letter_subject(&self, durable: &str) -> String {
        format!("{}.dlq.{durable}", self.subject_root)
    }

    /// The dead-letter stream's subject: `<root>.dlq.>`.
    pub fn dead_letter_subjects(&self) -> String {
        format!("{}.dlq.>", self.subject_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_built_from_the_root() {
        let names = Names {
            subject_root: "t1".to_owned(),
            ..Names::default()
        };
        assert_eq!(
            names.call_subject("CallScheduled", "c-1"),
            "t1.call.v1.CallScheduled.c-1"
        );
        assert_eq!(names.call_subjects(), "t1.call.v1.>");
        assert_eq!(
            names.call_event_filter("CallReady"),
            "t1.call.v1.CallReady.*"
        );
        assert_eq!(
            names.contract_subject("ContractUpdated", "k"),
            "t1.contract.v1.ContractUpdated.k"
        );
        assert_eq!(
            names.user_subject("ParticipantUpdated", "u"),
            "t1.user.v1.ParticipantUpdated.u"
        );
        assert_eq!(
            names.platform_subjects(),
            ["t1.contract.v1.>", "t1.user.v1.>"]
        );
        assert_eq!(names.dead_letter_subject("timers"), "t1.dlq.timers");
        assert_eq!(names.dead_letter_subjects(), "t1.dlq.>");
    }
}
