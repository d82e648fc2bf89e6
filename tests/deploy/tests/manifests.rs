//! The deployment files checked for what running Skileez in production
//! needs: every service probed on its admin port, bounded by resource
//! limits, given its secrets only by reference; a disruption budget for
//! every Deployment and StatefulSet; a durable 3-node JetStream; the
//! migration as its own step; a dashboard that uses only metrics the
//! services export.
//!
//! Each check collects every problem it finds, so one run names them all.
//! The `*_is_caught` tests break a copy of the real files in one place and
//! expect the check to notice: a check that cannot fail checks nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::{Value, json};

/// The three services, as compose services and as Kubernetes Deployments.
const SERVICES: [&str; 3] = ["scheduling", "timers", "notifications"];

/// Every service serves /metrics, /livez and /readyz here (`SKILEEZ_METRICS_ADDR`).
const ADMIN_PORT: u64 = 9090;

/// The metrics the services export (issue 7; docs/operations.md explains each).
const METRICS: &[&str] = &[
    "skileez_calls_booked_total",
    "skileez_calls_rescheduled_total",
    "skileez_calls_cancelled_total",
    "skileez_calls_completed_total",
    "skileez_calls_missed_total",
    "skileez_call_joins_total",
    "skileez_rpc_server_duration_seconds",
    "skileez_relay_lag_events",
    "skileez_relay_lag_seconds",
    "skileez_relay_published_total",
    "skileez_relay_errors_total",
    "skileez_relay_leader",
    "skileez_consumer_pending",
    "skileez_consumer_dead_letters_total",
    "skileez_timer_lateness_seconds",
    "skileez_timers_pending",
    "skileez_timer_oldest_overdue_seconds",
    "skileez_timers_fired_total",
    "skileez_notification_deliveries_total",
    "skileez_smtp_send_seconds",
    "skileez_ws_connections",
    "skileez_ws_closed_total",
    "skileez_notifications_purged_total",
];

/// The histograms among [`METRICS`]: PromQL reads them through these suffixes.
const HISTOGRAMS: &[&str] = &[
    "skileez_rpc_server_duration_seconds",
    "skileez_timer_lateness_seconds",
    "skileez_smtp_send_seconds",
];

// ---------------------------------------------------------------------------
// Loading

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every non-empty document of a YAML stream, merge keys (`<<`) applied, as
/// JSON values (every key in these files is a string).
fn yaml_documents(text: &str, name: &str) -> Vec<Value> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let mut value = serde_norway::Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
        value
            .apply_merge()
            .unwrap_or_else(|e| panic!("{name}: bad merge key: {e}"));
        if value.is_null() {
            continue;
        }
        documents.push(
            serde_json::to_value(&value)
                .unwrap_or_else(|e| panic!("{name}: not representable as JSON: {e}")),
        );
    }
    documents
}

fn compose() -> Value {
    let mut documents = yaml_documents(&read("deploy/compose/compose.yaml"), "compose.yaml");
    assert_eq!(documents.len(), 1, "compose.yaml holds one document");
    documents.remove(0)
}

/// A Kubernetes object and the file it came from.
#[derive(Clone, Debug)]
struct Object {
    file: String,
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    fn what(&self) -> String {
        format!("{} {} ({})", self.kind(), self.name(), self.file)
    }
}

fn k8s_files() -> Vec<String> {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

/// Every object of every manifest in deploy/k8s except the kustomization.
fn k8s_objects() -> Vec<Object> {
    let mut objects = Vec::new();
    for file in k8s_files() {
        if file == "kustomization.yaml" {
            continue;
        }
        for value in yaml_documents(&read(&format!("deploy/k8s/{file}")), &file) {
            objects.push(Object {
                file: file.clone(),
                value,
            });
        }
    }
    objects
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/skileez.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/skileez.json is not valid JSON: {e}"))
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

fn assert_caught(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem mentioning {expected:?}, got {problems:#?}"
    );
}

// ---------------------------------------------------------------------------
// Rules shared by compose and Kubernetes

/// Names that announce a secret. A variable with such a name may only name a
/// file (`*_FILE`), never hold the value.
fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "PRIVATE",
    ]
    .iter()
    .any(|word| upper.contains(word))
}

/// `scheme://user:password@host…`, also inside a comma-separated list.
fn url_with_password(value: &str) -> bool {
    value.split(',').any(|part| {
        let Some((_, rest)) = part.trim().split_once("://") else {
            return false;
        };
        let authority = rest.split('/').next().unwrap_or("");
        let Some((userinfo, _)) = authority.rsplit_once('@') else {
            return false;
        };
        userinfo
            .split_once(':')
            .is_some_and(|(_, password)| !password.is_empty())
    })
}

/// Problems with one environment variable given as a literal value.
/// `secret_file` says whether a path is a file of a mounted secret.
fn literal_env_problems(
    owner: &str,
    name: &str,
    value: &str,
    secret_file: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    if name.ends_with("_FILE") {
        if !secret_file(value) {
            problems.push(format!(
                "{owner}: {name}={value} is not a file of a mounted secret"
            ));
        }
    } else if looks_secret(name) {
        problems.push(format!(
            "{owner}: {name} holds a literal value; give it as {name}_FILE naming a mounted secret"
        ));
    }
    if url_with_password(value) {
        problems.push(format!("{owner}: {name} holds a URL with a password"));
    }
    problems
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// compose

/// A compose service's environment, from the map or the list form.
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item.to_owned(), String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Where compose mounts a service's secrets: `/run/secrets/<name>` or the
/// long syntax's `target`, for secrets declared at the top level from a
/// file, the host environment or an external store.
fn compose_secret_paths(compose: &Value, service: &Value) -> (BTreeSet<String>, Vec<String>) {
    let mut paths = BTreeSet::new();
    let mut problems = Vec::new();
    for entry in service["secrets"].as_array().into_iter().flatten() {
        let (source, target) = match entry {
            Value::String(name) => (name.clone(), name.clone()),
            Value::Object(long) => {
                let source = long["source"].as_str().unwrap_or("").to_owned();
                let target = long["target"].as_str().unwrap_or(&source).to_owned();
                (source, target)
            }
            _ => continue,
        };
        let declared = &compose["secrets"][&source];
        if !["file", "environment", "external"]
            .iter()
            .any(|k| !declared[*k].is_null())
        {
            problems.push(format!(
                "secret {source} is not declared at the top level with file, environment or external"
            ));
        }
        paths.insert(if target.starts_with('/') {
            target
        } else {
            format!("/run/secrets/{target}")
        });
    }
    (paths, problems)
}

fn check_compose(compose: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(services) = compose["services"].as_object() else {
        return vec!["compose.yaml has no services".to_owned()];
    };

    for (name, service) in services {
        let limits = &service["deploy"]["resources"]["limits"];
        for key in ["cpus", "memory"] {
            if limits[key].is_null() {
                problems.push(format!(
                    "compose service {name}: no deploy.resources.limits.{key}"
                ));
            }
        }
        let (paths, secret_problems) = compose_secret_paths(compose, service);
        problems.extend(
            secret_problems
                .into_iter()
                .map(|p| format!("compose service {name}: {p}")),
        );
        for (var, value) in compose_env(service) {
            problems.extend(literal_env_problems(
                &format!("compose service {name}"),
                &var,
                &value,
                &|path| paths.contains(path),
            ));
        }
    }

    for name in SERVICES {
        let Some(service) = services.get(name) else {
            problems.push(format!("compose service {name} is missing"));
            continue;
        };
        let health = &service["healthcheck"];
        let test = text(&health["test"]);
        let on_admin_port = [
            format!(":{ADMIN_PORT}/readyz"),
            format!(":{ADMIN_PORT}/livez"),
        ]
        .iter()
        .any(|path| test.contains(path.as_str()));
        if health["disable"] == json!(true) || !on_admin_port {
            problems.push(format!(
                "compose service {name}: no healthcheck on :{ADMIN_PORT}/readyz or /livez (test: {test:?})"
            ));
        }
        let env = compose_env(service);
        if !env
            .get("SKILEEZ_METRICS_ADDR")
            .is_some_and(|addr| addr.ends_with(&format!(":{ADMIN_PORT}")))
        {
            problems.push(format!(
                "compose service {name}: SKILEEZ_METRICS_ADDR does not serve the admin port {ADMIN_PORT}"
            ));
        }
        if env.get("SKILEEZ_STREAM_REPLICAS").map(String::as_str) != Some("3") {
            problems.push(format!(
                "compose service {name}: SKILEEZ_STREAM_REPLICAS is not 3"
            ));
        }
        if service["depends_on"]["migrate"]["condition"] != json!("service_completed_successfully")
        {
            problems.push(format!(
                "compose service {name}: does not wait for the migrate service to complete"
            ));
        }
    }

    match services.get("migrate") {
        Some(migrate) if text(&migrate["command"]).contains("migrate") => {}
        _ => problems.push("compose: no migrate service running `skileez migrate`".to_owned()),
    }

    let nats: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("nats:")))
        .collect();
    if nats.len() != 3 {
        problems.push(format!(
            "compose: {} NATS services, a JetStream cluster needs 3",
            nats.len()
        ));
    }
    let mut data_volumes = BTreeSet::new();
    for (name, service) in &nats {
        let image = service["image"].as_str().unwrap_or("");
        if !image_at_least(image, (2, 10)) {
            problems.push(format!(
                "compose service {name}: {image} is older than 2.10"
            ));
        }
        let mut config_checked = false;
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let Some(spec) = volume.as_str() else {
                continue;
            };
            let source = spec.split(':').next().unwrap_or("");
            if source.ends_with(".conf") {
                let path = Path::new("deploy/compose").join(source);
                let config = read(&path.to_string_lossy());
                problems.extend(
                    check_nats_conf(&config, 3)
                        .into_iter()
                        .map(|p| format!("compose service {name} ({source}): {p}")),
                );
                config_checked = true;
            } else if !source.starts_with('.') && !source.starts_with('/') {
                data_volumes.insert(source.to_owned());
            }
        }
        if !config_checked {
            problems.push(format!(
                "compose service {name}: no NATS config file from deploy/nats mounted"
            ));
        }
    }
    if data_volumes.len() != nats.len() {
        problems.push(format!(
            "compose: the NATS services need a JetStream volume each, found {data_volumes:?}"
        ));
    }
    problems
}

/// `nats:2.15-alpine` is at least (2, 10).
fn image_at_least(image: &str, minimum: (u64, u64)) -> bool {
    let tag = image.rsplit_once(':').map_or("", |(_, tag)| tag);
    let mut numbers = tag
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u64>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= minimum,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// NATS configuration

/// The text between the braces after `name`, or `None`.
fn conf_block<'a>(conf: &'a str, name: &str) -> Option<&'a str> {
    let mut search = 0;
    while let Some(found) = conf[search..].find(name) {
        let start = search + found;
        search = start + name.len();
        let before_ok = start == 0
            || !conf[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let rest = conf[search..].trim_start_matches([' ', '\t', ':', '=']);
        if before_ok && rest.starts_with('{') {
            let open = conf.len() - rest.len();
            let mut depth = 0;
            for (i, c) in conf[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(&conf[open + 1..open + i]);
                        }
                    }
                    _ => {}
                }
            }
            return None;
        }
    }
    None
}

/// The value of `key` in a block (`key: value`, `key = value`, `key value`).
fn conf_value<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    block.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(key)?;
        if !rest.starts_with([' ', '\t', ':', '=']) {
            return None;
        }
        Some(
            rest.trim_start_matches([' ', '\t', ':', '='])
                .trim()
                .trim_matches(['"', '\'']),
        )
    })
}

fn check_nats_conf(conf: &str, nodes: usize) -> Vec<String> {
    // `#` starts a comment; `//` does too, but only at the start of a line,
    // as route URLs contain it.
    let conf: String = conf
        .lines()
        .map(|line| {
            let line = line.split('#').next().unwrap_or("");
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut problems = Vec::new();
    match conf_block(&conf, "jetstream") {
        None => problems.push("no jetstream block".to_owned()),
        Some(jetstream) => {
            if conf_value(jetstream, "sync_interval") != Some("always") {
                problems.push("jetstream has no `sync_interval: always`".to_owned());
            }
            if conf_value(jetstream, "store_dir").is_none() {
                problems.push("jetstream has no store_dir".to_owned());
            }
        }
    }
    match conf_block(&conf, "cluster") {
        None => problems.push("no cluster block".to_owned()),
        Some(cluster) => {
            let routes = cluster.matches("nats-route://").count();
            if routes < nodes {
                problems.push(format!(
                    "cluster lists {routes} routes, expected the {nodes} nodes"
                ));
            }
        }
    }
    if conf_value(&conf, "server_name").is_none() {
        problems.push("no server_name (JetStream clusters need one per node)".to_owned());
    }
    problems
}

// ---------------------------------------------------------------------------
// Kubernetes

/// The pod template of a workload, if it is one.
fn pod_template(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
            Some(&object["spec"]["template"])
        }
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// A non-empty selector whose every label the pod carries.
fn selects(selector: &Value, pod_labels: &BTreeMap<String, String>) -> bool {
    let wanted = labels(selector);
    !wanted.is_empty() && wanted.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

/// The files of secrets mounted into a container: exact paths for secrets
/// with items, and directories (any file below) for whole secrets.
#[derive(Default)]
struct SecretFiles {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

impl SecretFiles {
    fn of(pod: &Value, container: &Value) -> SecretFiles {
        let mut found = SecretFiles::default();
        let volumes: BTreeMap<&str, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, v)))
            .collect();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(path), Some(volume)) = (
                mount["mountPath"].as_str(),
                mount["name"].as_str().and_then(|n| volumes.get(n)),
            ) else {
                continue;
            };
            let path = path.trim_end_matches('/');
            let sources: Vec<&Value> = if !volume["secret"].is_null() {
                vec![&volume["secret"]]
            } else {
                volume["projected"]["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| !s["secret"].is_null())
                    .map(|s| &s["secret"])
                    .collect()
            };
            for secret in sources {
                match secret["items"].as_array() {
                    Some(items) => {
                        for item in items {
                            if let Some(file) = item["path"].as_str() {
                                found.files.insert(format!("{path}/{file}"));
                            }
                        }
                    }
                    None => {
                        found.dirs.insert(format!("{path}/"));
                    }
                }
            }
        }
        found
    }

    fn contains(&self, path: &str) -> bool {
        self.files.contains(path) || self.dirs.iter().any(|dir| path.starts_with(dir.as_str()))
    }
}

/// A container's environment as the process sees it, for the literal
/// values: ConfigMaps of `envFrom` first, then `env`.
fn container_env(
    container: &Value,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
    owner: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            match config_maps.get(name) {
                Some(data) => env.extend(data.clone()),
                None => problems.push(format!(
                    "{owner}: envFrom ConfigMap {name} is not in deploy/k8s"
                )),
            }
        }
    }
    for entry in container["env"].as_array().into_iter().flatten() {
        let Some(name) = entry["name"].as_str() else {
            continue;
        };
        if let Some(value) = scalar(&entry["value"]) {
            env.insert(name.to_owned(), value);
        } else if !entry["valueFrom"]["configMapKeyRef"].is_null() && looks_secret(name) {
            problems.push(format!(
                "{owner}: {name} comes from a ConfigMap; secrets belong in a Secret (secretKeyRef)"
            ));
        }
    }
    env
}

fn check_container(
    owner: &str,
    pod: &Value,
    container: &Value,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let resources = &container["resources"];
    for (kind, key) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ] {
        if resources[kind][key].is_null() {
            problems.push(format!("{owner}: no resources.{kind}.{key}"));
        }
    }
    let security = &container["securityContext"];
    if security["readOnlyRootFilesystem"] != json!(true) {
        problems.push(format!("{owner}: root filesystem is not read-only"));
    }
    if security["allowPrivilegeEscalation"] != json!(false) {
        problems.push(format!("{owner}: allowPrivilegeEscalation is not false"));
    }
    if security["runAsNonRoot"] != json!(true)
        && pod["securityContext"]["runAsNonRoot"] != json!(true)
    {
        problems.push(format!("{owner}: runAsNonRoot is not set"));
    }
    let secrets = SecretFiles::of(pod, container);
    let env = container_env(container, config_maps, owner, &mut problems);
    for (name, value) in &env {
        problems.extend(literal_env_problems(owner, name, value, &|path| {
            secrets.contains(path)
        }));
    }
    problems
}

/// The port number an httpGet probe reaches, resolving a named port.
fn probe_port(container: &Value, probe: &Value) -> Option<u64> {
    let port = &probe["httpGet"]["port"];
    if let Some(number) = port.as_u64() {
        return Some(number);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))?["containerPort"]
        .as_u64()
}

fn check_probe(owner: &str, container: &Value, kind: &str, path: &str) -> Option<String> {
    let probe = &container[kind];
    let actual_path = probe["httpGet"]["path"].as_str();
    let port = probe_port(container, probe);
    if actual_path == Some(path) && port == Some(ADMIN_PORT) {
        None
    } else {
        Some(format!(
            "{owner}: {kind} is not an httpGet of {path} on the admin port {ADMIN_PORT} (path {actual_path:?}, port {port:?})"
        ))
    }
}

fn check_k8s(objects: &[Object]) -> Vec<String> {
    let mut problems = Vec::new();
    for object in objects {
        if object.kind().is_empty() || object.name().is_empty() {
            problems.push(format!(
                "{}: an object without kind or metadata.name",
                object.file
            ));
        }
    }
    let config_maps: BTreeMap<String, BTreeMap<String, String>> = objects
        .iter()
        .filter(|o| o.kind() == "ConfigMap")
        .map(|o| (o.name().to_owned(), labels(&o.value["data"])))
        .collect();

    // ConfigMaps hold no secrets, whoever reads them.
    for object in objects.iter().filter(|o| o.kind() == "ConfigMap") {
        for (key, value) in &config_maps[object.name()] {
            if key.ends_with("_FILE") {
                continue; // checked against each reader's mounts below
            }
            problems.extend(literal_env_problems(&object.what(), key, value, &|_| false));
        }
    }

    let workloads: Vec<(&Object, &Value)> = objects
        .iter()
        .filter_map(|o| Some((o, pod_template(&o.value)?)))
        .collect();
    for (object, template) in &workloads {
        let pod = &template["spec"];
        let containers: Vec<&Value> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod[*k].as_array().into_iter().flatten())
            .collect();
        if containers.is_empty() {
            problems.push(format!("{}: no containers", object.what()));
        }
        for container in containers {
            let owner = format!(
                "{} container {}",
                object.what(),
                container["name"].as_str().unwrap_or("?")
            );
            problems.extend(check_container(&owner, pod, container, &config_maps));
        }
        if matches!(object.kind(), "Deployment" | "StatefulSet") {
            let pod_labels = labels(&template["metadata"]["labels"]);
            if !selects(
                &object.value["spec"]["selector"]["matchLabels"],
                &pod_labels,
            ) {
                problems.push(format!(
                    "{}: selector.matchLabels does not select its own pods",
                    object.what()
                ));
            }
            problems.extend(check_disruption_budget(object, &pod_labels, objects));
        }
    }

    for name in SERVICES {
        let Some((object, template)) = workloads
            .iter()
            .find(|(o, _)| o.kind() == "Deployment" && o.name() == name)
        else {
            problems.push(format!("Deployment {name} is missing"));
            continue;
        };
        problems.extend(check_service_deployment(object, template, &config_maps));
    }

    problems.extend(check_nats_statefulset(objects, &workloads));

    let migrates = workloads.iter().any(|(o, template)| {
        o.kind() == "Job"
            && template["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    let command = format!("{} {}", text(&c["command"]), text(&c["args"]));
                    command.contains("skileez") && command.contains("migrate")
                })
    });
    if !migrates {
        problems.push("no Job running `skileez migrate`".to_owned());
    }

    // Every Service reaches pods, on ports they declare.
    for service in objects.iter().filter(|o| o.kind() == "Service") {
        let selector = &service.value["spec"]["selector"];
        let targets: Vec<&Value> = workloads
            .iter()
            .filter(|(_, t)| selects(selector, &labels(&t["metadata"]["labels"])))
            .map(|(_, t)| *t)
            .collect();
        if targets.is_empty() {
            problems.push(format!("{}: its selector matches no pods", service.what()));
            continue;
        }
        for port in service.value["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(named) = port["targetPort"].as_str() else {
                continue;
            };
            let declared = targets.iter().any(|t| {
                t["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                    .any(|p| p["name"].as_str() == Some(named))
            });
            if !declared {
                problems.push(format!(
                    "{}: targetPort {named} is no container port of its pods",
                    service.what()
                ));
            }
        }
    }
    problems
}

fn check_disruption_budget(
    workload: &Object,
    pod_labels: &BTreeMap<String, String>,
    objects: &[Object],
) -> Vec<String> {
    let budgets: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind() == "PodDisruptionBudget")
        .filter(|o| selects(&o.value["spec"]["selector"]["matchLabels"], pod_labels))
        .collect();
    let Some(budget) = budgets.first() else {
        return vec![format!(
            "{}: no PodDisruptionBudget selects its pods",
            workload.what()
        )];
    };
    let spec = &budget.value["spec"];
    let replicas = workload.value["spec"]["replicas"].as_u64().unwrap_or(1);
    let blocks_every_eviction = match (
        spec["maxUnavailable"].as_u64(),
        spec["minAvailable"].as_u64(),
    ) {
        (Some(max), _) => max == 0,
        (None, Some(min)) => min >= replicas,
        (None, None) => {
            return vec![format!(
                "{}: neither minAvailable nor maxUnavailable",
                budget.what()
            )];
        }
    };
    if blocks_every_eviction {
        vec![format!(
            "{}: allows no eviction of {} (nodes could never be drained)",
            budget.what(),
            workload.what()
        )]
    } else {
        Vec::new()
    }
}

fn check_service_deployment(
    object: &Object,
    template: &Value,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let name = object.name();
    let containers = template["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(container) = containers
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .or(containers.first())
    else {
        return vec![format!("{}: no container", object.what())];
    };
    let owner = object.what();
    problems.extend(check_probe(&owner, container, "livenessProbe", "/livez"));
    problems.extend(check_probe(&owner, container, "readinessProbe", "/readyz"));

    let env = container_env(container, config_maps, &owner, &mut Vec::new());
    if !env
        .get("SKILEEZ_METRICS_ADDR")
        .is_some_and(|addr| addr.ends_with(&format!(":{ADMIN_PORT}")))
    {
        problems.push(format!(
            "{owner}: SKILEEZ_METRICS_ADDR does not serve the admin port {ADMIN_PORT}"
        ));
    }
    if env.get("SKILEEZ_STREAM_REPLICAS").map(String::as_str) != Some("3") {
        problems.push(format!("{owner}: SKILEEZ_STREAM_REPLICAS is not 3"));
    }

    let annotations = labels(&template["metadata"]["annotations"]);
    let port = ADMIN_PORT.to_string();
    for (key, expected) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", port.as_str()),
        ("prometheus.io/path", "/metrics"),
    ] {
        if annotations.get(key).map(String::as_str) != Some(expected) {
            problems.push(format!("{owner}: pod annotation {key} is not {expected:?}"));
        }
    }
    problems
}

fn check_nats_statefulset(objects: &[Object], workloads: &[(&Object, &Value)]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((nats, template)) = workloads.iter().find(|(o, t)| {
        o.kind() == "StatefulSet"
            && t["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["image"].as_str().is_some_and(|i| i.starts_with("nats:")))
    }) else {
        return vec!["no NATS StatefulSet".to_owned()];
    };
    let spec = &nats.value["spec"];
    if spec["replicas"].as_u64() != Some(3) {
        problems.push(format!("{}: replicas is not 3", nats.what()));
    }
    let headless = spec["serviceName"].as_str().and_then(|name| {
        objects
            .iter()
            .find(|o| o.kind() == "Service" && o.name() == name)
    });
    match headless {
        Some(service) if service.value["spec"]["clusterIP"] == json!("None") => {}
        _ => problems.push(format!(
            "{}: serviceName is not a headless Service in deploy/k8s",
            nats.what()
        )),
    }
    let claims: BTreeSet<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    let pod = &template["spec"];
    let container = pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["image"].as_str().is_some_and(|i| i.starts_with("nats:")))
        .cloned()
        .unwrap_or_default();
    let image = container["image"].as_str().unwrap_or("");
    if !image_at_least(image, (2, 10)) {
        problems.push(format!("{}: {image} is older than 2.10", nats.what()));
    }
    let mounts: Vec<&Value> = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if !mounts
        .iter()
        .any(|m| m["name"].as_str().is_some_and(|n| claims.contains(n)))
    {
        problems.push(format!(
            "{}: JetStream's store is not on a volumeClaimTemplate (a volume per node)",
            nats.what()
        ));
    }
    // The configuration: a file of a mounted ConfigMap that the command names.
    let command = format!(
        "{} {}",
        text(&container["command"]),
        text(&container["args"])
    );
    let mut config_checked = false;
    for mount in &mounts {
        let Some(volume) = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
        else {
            continue;
        };
        let Some(map_name) = volume["configMap"]["name"].as_str() else {
            continue;
        };
        let Some(map) = objects
            .iter()
            .find(|o| o.kind() == "ConfigMap" && o.name() == map_name)
        else {
            problems.push(format!(
                "{}: ConfigMap {map_name} is not in deploy/k8s",
                nats.what()
            ));
            continue;
        };
        let dir = mount["mountPath"]
            .as_str()
            .unwrap_or("")
            .trim_end_matches('/');
        for (key, content) in labels(&map.value["data"]) {
            if command.contains(&format!("{dir}/{key}")) {
                problems.extend(
                    check_nats_conf(&content, 3)
                        .into_iter()
                        .map(|p| format!("{} {key}: {p}", map.what())),
                );
                config_checked = true;
            }
        }
    }
    if !config_checked {
        problems.push(format!(
            "{}: the config file its command names is not in a mounted ConfigMap",
            nats.what()
        ));
    }
    for kind in ["livenessProbe", "readinessProbe"] {
        if container[kind]["httpGet"]["path"]
            .as_str()
            .is_none_or(|p| !p.starts_with("/healthz"))
        {
            problems.push(format!("{}: no {kind} on /healthz", nats.what()));
        }
    }
    problems
}

fn check_kustomization(kustomization: &Value, files: &[String]) -> Vec<String> {
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let present: BTreeSet<String> = files
        .iter()
        .filter(|f| f.as_str() != "kustomization.yaml")
        .cloned()
        .collect();
    let mut problems = Vec::new();
    for missing in present.difference(&listed) {
        problems.push(format!("kustomization.yaml does not list {missing}"));
    }
    for unknown in listed.difference(&present) {
        problems.push(format!(
            "kustomization.yaml lists {unknown}, which is not in deploy/k8s"
        ));
    }
    problems
}

// ---------------------------------------------------------------------------
// Grafana

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
        _ => {}
    }
}

/// The `skileez_…` metric names an expression reads, histogram suffixes
/// taken off.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("skileez_") {
        let start = i + found;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |n| start + n);
        if !preceded {
            let name = &expr[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| HISTOGRAMS.contains(base))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

fn all_panels(value: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in value["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(all_panels(panel));
    }
    panels
}

fn check_dashboard(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let variable = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["type"] == json!("datasource") && v["query"] == json!("prometheus"))
        .and_then(|v| v["name"].as_str());
    let Some(variable) = variable else {
        return vec!["the dashboard has no Prometheus datasource variable".to_owned()];
    };
    let accepted = [format!("${{{variable}}}"), format!("${variable}")];

    let mut ids = BTreeSet::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        if let Some(id) = panel["id"].as_u64()
            && !ids.insert(id)
        {
            problems.push(format!("panel {title:?}: id {id} is used twice"));
        }
        if panel["type"] == json!("row") {
            continue;
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets
            .iter()
            .all(|t| t["expr"].as_str().is_none_or(str::is_empty))
        {
            problems.push(format!("panel {title:?}: no query"));
        }
        let sources = std::iter::once(&panel["datasource"])
            .chain(targets.iter().map(|t| &t["datasource"]))
            .filter(|d| !d.is_null());
        for source in sources {
            let uid = source["uid"].as_str().or(source.as_str()).unwrap_or("");
            if !accepted.iter().any(|a| a == uid) {
                problems.push(format!(
                    "panel {title:?}: datasource {uid:?} is not the ${variable} variable"
                ));
            }
        }
    }

    let mut queries = Vec::new();
    exprs(dashboard, &mut queries);
    let mut used = BTreeSet::new();
    for query in &queries {
        for name in metric_names(query) {
            if !METRICS.contains(&name.as_str()) {
                problems.push(format!(
                    "query {query:?} reads {name}, which no service exports"
                ));
            }
            used.insert(name);
        }
    }
    for metric in METRICS {
        if !used.contains(*metric) {
            problems.push(format!("no panel shows {metric}"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// The checks on the real files

#[test]
fn compose_services_are_probed_limited_and_given_secrets_as_files() {
    assert_none("deploy/compose/compose.yaml", &check_compose(&compose()));
}

#[test]
fn nats_config_for_compose_is_a_durable_three_node_jetstream_cluster() {
    assert_none(
        "deploy/nats/nats.conf",
        &check_nats_conf(&read("deploy/nats/nats.conf"), 3),
    );
}

#[test]
fn k8s_manifests_are_probed_limited_budgeted_and_given_secrets_by_reference() {
    assert_none("deploy/k8s", &check_k8s(&k8s_objects()));
}

#[test]
fn kustomization_lists_every_manifest() {
    let documents = yaml_documents(&read("deploy/k8s/kustomization.yaml"), "kustomization.yaml");
    assert_eq!(documents.len(), 1, "kustomization.yaml holds one document");
    assert_none(
        "deploy/k8s/kustomization.yaml",
        &check_kustomization(&documents[0], &k8s_files()),
    );
}

#[test]
fn dashboard_shows_every_metric_and_only_exported_ones() {
    assert_none(
        "deploy/grafana/skileez.json",
        &check_dashboard(&dashboard()),
    );
}

#[test]
fn operations_guide_explains_every_metric() {
    let guide = read("docs/operations.md");
    let missing: Vec<String> = METRICS
        .iter()
        .filter(|m| !guide.contains(*m))
        .map(|m| format!("docs/operations.md does not mention {m}"))
        .collect();
    assert_none("docs/operations.md", &missing);
}

// ---------------------------------------------------------------------------
// The checks catch what they are for

fn object_mut<'a>(objects: &'a mut [Object], kind: &str, name: &str) -> &'a mut Value {
    &mut objects
        .iter_mut()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("{kind} {name} is in deploy/k8s"))
        .value
}

fn first_container(deployment: &mut Value) -> &mut Value {
    &mut deployment["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn a_compose_service_without_healthcheck_is_caught() {
    let mut compose = compose();
    compose["services"]["scheduling"]
        .as_object_mut()
        .expect("scheduling")
        .remove("healthcheck");
    assert_caught(
        &check_compose(&compose),
        "compose service scheduling: no healthcheck",
    );
}

#[test]
fn a_compose_service_without_limits_is_caught() {
    let mut compose = compose();
    compose["services"]["timers"]["deploy"]["resources"]
        .as_object_mut()
        .expect("timers' resources")
        .remove("limits");
    assert_caught(
        &check_compose(&compose),
        "compose service timers: no deploy.resources.limits.memory",
    );
}

#[test]
fn a_password_in_compose_is_caught() {
    let mut compose = compose();
    compose["services"]["notifications"]["environment"]["DATABASE_URL"] =
        json!("postgres://skileez:hunter2@postgres/skileez");
    compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = json!("hunter2");
    let problems = check_compose(&compose);
    assert_caught(&problems, "DATABASE_URL holds a URL with a password");
    assert_caught(&problems, "POSTGRES_PASSWORD holds a literal value");
}

#[test]
fn a_compose_file_variable_without_its_secret_is_caught() {
    let mut compose = compose();
    compose["services"]["timers"]["secrets"] = json!(["database_url"]);
    assert_caught(
        &check_compose(&compose),
        "SKILEEZ_JWT_SECRET_FILE=/run/secrets/jwt_secret is not a file of a mounted secret",
    );
}

#[test]
fn a_deployment_without_readiness_probe_is_caught() {
    let mut objects = k8s_objects();
    let timers = object_mut(&mut objects, "Deployment", "timers");
    first_container(timers)
        .as_object_mut()
        .expect("container")
        .remove("readinessProbe");
    assert_caught(
        &check_k8s(&objects),
        "Deployment timers (timers.yaml): readinessProbe is not",
    );
}

#[test]
fn a_liveness_probe_off_the_admin_port_is_caught() {
    let mut objects = k8s_objects();
    let scheduling = object_mut(&mut objects, "Deployment", "scheduling");
    first_container(scheduling)["livenessProbe"]["httpGet"]["port"] = json!(50051);
    assert_caught(
        &check_k8s(&objects),
        "livenessProbe is not an httpGet of /livez",
    );
}

#[test]
fn a_deployment_without_requests_is_caught() {
    let mut objects = k8s_objects();
    let notifications = object_mut(&mut objects, "Deployment", "notifications");
    first_container(notifications)["resources"]
        .as_object_mut()
        .expect("resources")
        .remove("requests");
    assert_caught(&check_k8s(&objects), "no resources.requests.cpu");
}

#[test]
fn a_literal_secret_in_k8s_is_caught() {
    let mut objects = k8s_objects();
    let notifications = object_mut(&mut objects, "Deployment", "notifications");
    first_container(notifications)["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": "SKILEEZ_SMTP_PASSWORD", "value": "hunter2"}));
    let config = object_mut(&mut objects, "ConfigMap", "skileez");
    config["data"]["DATABASE_URL"] = json!("postgres://skileez:hunter2@db/skileez");
    let problems = check_k8s(&objects);
    assert_caught(&problems, "SKILEEZ_SMTP_PASSWORD holds a literal value");
    assert_caught(
        &problems,
        "ConfigMap skileez (config.yaml): DATABASE_URL holds a URL with a password",
    );
}

#[test]
fn a_file_variable_without_its_mounted_secret_is_caught() {
    let mut objects = k8s_objects();
    let timers = object_mut(&mut objects, "Deployment", "timers");
    timers["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
        .as_array_mut()
        .expect("projected sources")
        .retain(|s| s["secret"]["name"] != json!("skileez-jwt"));
    assert_caught(
        &check_k8s(&objects),
        "SKILEEZ_JWT_SECRET_FILE=/run/secrets/skileez/jwt-secret is not a file of a mounted secret",
    );
}

#[test]
fn a_deployment_without_disruption_budget_is_caught() {
    let mut objects = k8s_objects();
    objects.retain(|o| !(o.kind() == "PodDisruptionBudget" && o.name() == "notifications"));
    assert_caught(
        &check_k8s(&objects),
        "Deployment notifications (notifications.yaml): no PodDisruptionBudget",
    );
}

#[test]
fn nats_without_sync_always_is_caught() {
    let conf = read("deploy/nats/nats.conf").replace("sync_interval: always", "sync_interval: 2m");
    assert_caught(&check_nats_conf(&conf, 3), "sync_interval: always");
    let mut objects = k8s_objects();
    let config = object_mut(&mut objects, "ConfigMap", "nats-config");
    let text = config["data"]["nats.conf"]
        .as_str()
        .expect("nats.conf")
        .to_owned();
    config["data"]["nats.conf"] = json!(text.replace("sync_interval: always", ""));
    assert_caught(
        &check_k8s(&objects),
        "ConfigMap nats-config (nats.yaml) nats.conf: jetstream has no",
    );
}

#[test]
fn a_missing_migration_job_is_caught() {
    let mut objects = k8s_objects();
    objects.retain(|o| o.kind() != "Job");
    assert_caught(&check_k8s(&objects), "no Job running `skileez migrate`");
}

#[test]
fn an_unknown_metric_on_the_dashboard_is_caught() {
    let mut dashboard = dashboard();
    let target = dashboard["panels"]
        .as_array_mut()
        .expect("panels")
        .iter_mut()
        .find(|p| p["type"] != json!("row"))
        .expect("a panel");
    target["targets"][0]["expr"] = json!("sum(rate(skileez_calls_booked[5m]))");
    let problems = check_dashboard(&dashboard);
    assert_caught(
        &problems,
        "reads skileez_calls_booked, which no service exports",
    );
    assert_caught(&problems, "no panel shows skileez_calls_booked_total");
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(skileez_smtp_send_seconds_bucket[5m]))) / skileez_x_count"
        ),
        BTreeSet::from([
            "skileez_smtp_send_seconds".to_owned(),
            "skileez_x_count".to_owned()
        ])
    );
    assert!(url_with_password("nats://a:4222,postgres://u:p@h/db"));
    assert!(!url_with_password("postgres://u@h/db"));
    assert!(!url_with_password("smtps://skileez@smtp.example.com"));
}
