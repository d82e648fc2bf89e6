//! The least-privilege NATS users of `deploy/nats/permissions.conf`, on a
//! real nats-server: each service, as its own process under its own nkey,
//! does its whole job (scheduling creates the topology and publishes,
//! timers fire from their durable consumer, notifications record in-app
//! notifications from theirs), with no permission violation in the server's
//! log; the chat service's user reads call events and cards but can neither
//! publish a call event nor take messages from our durable consumers.

mod support;

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use chrono::{DurationRound, Utc};
use futures::StreamExt;
use prost::Message as _;
use skileez_proto::{call as ev, notifications as pbn};
use skileez_testkit::{TestDatabase, nats::TestNats};
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const USERS: [&str; 5] = ["scheduling", "timers", "notifications", "chat", "admin"];

struct Keys {
    dir: tempfile::TempDir,
    public: Vec<(String, String)>,
}

impl Keys {
    /// A user nkey pair per user: the seeds in files, the public keys for
    /// the server's environment.
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("dir");
        let mut public = Vec::new();
        for user in USERS {
            let pair = nkeys::KeyPair::new_user();
            std::fs::write(
                dir.path().join(format!("{user}.nk")),
                pair.seed().expect("seed"),
            )
            .expect("write seed");
            public.push((
                format!("SKILEEZ_NATS_{}_NKEY", user.to_uppercase()),
                pair.public_key(),
            ));
        }
        Keys { dir, public }
    }

    fn seed_file(&self, user: &str) -> String {
        self.dir
            .path()
            .join(format!("{user}.nk"))
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    fn seed(&self, user: &str) -> String {
        std::fs::read_to_string(self.seed_file(user)).expect("seed")
    }
}

/// The server: the repository's permissions included from a file of ours.
async fn server(keys: &Keys) -> TestNats {
    let permissions =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/permissions.conf");
    std::fs::copy(&permissions, keys.dir.path().join("permissions.conf")).expect("copy");
    let config = keys.dir.path().join("server.conf");
    std::fs::write(&config, "include ./permissions.conf\n").expect("write config");
    let env: Vec<(&str, &str)> = keys
        .public
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    TestNats::with_config(&config, &env).await
}

/// A client as the chat service connects: its nkey and its inbox prefix.
async fn chat_client(nats: &TestNats, keys: &Keys) -> async_nats::Client {
    async_nats::ConnectOptions::with_nkey(keys.seed("chat"))
        .custom_inbox_prefix("_INBOX.chat")
        .connect(nats.url())
        .await
        .expect("chat connects")
}

fn violations(nats: &TestNats) -> Vec<String> {
    std::fs::read_to_string(nats.log_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_works_under_its_own_user_and_the_chat_user_only_reads() {
    let keys = Keys::new();
    let nats = server(&keys).await;
    let db = TestDatabase::new().await;
    let base: Vec<(String, String)> = [
        ("DATABASE_URL", db.url()),
        ("NATS_URL", nats.url()),
        ("SKILEEZ_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        // Nothing listens there: e-mails fail, which is not what this tests.
        (
            "SKILEEZ_SMTP_URL",
            format!("smtp://127.0.0.1:{}", free_port()),
        ),
        ("SKILEEZ_MIN_NOTICE", "1s".to_owned()),
        ("SKILEEZ_START_GRANULARITY", "1s".to_owned()),
        ("SKILEEZ_READY_LEAD", "3s".to_owned()),
        ("SKILEEZ_MISSED_AFTER", "10m".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let env_as = |user: &str, extra: &[(&str, String)]| {
        let mut env = base.clone();
        env.push(("NATS_NKEY_SEED_FILE".into(), keys.seed_file(user)));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };

    ok(run(skileez()
        .arg("migrate")
        .envs(base.iter().map(|(k, v)| (k.as_str(), v.as_str())))));
    let (_scheduling, printed) = serve("scheduling", &env_as("scheduling", &[]));
    let scheduling_url = format!(
        "http://{}",
        printed
            .iter()
            .find_map(|l| l.strip_prefix("scheduling service on "))
            .expect("the gRPC address")
    );
    let readers = [("SKILEEZ_NATS_MANAGE_TOPOLOGY", "false".to_owned())];
    let (_timers, _) = serve(
        "timers",
        &env_as(
            "timers",
            &[
                readers[0].clone(),
                ("SKILEEZ_SCHEDULING_URL", scheduling_url.clone()),
            ],
        ),
    );
    let (_notifications, printed) = serve("notifications", &env_as("notifications", &readers));
    let notifications_url = format!(
        "http://{}",
        printed
            .iter()
            .find_map(|l| l.strip_prefix("notifications listening on "))
            .expect("the notifications address")
    );

    // A booking, through the public API.
    let cli = |token: &str| {
        let mut command = skileez();
        command
            .env("SKILEEZ_SERVER", &scheduling_url)
            .env("SKILEEZ_TOKEN", token);
        command
    };
    let at = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap()
        + chrono::Duration::seconds(6);
    let out = ok(run(cli(&token("ada", "student")).args([
        "call",
        "schedule",
        "--student",
        "ada",
        "--coach",
        "grace",
        "--at",
        &at.to_rfc3339(),
        "--output",
        "json",
    ])));
    let booked: serde_json::Value = serde_json::from_str(&out).expect("json");
    let call_id = booked["call"]["card"]["callId"]
        .as_str()
        .expect("call id")
        .to_owned();

    // The chat user follows the call: the booking, then the ready the timer
    // service fired (so scheduling published, timers consumed and fired).
    let chat = chat_client(&nats, &keys).await;
    let js = jetstream::new(chat.clone());
    let stream = js.get_stream("CALL_EVENTS").await.expect("stream info");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            filter_subject: format!("skileez.call.v1.*.{call_id}"),
            ..Default::default()
        })
        .await
        .expect("an ordered consumer of its own");
    let mut messages = consumer.messages().await.expect("messages");
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &String| s == "CallReady") {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} arrived"))
            .expect("a message")
            .expect("no error");
        let event = ev::CallEvent::decode(message.payload.as_ref()).expect("decodes");
        seen.push(
            message
                .subject
                .split('.')
                .nth(3)
                .expect("event name")
                .to_owned(),
        );
        assert_eq!(event.call_id, call_id);
    }
    assert_eq!(seen[0], "CallScheduled");

    // The card is readable.
    let cards = js.get_key_value("CALL_CARDS").await.expect("bucket");
    let card = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Some(bytes)) = cards.get(&call_id).await {
                break bytes;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the card");
    assert!(!card.is_empty());

    // Notifications consumed it: Ada has her in-app notification.
    let channel = tonic::transport::Channel::from_shared(notifications_url)
        .expect("url")
        .connect()
        .await
        .expect("notifications");
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token("ada", "student"))
        .parse()
        .expect("ascii");
    let mut client = pbn::notification_service_client::NotificationServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    tokio::time::timeout(WAIT, async {
        loop {
            let page = client
                .list_notifications(pbn::ListNotificationsRequest::default())
                .await
                .expect("list")
                .into_inner();
            if !page.notifications.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("an in-app notification");
    assert_eq!(
        violations(&nats),
        Vec::<String>::new(),
        "our services hit a permission they lack"
    );

    // What the chat user may not do.
    let forged = js
        .publish(
            format!("skileez.call.v1.CallCancelled.{call_id}"),
            "forged".into(),
        )
        .await;
    let refused = match forged {
        Err(_) => true,
        Ok(ack) => tokio::time::timeout(Duration::from_secs(3), ack)
            .await
            .map_or(true, |ack| ack.is_err()),
    };
    assert!(refused, "the chat user published a call event");
    // Seen as an operator: nothing of the sort was stored.
    let admin = async_nats::ConnectOptions::with_nkey(keys.seed("admin"))
        .connect(nats.url())
        .await
        .expect("admin connects");
    let admin_stream = jetstream::new(admin)
        .get_stream("CALL_EVENTS")
        .await
        .expect("stream");
    let forged_stored = admin_stream
        .get_last_raw_message_by_subject(&format!("skileez.call.v1.CallCancelled.{call_id}"))
        .await;
    assert!(forged_stored.is_err(), "a forged event is in the stream");

    let put = cards.put(&call_id, "forged".into()).await;
    assert!(put.is_err(), "the chat user wrote a call card");

    let theirs: Result<jetstream::consumer::Consumer<pull::Config>, _> =
        stream.get_consumer("timers").await;
    if let Ok(timers) = theirs {
        let batch = timers
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let took = match batch {
            Err(_) => false,
            Ok(mut batch) => matches!(
                tokio::time::timeout(Duration::from_secs(3), batch.next()).await,
                Ok(Some(Ok(_)))
            ),
        };
        assert!(
            !took,
            "the chat user took a message from the timers consumer"
        );
    }
    let created = stream
        .create_consumer(pull::Config {
            durable_name: Some("notifications".into()),
            ..Default::default()
        })
        .await;
    assert!(
        created.is_err(),
        "the chat user created or took over our durable"
    );
    let chat_key = &keys
        .public
        .iter()
        .find(|(var, _)| var == "SKILEEZ_NATS_CHAT_NKEY")
        .expect("chat key")
        .1;
    assert!(
        violations(&nats)
            .iter()
            .all(|v| v.contains(chat_key.as_str())),
        "only the chat user's attempts are violations: {:?}",
        violations(&nats)
    );
    assert!(
        !violations(&nats).is_empty(),
        "the chat user's attempts were not even refused by the server; its log:\n{}",
        std::fs::read_to_string(nats.log_file()).unwrap_or_default()
    );
}
