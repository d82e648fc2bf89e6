//! W3C trace context across every hop that is not a function call: gRPC
//! metadata, the metadata stored beside each event, NATS headers, the
//! delivery rows of the notification service, the timers table.
//!
//! Always W3C `traceparent`/`tracestate` (DESIGN.md rule 6), whatever
//! `OTEL_PROPAGATORS` says: the chat service and our own stored events rely
//! on exactly these two keys.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A span context as the two W3C strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    /// Empty when the trace carries no vendor state.
    pub tracestate: String,
}

/// The current span's context as W3C strings; `None` outside any span or
/// when no OpenTelemetry layer is installed.
pub fn current() -> Option<TraceHeaders> {
    of_span(&tracing::Span::current())
}

/// `span`'s context as W3C strings.
pub fn of_span(span: &tracing::Span) -> Option<TraceHeaders> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.traceparent.map(|traceparent| TraceHeaders {
        traceparent,
        tracestate: carrier.tracestate.unwrap_or_default(),
    })
}

/// Writes the current span's context through `set` (for gRPC metadata and
/// NATS headers, whose types differ).
pub fn inject(mut set: impl FnMut(&'static str, String)) {
    if let Some(headers) = current() {
        set(TRACEPARENT, headers.traceparent);
        if !headers.tracestate.is_empty() {
            set(TRACESTATE, headers.tracestate);
        }
    }
}

/// The remote span context that `traceparent` names, if it is valid.
pub fn remote(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    let traceparent = traceparent.filter(|t| !t.is_empty())?;
    let context = TraceContextPropagator::new().extract(&Pair {
        traceparent,
        tracestate: tracestate.unwrap_or_default(),
    });
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Makes `span` a child of the remote context in `traceparent` (no-op
/// when it is missing or malformed: the span then starts a trace).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(remote) = remote(traceparent, tracestate) {
        // Fails only when the span was already started or is disabled;
        // either way it keeps its own parent, which is still a trace.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Makes `span` a child of the context read through `get` (an extractor
/// over any header map).
pub fn set_parent_from(span: &tracing::Span, get: impl Fn(&str) -> Option<String>) {
    let traceparent = get(TRACEPARENT);
    let tracestate = get(TRACESTATE);
    set_parent(span, traceparent.as_deref(), tracestate.as_deref());
}

/// Starts `span` as the root of a new trace that links to `traceparent`'s
/// (timer-fired work: its cause is a booking long ago, not a parent).
pub fn new_root_linked(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    // An empty context as parent: without it the span would join whatever
    // trace the caller happens to be in.
    let _ = span.set_parent(opentelemetry::Context::new());
    if let Some(remote) = remote(traceparent, tracestate) {
        span.add_link(remote);
    }
}

#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

struct Pair<'a> {
    traceparent: &'a str,
    tracestate: &'a str,
}

impl Extractor for Pair<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => Some(self.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_or_missing_traceparents_name_no_context() {
        assert!(remote(None, None).is_none());
        assert!(remote(Some(""), None).is_none());
        assert!(remote(Some("not a traceparent"), None).is_none());
        // All-zero trace id is invalid by the W3C spec.
        assert!(
            remote(
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                None
            )
            .is_none()
        );
    }

    #[test]
    fn a_valid_traceparent_is_read_with_its_state() {
        let context = remote(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("vendor=1"),
        )
        .expect("valid");
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled());
        assert!(context.is_remote());
        assert_eq!(context.trace_state().header(), "vendor=1");
    }
}
