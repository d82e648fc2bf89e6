//! Observability end to end, with each service as its own process
//! (`skileez serve …`) exporting to a real OTLP receiver in a process of its
//! own (`deploy/local/otlp_sink.py`: the official OTLP protos over gRPC):
//!
//! - one booking is one trace holding spans of scheduling (the RPC, the
//!   event store append, the relay's publish), of notifications (the
//!   consume, the SMTP hand-off) and of timers (the consume), the consumer
//!   spans children of the publish span;
//! - the timer-fired `ready` starts a new trace that links to the booking's
//!   and holds scheduling's `MarkCallReady`;
//! - after a scripted lifecycle, each service's `/metrics` shows the
//!   counters moved by exactly what happened; `/livez` and `/readyz` answer.

#[path = "../../notifications/tests/support/smtp.rs"]
mod smtp;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DurationRound, Utc};
use serde_json::Value;
use skileez_testkit::{TestDatabase, nats::TestNats};
use support::*;

const WAIT: Duration = Duration::from_secs(40);

/// The OTLP receiver: its address and every span it printed so far.
struct OtlpSink {
    child: Child,
    _stdin: ChildStdin,
    endpoint: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl OtlpSink {
    fn start() -> OtlpSink {
        let python = std::env::var("SKILEEZ_OTLP_PYTHON")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| {
                let data = std::env::var("XDG_DATA_HOME").unwrap_or_else(|_| {
                    format!("{}/.local/share", std::env::var("HOME").unwrap_or_default())
                });
                format!("{data}/skileez/otlp-venv/bin/python")
            });
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/local/otlp_sink.py"
        );
        let mut child = Command::new(&python)
            .args([script, "--listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} (deploy/local/deps.sh installs it): {e}")
            });
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a line").expect("utf-8");
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let collected = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let span: Value = serde_json::from_str(&line).expect("a JSON span");
                collected.lock().unwrap().push(span);
            }
        });
        OtlpSink {
            child,
            _stdin: stdin,
            endpoint: format!("http://{addr}"),
            spans,
        }
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `found` picks something out of the spans received.
    async fn wait_for<T>(&self, what: &str, found: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = found(&self.spans()) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} among the spans received:\n{}",
                summary(&self.spans())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {} trace={} span={} parent={}",
                s["service"],
                s["kind"],
                s["name"],
                s["trace_id"],
                s["span_id"],
                s["parent_span_id"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// The samples of a Prometheus text page: `name{sorted labels}` → value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .collect();
                labels.sort_unstable();
                (name, labels.join(","))
            }
            None => (series, String::new()),
        };
        samples.insert(
            format!("{name}{{{labels}}}"),
            value.parse().expect("a number"),
        );
    }
    samples
}

fn counters_named(samples: &BTreeMap<String, f64>, prefix: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn expected(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_booking_is_one_trace_across_the_services_and_the_metrics_count_what_happened() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let smtp = smtp::TestSmtp::start().await;
    let sink = tokio::task::spawn_blocking(OtlpSink::start)
        .await
        .expect("sink");

    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url()),
        ("NATS_URL", nats.url()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("SKILEEZ_SMTP_URL", smtp.url()),
        ("SKILEEZ_DELIVERY_POLL", "200ms".to_owned()),
        ("SKILEEZ_MIN_NOTICE", "1s".to_owned()),
        ("SKILEEZ_START_GRANULARITY", "1s".to_owned()),
        ("SKILEEZ_READY_LEAD", "3s".to_owned()),
        ("SKILEEZ_MISSED_AFTER", "10m".to_owned()),
        ("SKILEEZ_OVERRUN_GRACE", "10m".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    ok(run(skileez()
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))));
    let (scheduling, printed) = serve("scheduling", &env);
    let scheduling_url = format!(
        "http://{}",
        printed
            .iter()
            .find_map(|l| l.strip_prefix("scheduling service on "))
            .expect("the gRPC address")
    );
    let mut timers_env = env.clone();
    timers_env.push(("SKILEEZ_SCHEDULING_URL".into(), scheduling_url.clone()));
    let (timers, _) = serve("timers", &timers_env);
    let (notifications, _) = serve("notifications", &env);

    let cli = |token: &str| {
        let mut command = skileez();
        command
            .env("SKILEEZ_SERVER", &scheduling_url)
            .env("SKILEEZ_TOKEN", token);
        command
    };
    let admin = token("admin-1", "admin");
    for (id, name) in [("ada", "Ada"), ("grace", "Grace"), ("linus", "Linus")] {
        ok(run(cli(&admin).args([
            "directory",
            "participant",
            id,
            "--name",
            name,
            "--email",
            &format!("{id}@example.com"),
            "--zone",
            "UTC",
        ])));
    }
    let book = |coach: &str, at: chrono::DateTime<Utc>| -> String {
        let out = ok(run(cli(&token("ada", "student")).args([
            "call",
            "schedule",
            "--student",
            "ada",
            "--coach",
            coach,
            "--at",
            &at.to_rfc3339(),
            "--output",
            "json",
        ])));
        let call: Value = serde_json::from_str(&out).expect("json");
        call["call"]["card"]["callId"]
            .as_str()
            .unwrap_or_else(|| panic!("no call id in {out}"))
            .to_owned()
    };
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    // A: ready in a few seconds, joined by both, ended. B: cancelled (late:
    // it is well inside 24 hours).
    let a = book("grace", now + chrono::Duration::seconds(8));
    let b = book("linus", now + chrono::Duration::minutes(30));
    ok(run(
        cli(&token("ada", "student")).args(["call", "cancel", &b, "--reason", "ill"])
    ));

    // The booking's trace: found by the relay's publish of A's booking.
    let publish = sink
        .wait_for("publish of A's CallScheduled", |spans| {
            spans
                .iter()
                .find(|s| {
                    s["name"] == "publish CALL_EVENTS"
                        && attr(s, "skileez.call_id") == a.as_str()
                        && attr(s, "messaging.destination.name")
                            .as_str()
                            .is_some_and(|d| d.contains(".CallScheduled."))
                })
                .cloned()
        })
        .await;
    assert_eq!(publish["service"], "skileez-scheduling");
    assert_eq!(publish["kind"], "PRODUCER");
    let trace = publish["trace_id"].as_str().unwrap().to_owned();
    let in_trace = |spans: &[Value], service: &str, name: &str| -> Vec<Value> {
        spans
            .iter()
            .filter(|s| {
                s["trace_id"] == trace.as_str() && s["service"] == service && s["name"] == name
            })
            .cloned()
            .collect()
    };
    let rpc = sink
        .wait_for("the ScheduleFreeConsultation server span", |spans| {
            in_trace(
                spans,
                "skileez-scheduling",
                "skileez.scheduling.v1.SchedulingService/ScheduleFreeConsultation",
            )
            .into_iter()
            .next()
        })
        .await;
    assert_eq!(rpc["kind"], "SERVER");
    assert_eq!(attr(&rpc, "rpc.system"), "grpc");
    assert_eq!(attr(&rpc, "rpc.method"), "ScheduleFreeConsultation");
    assert_eq!(attr(&rpc, "rpc.grpc.status_code"), 0);
    let append = sink
        .wait_for("the event store append", |spans| {
            in_trace(spans, "skileez-scheduling", "INSERT events")
                .into_iter()
                .next()
        })
        .await;
    assert_eq!(attr(&append, "db.system.name"), "postgresql");
    for consumer in ["skileez-timers", "skileez-notifications"] {
        let process = sink
            .wait_for(&format!("{consumer}'s consume"), |spans| {
                in_trace(spans, consumer, "process CALL_EVENTS")
                    .into_iter()
                    .find(|s| s["parent_span_id"] == publish["span_id"])
            })
            .await;
        assert_eq!(process["kind"], "CONSUMER", "{process}");
        assert_eq!(attr(&process, "messaging.system"), "nats");
    }
    let smtp_send = sink
        .wait_for("the SMTP hand-off of A's confirmation", |spans| {
            in_trace(spans, "skileez-notifications", "smtp send")
                .into_iter()
                .find(|s| attr(s, "outcome") == "sent")
        })
        .await;
    assert_eq!(attr(&smtp_send, "skileez.call_id"), a.as_str());

    // Ready fires in a trace of its own, linked to the booking's.
    let fire = sink
        .wait_for("the ready timer's span", |spans| {
            spans
                .iter()
                .find(|s| s["name"] == "fire ready" && attr(s, "skileez.call_id") == a.as_str())
                .cloned()
        })
        .await;
    assert_eq!(fire["service"], "skileez-timers");
    assert_ne!(fire["trace_id"], trace.as_str(), "a new trace");
    assert_eq!(fire["parent_span_id"], "", "a root span");
    assert!(
        fire["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["trace_id"] == trace.as_str()),
        "no link to the booking's trace: {fire}"
    );
    let fire_trace = fire["trace_id"].clone();
    sink.wait_for("MarkCallReady in the timer's trace", |spans| {
        spans
            .iter()
            .find(|s| {
                s["trace_id"] == fire_trace
                    && s["service"] == "skileez-scheduling"
                    && s["name"] == "skileez.scheduling.v1.CallTimerService/MarkCallReady"
            })
            .cloned()
    })
    .await;

    // The rest of A's life: both join, the coach ends it.
    ok(run(cli(&token("ada", "student")).args(["call", "join", &a])));
    ok(run(cli(&token("grace", "coach")).args(["call", "join", &a])));
    ok(run(cli(&token("grace", "coach")).args(["call", "end", &a])));
    // Every e-mail out: 2 confirmations each for A and B, 2 cancellation
    // notices for B, 2 summaries for A.
    smtp.wait_for(8, WAIT).await;

    let scrape = |service: &Service| samples(&http_get(&service.admin, "/metrics").1);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut found = HashMap::new();
    loop {
        let scheduling_metrics = scrape(&scheduling);
        let timers_metrics = scrape(&timers);
        let notifications_metrics = scrape(&notifications);
        found.insert(
            "scheduling",
            counters_named(&scheduling_metrics, "skileez_call"),
        );
        found.insert("rpc", {
            let mut rpc = counters_named(
                &scheduling_metrics,
                "skileez_rpc_server_duration_seconds_count",
            );
            rpc.retain(|k, _| {
                k.contains("rpc_service=\"skileez.scheduling.v1.SchedulingService\"")
            });
            rpc
        });
        found.insert(
            "timers",
            counters_named(&timers_metrics, "skileez_timers_fired_total"),
        );
        found.insert("notifications", {
            let mut email = counters_named(
                &notifications_metrics,
                "skileez_notification_deliveries_total",
            );
            email.retain(|k, _| k.contains("channel=\"email\""));
            email
        });
        let want = HashMap::from([
            (
                "scheduling",
                expected(&[
                    ("skileez_call_joins_total{role=\"coach\"}", 1.0),
                    ("skileez_call_joins_total{role=\"student\"}", 1.0),
                    (
                        "skileez_calls_booked_total{kind=\"free_consultation\"}",
                        2.0,
                    ),
                    (
                        "skileez_calls_cancelled_total{kind=\"free_consultation\",late=\"true\"}",
                        1.0,
                    ),
                    (
                        "skileez_calls_completed_total{attendance=\"both\",kind=\"free_consultation\"}",
                        1.0,
                    ),
                ]),
            ),
            (
                "rpc",
                expected(&[
                    (
                        "skileez_rpc_server_duration_seconds_count{rpc_grpc_status_code=\"0\",rpc_method=\"CancelCall\",rpc_service=\"skileez.scheduling.v1.SchedulingService\"}",
                        1.0,
                    ),
                    (
                        "skileez_rpc_server_duration_seconds_count{rpc_grpc_status_code=\"0\",rpc_method=\"EndCall\",rpc_service=\"skileez.scheduling.v1.SchedulingService\"}",
                        1.0,
                    ),
                    (
                        "skileez_rpc_server_duration_seconds_count{rpc_grpc_status_code=\"0\",rpc_method=\"JoinCall\",rpc_service=\"skileez.scheduling.v1.SchedulingService\"}",
                        2.0,
                    ),
                    (
                        "skileez_rpc_server_duration_seconds_count{rpc_grpc_status_code=\"0\",rpc_method=\"ScheduleFreeConsultation\",rpc_service=\"skileez.scheduling.v1.SchedulingService\"}",
                        2.0,
                    ),
                ]),
            ),
            (
                "timers",
                expected(&[(
                    "skileez_timers_fired_total{kind=\"ready\",outcome=\"applied\"}",
                    1.0,
                )]),
            ),
            (
                "notifications",
                // Counted when queued (pending) and again when handed off.
                expected(&[
                    (
                        "skileez_notification_deliveries_total{channel=\"email\",kind=\"booked\",outcome=\"pending\"}",
                        4.0,
                    ),
                    (
                        "skileez_notification_deliveries_total{channel=\"email\",kind=\"booked\",outcome=\"sent\"}",
                        4.0,
                    ),
                    (
                        "skileez_notification_deliveries_total{channel=\"email\",kind=\"cancelled\",outcome=\"pending\"}",
                        2.0,
                    ),
                    (
                        "skileez_notification_deliveries_total{channel=\"email\",kind=\"completed\",outcome=\"pending\"}",
                        2.0,
                    ),
                    (
                        "skileez_notification_deliveries_total{channel=\"email\",kind=\"cancelled\",outcome=\"sent\"}",
                        2.0,
                    ),
                    (
                        "skileez_notification_deliveries_total{channel=\"email\",kind=\"completed\",outcome=\"sent\"}",
                        2.0,
                    ),
                ]),
            ),
        ]);
        if found == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched.\nfound: {found:#?}\nwanted: {want:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    for service in [&scheduling, &timers, &notifications] {
        assert_eq!(http_get(&service.admin, "/livez").0, 200);
        let (status, body) = http_get(&service.admin, "/readyz");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("/postgres: ok") && body.contains("/nats: ok"),
            "{body}"
        );
    }
}
