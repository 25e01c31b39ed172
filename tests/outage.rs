//! With the homeserver down, nothing accepted is lost: a send answers `202`,
//! the message stays `pending`, a retry job is on the queue, later sends of
//! the conversation queue behind it instead of overtaking it, and once the
//! homeserver is back the retry function delivers them all, in order.
//!
//! Edits and deletes accepted meanwhile wait in the same outbox and are
//! delivered after what was queued before them.
//!
//! This stops the real Synapse, so it is a test binary of its own (cargo runs
//! test binaries one after another), its tests take turns, and it restarts
//! Synapse when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "stack/client.rs"]
mod client;
#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use bridge::config::MatrixConfig;
use bridge::handlers::retry::{self, RetryService};
use bridge::matrix::AppserviceClient;
use bridge::metrics::Metrics;
use bridge::queue::SqsRetryQueue;
use bridge::store::DynamoStore;
use bridge_dev::retry_poller::drain_once;
use client::{Api, MatrixUser, token, unique};
use support::{sdk_config, var};

/// One outage at a time: the tests of this binary take turns.
static OUTAGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stops Synapse for the life of the guard; starts it again on drop, also
/// when the test fails.
struct HomeserverDown;

impl HomeserverDown {
    async fn stop() -> Self {
        let pid = std::fs::read_to_string(var("SYNAPSE_PID_FILE")).expect("Synapse's pid file");
        let status = Command::new("kill").arg(pid.trim()).status().unwrap();
        assert!(status.success(), "could not stop Synapse");
        let url = format!("{}/_matrix/client/versions", var("MATRIX_HOMESERVER_URL"));
        let started = Instant::now();
        while reqwest::get(&url).await.is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Synapse did not stop"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self
    }
}

impl Drop for HomeserverDown {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let status = Command::new(format!("{root}/scripts/stack"))
            .arg("up")
            .env("BRIDGE_SKIP_BUILD", "1")
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not restart the stack: run scripts/stack up");
            return;
        }
        wait_for_appservice_up(root);
    }
}

/// Waits until Synapse has recovered the appservice. A push cut off by the
/// stop marks it down; until Synapse's recoverer has sent what was queued,
/// it drops typing and receipts, which would fail the next binary's tests.
/// Synapse says so only in its database (`state` 'down'; null or 'up'
/// otherwise, a null on an appservice never marked down). On loaded cores Synapse starts
/// its appservice scheduler about a minute after it answers, and only then
/// replays what is queued: the wait covers both.
fn wait_for_appservice_up(root: &str) {
    let query = "import sqlite3, sys; \
        db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); \
        rows = db.execute(\"select state from application_services_state where as_id = 'bridge'\").fetchall(); \
        sys.exit(1 if ('down',) in rows else 0)";
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(180) {
        let up = Command::new(format!("{root}/.local/synapse/bin/python"))
            .args([
                "-c",
                query,
                &format!("{root}/.local/synapse-data/homeserver.db"),
            ])
            .status();
        if matches!(up, Ok(s) if s.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("Synapse has not recovered the appservice within 180 s");
}

/// The retry function's handler on the real table and homeserver, fed from
/// the real queue the way the SQS event source mapping feeds it.
struct RetryLoop {
    sqs: aws_sdk_sqs::Client,
    queue: String,
    service: RetryService<DynamoStore, AppserviceClient, SqsRetryQueue>,
}

impl RetryLoop {
    async fn new() -> Self {
        let sdk = sdk_config().await;
        let config = MatrixConfig::from_env(support::stack_env()).unwrap();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        Self {
            sqs: sqs.clone(),
            queue: var("BRIDGE_RETRY_QUEUE_URL"),
            service: RetryService::new(
                (
                    DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), var("BRIDGE_TABLE")),
                    AppserviceClient::local(AppserviceClient::http_client().unwrap(), &config)
                        .unwrap(),
                    SqsRetryQueue::new(sqs.clone(), var("BRIDGE_RETRY_QUEUE_URL")),
                ),
                bridge::config::SweepSettings::default().max_age,
                // The test drives the queue itself, a second apart.
                bridge::config::RetryBackoff {
                    base: Duration::from_secs(1),
                    max: Duration::from_secs(1),
                },
                Metrics::off(retry::NAME),
            ),
        }
    }

    /// One batch; returns the job bodies received and how many were handed back.
    async fn once(&self) -> (Vec<Value>, usize) {
        let drained = drain_once(
            &self.sqs,
            &self.queue,
            &self.service,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let jobs = drained
            .jobs
            .iter()
            .map(|body| serde_json::from_str(body).unwrap())
            .collect();
        (jobs, drained.handed_back)
    }
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn sends_accepted_while_the_homeserver_is_down_are_delivered_later_in_order() {
    let _turn = OUTAGE.lock().await;
    let api = Api::new();
    let alice = unique("alice");
    let conversation = unique("outage");
    let path = format!("/v1/conversations/{conversation}/messages");
    let user = token(&alice, false);

    let carol = MatrixUser::register(&unique("carol")).await;
    api.provision(&json!({"id": conversation, "kind": "group", "members": [
        {"user_id": alice, "role": "owner"}, {"matrix_user_id": carol.user_id, "role": "member"}]}))
        .await;
    let down = HomeserverDown::stop().await;
    let send_while_down = || async {
        api.json_with(
            "POST",
            &path,
            &user,
            &[("idempotency-key", "o-1")],
            &json!({"body": "while down"}),
        )
        .await
    };
    let first = send_while_down().await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.body["status"], "pending");
    assert!(first.body.get("event_id").is_none());
    let retried = send_while_down().await;
    assert_eq!(
        (retried.status, &retried.body["id"]),
        (202, &first.body["id"]),
        "a retry is the same message"
    );
    let stored = api
        .get(
            &format!("{path}/{}", first.body["id"].as_str().unwrap()),
            &user,
        )
        .await;
    assert_eq!(
        (stored.status, stored.body["status"].as_str()),
        (200, Some("pending"))
    );

    // The job is on the queue; the retry function hands it back while the
    // homeserver is still down.
    let retry = RetryLoop::new().await;
    let started = Instant::now();
    loop {
        let (jobs, handed_back) = retry.once().await;
        if let Some(job) = jobs
            .iter()
            .find(|job| job["message_id"] == first.body["id"])
        {
            assert_eq!(
                (job["operation"].as_str(), job["conversation_id"].as_str()),
                (Some("send"), Some(conversation.as_str()))
            );
            assert!(handed_back >= 1);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no retry job for the first message"
        );
    }

    drop(down);
    // The homeserver is back, but the first message is not delivered yet:
    // the next one must queue behind it rather than overtake it.
    let second = api
        .json("POST", &path, &user, &json!({"body": "after it came back"}))
        .await;
    assert_eq!(
        (second.status, second.body["status"].as_str()),
        (202, Some("pending")),
        "{second:?}"
    );

    // The retry function delivers both, in order.
    let started = Instant::now();
    loop {
        retry.once().await;
        let history = api.get(&path, &user).await;
        let statuses: Vec<&str> = history.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["status"].as_str().unwrap())
            .collect();
        if statuses == ["sent", "sent"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not delivered: {statuses:?}"
        );
    }
    let room_id = api
        .get(&format!("/v1/conversations/{conversation}"), &user)
        .await
        .body["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    carol.join(&room_id).await;
    let bodies: Vec<Value> = carol
        .messages(&room_id)
        .await
        .iter()
        .map(|event| event["content"]["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("while down"), json!("after it came back")]);

    let third = api
        .json("POST", &path, &user, &json!({"body": "direct again"}))
        .await;
    assert_eq!(
        (third.status, third.body["status"].as_str()),
        (201, Some("sent")),
        "the outbox is empty again"
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn edits_and_deletes_accepted_while_the_homeserver_is_down_are_delivered_in_order() {
    let _turn = OUTAGE.lock().await;
    let api = Api::new();
    let alice = unique("alice");
    let conversation = unique("outage");
    let path = format!("/v1/conversations/{conversation}/messages");
    let user = token(&alice, false);
    let carol = MatrixUser::register(&unique("carol")).await;
    let created = api
        .provision(&json!({"id": conversation, "kind": "group", "members": [
            {"user_id": alice, "role": "owner"}, {"matrix_user_id": carol.user_id}]}))
        .await;
    let room_id = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room_id).await;
    let send = |body: &'static str| {
        let (api, path, user) = (&api, &path, &user);
        async move { api.json("POST", path, user, &json!({ "body": body })).await }
    };
    let edited = send("edit me").await;
    let deleted = send("delete me").await;
    assert_eq!((edited.status, deleted.status), (201, 201));
    let message_path =
        |reply: &client::Reply| format!("{path}/{}", reply.body["id"].as_str().unwrap());

    let down = HomeserverDown::stop().await;
    let edit = api
        .json(
            "PUT",
            &message_path(&edited),
            &user,
            &json!({"body": "edited while down"}),
        )
        .await;
    assert_eq!(edit.status, 202, "{edit:?}");
    let delete = api
        .call("DELETE", &message_path(&deleted), Some(&user), &[], None)
        .await;
    assert_eq!(delete.status, 204, "{delete:?}");
    let after = send("sent after both").await;
    assert_eq!(
        (after.status, after.body["status"].as_str()),
        (202, Some("pending"))
    );
    // The history shows the accepted changes already.
    let now = api.get(&message_path(&edited), &user).await;
    assert_eq!(now.body["body"], "edited while down");
    let gone = api.get(&message_path(&deleted), &user).await;
    assert_eq!(gone.body["status"], "deleted");
    drop(down);

    // The retry function delivers the edit, the redaction, then the send.
    let retry = RetryLoop::new().await;
    let started = Instant::now();
    loop {
        retry.once().await;
        let last = api.get(&message_path(&after), &user).await;
        if last.body["status"] == "sent" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not delivered: {last:?}"
        );
    }
    let timeline = carol.timeline(&room_id).await;
    let position = |wanted: &dyn Fn(&Value) -> bool| {
        let found: Vec<usize> = timeline
            .iter()
            .enumerate()
            .filter(|(_, event)| wanted(event))
            .map(|(at, _)| at)
            .collect();
        assert_eq!(found.len(), 1, "exactly one: {timeline:?}");
        found[0]
    };
    let edit_at = position(&|event| {
        event["content"]["m.relates_to"]["rel_type"] == "m.replace"
            && event["content"]["m.new_content"]["body"] == "edited while down"
            && event["content"]["m.relates_to"]["event_id"] == edited.body["event_id"]
    });
    let redaction_at = position(&|event| event["type"] == "m.room.redaction");
    let send_at = position(&|event| event["content"]["body"] == "sent after both");
    // In order: the edit, the redaction, then the later send.
    assert!(
        edit_at < redaction_at && redaction_at < send_at,
        "{edit_at} {redaction_at} {send_at}"
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn member_and_room_changes_accepted_while_the_homeserver_is_down_are_delivered_later() {
    let _turn = OUTAGE.lock().await;
    let api = Api::new();
    let admin = token("svc", true);
    let (alice, bob, conversation) = (unique("alice"), unique("bob"), unique("outage"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let created = api
        .provision(
            &json!({"id": conversation, "kind": "group", "name": "Before", "members": [
            {"user_id": alice, "role": "owner"}, {"matrix_user_id": carol.user_id}]}),
        )
        .await;
    let room_id = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room_id).await;
    let namer =
        bridge::ids::PuppetNamer::new(var("BRIDGE_PUPPET_PREFIX"), ruma::server_name!("localhost"));
    let bob_id = namer
        .user_id(&bridge::ids::AppUserId::parse(bob.as_str()).unwrap())
        .to_string();
    let member_path = format!("/v1/conversations/{conversation}/members/{bob}");

    let down = HomeserverDown::stop().await;
    let added = api
        .json(
            "PUT",
            &member_path,
            &admin,
            &json!({"role": "moderator", "display_name": "Bob"}),
        )
        .await;
    assert_eq!(added.status, 202, "{added:?}");
    let renamed = api
        .json(
            "PATCH",
            &format!("/v1/conversations/{conversation}"),
            &admin,
            &json!({"name": "After"}),
        )
        .await;
    assert_eq!(renamed.status, 202, "{renamed:?}");
    assert_eq!(renamed.body["name"], "After", "the table has it already");
    let retry = RetryLoop::new().await;
    let (_, handed_back) = retry.once().await;
    assert!(handed_back >= 1, "handed back while the homeserver is down");
    drop(down);

    let started = Instant::now();
    loop {
        retry.once().await;
        let name = carol.state(&room_id, "m.room.name", "").await;
        let levels = carol.state(&room_id, "m.room.power_levels", "").await;
        if name["name"] == "After" && levels["users"][&bob_id] == 50 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not delivered: {name} {levels}"
        );
    }
    let member = carol.state(&room_id, "m.room.member", &bob_id).await;
    assert_eq!(
        (
            member["membership"].as_str(),
            member["displayname"].as_str()
        ),
        (Some("join"), Some("Bob"))
    );
    let direct = api
        .json("PUT", &member_path, &admin, &json!({"role": "owner"}))
        .await;
    assert_eq!(direct.status, 200, "the outbox is empty again: {direct:?}");
}
