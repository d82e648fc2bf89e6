//! Traces, logs and metrics, set up the same way in every process.
//!
//! [`init`] installs one `tracing` subscriber with two layers:
//!
//! - **logs** on stderr, `SKILEEZ_LOG_FORMAT=text` (default) or `json`,
//!   filtered by `RUST_LOG`; every line inside a span carries the trace and
//!   span ids, so a log line leads to its trace and back;
//! - **traces** through `tracing-opentelemetry`: W3C ids for every span,
//!   exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is
//!   not `true`; the exporter itself reads the other standard `OTEL_*`
//!   variables (headers, timeout, compression), the SDK reads the sampler
//!   (`OTEL_TRACES_SAMPLER`) and the resource (`OTEL_SERVICE_NAME`,
//!   `OTEL_RESOURCE_ATTRIBUTES`). Without an endpoint spans still get ids,
//!   so the context still flows through events and logs; nothing leaves.
//!
//! [`propagation`] carries the context across the hops that are not
//! function calls; [`grpc`] is the server layer; [`admin`] the metrics and
//! probe endpoints.

pub mod admin;
pub mod grpc;
pub mod health;
mod logs;
pub mod process;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};

pub use crate::logs::LogFormat;

/// The variable choosing the log format.
pub const LOG_FORMAT_VAR: &str = "SKILEEZ_LOG_FORMAT";
/// What logs show when `RUST_LOG` says nothing: ours at info, the chatty
/// transport crates only when they warn.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,h2=warn,tower=warn,hyper=warn,async_nats=warn";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}={value:?} is not valid: expected {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),
}

/// What [`init`] reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub default_service_name: String,
    pub log_format: LogFormat,
    /// Whether spans are exported over OTLP.
    pub export: bool,
}

impl Settings {
    /// Reads the settings through `lookup` (the process environment in
    /// [`init`]).
    pub fn from_lookup(
        default_service_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let log_format = match lookup(LOG_FORMAT_VAR) {
            None => LogFormat::Text,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "" | "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(TelemetryError::Invalid {
                        var: LOG_FORMAT_VAR,
                        value,
                        expected: "text or json",
                    });
                }
            },
        };
        let disabled = match lookup("OTEL_SDK_DISABLED") {
            None => false,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "" | "false" => false,
                _ => {
                    return Err(TelemetryError::Invalid {
                        var: "OTEL_SDK_DISABLED",
                        value,
                        expected: "true or false",
                    });
                }
            },
        };
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|var| lookup(var).is_some_and(|v| !v.trim().is_empty()));
        Ok(Settings {
            default_service_name: default_service_name.to_owned(),
            log_format,
            export: endpoint && !disabled,
        })
    }
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes the spans not
/// yet exported.
#[must_use = "keep it until the end of main and call shutdown, or the last spans are lost"]
pub struct Telemetry {
    provider: SdkTracerProvider,
    settings: Settings,
}

impl Telemetry {
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Exports what is still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The batch processor's thread blocks until its export finishes,
        // which needs the runtime's other workers: keep this one free.
        let flushed = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider.shutdown()
        })
        .await;
        if let Ok(Err(error)) = flushed {
            eprintln!("telemetry: shutting the tracer provider down: {error}");
        }
    }
}

/// Installs logs and traces for the process from the environment. Call once,
/// inside the Tokio runtime (the OTLP exporter's channel lives on it).
pub fn init(default_service_name: &str) -> Result<Telemetry, TelemetryError> {
    let settings = Settings::from_lookup(default_service_name, |var| std::env::var(var).ok())?;
    let log_filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(DEFAULT_LOG_FILTER))
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;

    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(settings.default_service_name.clone());
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    if settings.export {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    // Spans follow their own filter: RUST_LOG=warn quiets the logs, not the
    // traces. The transport crates' own spans (one per HTTP/2 frame) are
    // noise in a trace.
    let span_filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("sqlx", LevelFilter::OFF)
        .with_target("async_nats", LevelFilter::OFF);
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("skileez"))
        .with_filter(span_filter);
    let logs = logs::layer(settings.log_format).with_filter(log_filter);
    Registry::default()
        .with(traces)
        .with(logs)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(Telemetry { provider, settings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, TelemetryError> {
        Settings::from_lookup("svc", |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn export_needs_an_endpoint_and_is_off_when_disabled() {
        assert!(!settings(&[]).unwrap().export);
        assert!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")])
                .unwrap()
                .export
        );
        assert!(
            settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x:4317")])
                .unwrap()
                .export
        );
        assert!(
            !settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .unwrap()
            .export
        );
        assert!(
            !settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])
                .unwrap()
                .export
        );
    }

    #[test]
    fn log_formats_are_text_or_json_and_anything_else_names_the_variable() {
        assert_eq!(settings(&[]).unwrap().log_format, LogFormat::Text);
        assert_eq!(
            settings(&[(LOG_FORMAT_VAR, "JSON")]).unwrap().log_format,
            LogFormat::Json
        );
        let error = settings(&[(LOG_FORMAT_VAR, "yaml")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "SKILEEZ_LOG_FORMAT=\"yaml\" is not valid: expected text or json"
        );
        assert!(settings(&[("OTEL_SDK_DISABLED", "maybe")]).is_err());
    }
}
