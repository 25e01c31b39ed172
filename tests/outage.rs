//! With the homeserver down, nothing accepted is lost: a send answers `202`,
//! the message stays `pending`, a retry job is on the queue, later sends of
//! the conversation queue behind it instead of overtaking it, and once the
//! homeserver is back the retry function delivers them all, in order.
//!
//! Edits and deletes accepted meanwhile wait in the same outbox and are
//! delivered after what was queued before them.
//!
//! Room and member changes accepted meanwhile are brought to Matrix too.
//!
//! This stops the real Synapse, so it is a test binary of its own (cargo runs
//! test binaries one after another) and it restarts Synapse when it ends.
//! One outage serves the three scenarios (sends, changes of messages,
//! changes of rooms and members), each in a conversation of its own: after
//! a restart Synapse takes a minute or more to recover the appservice.
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

/// Sends: accepted while down (`202`, pending, idempotent), handed back by
/// the retry function meanwhile; a send after the homeserver is back queues
/// behind them; both delivered in order; then the outbox is empty again.
struct Sends {
    api: Api,
    conversation: String,
    path: String,
    user: String,
    carol: MatrixUser,
    first: Option<client::Reply>,
}

impl Sends {
    async fn prepare() -> Self {
        let api = Api::new();
        let alice = unique("alice");
        let conversation = unique("outage");
        let carol = MatrixUser::register(&unique("carol")).await;
        api.provision(&json!({"id": conversation, "kind": "group", "members": [
            {"user_id": alice, "role": "owner"}, {"matrix_user_id": carol.user_id, "role": "member"}]}))
            .await;
        Self {
            path: format!("/v1/conversations/{conversation}/messages"),
            user: token(&alice, false),
            api,
            conversation,
            carol,
            first: None,
        }
    }

    async fn while_down(&mut self) {
        let send_while_down = || async {
            self.api
                .json_with(
                    "POST",
                    &self.path,
                    &self.user,
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
        let stored = self
            .api
            .get(
                &format!("{}/{}", self.path, first.body["id"].as_str().unwrap()),
                &self.user,
            )
            .await;
        assert_eq!(
            (stored.status, stored.body["status"].as_str()),
            (200, Some("pending"))
        );
        self.first = Some(first);
    }

    /// The job is on the queue; the retry function hands it back while the
    /// homeserver is still down.
    async fn handed_back(&self, retry: &RetryLoop) {
        let first = self.first.as_ref().unwrap();
        let started = Instant::now();
        loop {
            let (jobs, handed_back) = retry.once().await;
            if let Some(job) = jobs
                .iter()
                .find(|job| job["message_id"] == first.body["id"])
            {
                assert_eq!(
                    (job["operation"].as_str(), job["conversation_id"].as_str()),
                    (Some("send"), Some(self.conversation.as_str()))
                );
                assert!(handed_back >= 1);
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no retry job for the first message"
            );
        }
    }

    /// The homeserver is back, but the first message is not delivered yet:
    /// the next one must queue behind it rather than overtake it.
    async fn back_up(&self) {
        let second = self
            .api
            .json(
                "POST",
                &self.path,
                &self.user,
                &json!({"body": "after it came back"}),
            )
            .await;
        assert_eq!(
            (second.status, second.body["status"].as_str()),
            (202, Some("pending")),
            "{second:?}"
        );
    }

    async fn delivered(&self) -> Result<(), String> {
        let history = self.api.get(&self.path, &self.user).await;
        let statuses: Vec<&str> = history.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["status"].as_str().unwrap())
            .collect();
        (statuses == ["sent", "sent"])
            .then_some(())
            .ok_or(format!("sends: {statuses:?}"))
    }

    async fn check(&self) {
        let room_id = self
            .api
            .get(
                &format!("/v1/conversations/{}", self.conversation),
                &self.user,
            )
            .await
            .body["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.carol.join(&room_id).await;
        let bodies: Vec<Value> = self
            .carol
            .messages(&room_id)
            .await
            .iter()
            .map(|event| event["content"]["body"].clone())
            .collect();
        assert_eq!(bodies, [json!("while down"), json!("after it came back")]);
        let third = self
            .api
            .json(
                "POST",
                &self.path,
                &self.user,
                &json!({"body": "direct again"}),
            )
            .await;
        assert_eq!(
            (third.status, third.body["status"].as_str()),
            (201, Some("sent")),
            "the outbox is empty again"
        );
    }
}

/// Changes of messages: an edit and a delete accepted while down, then a
/// send; delivered in that order.
struct Changes {
    api: Api,
    path: String,
    user: String,
    carol: MatrixUser,
    room_id: String,
    edited: client::Reply,
    deleted: client::Reply,
    after: Option<client::Reply>,
}

impl Changes {
    async fn prepare() -> Self {
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
        let edited = api
            .json("POST", &path, &user, &json!({"body": "edit me"}))
            .await;
        let deleted = api
            .json("POST", &path, &user, &json!({"body": "delete me"}))
            .await;
        assert_eq!((edited.status, deleted.status), (201, 201));
        Self {
            api,
            path,
            user,
            carol,
            room_id,
            edited,
            deleted,
            after: None,
        }
    }

    fn message_path(&self, reply: &client::Reply) -> String {
        format!("{}/{}", self.path, reply.body["id"].as_str().unwrap())
    }

    async fn while_down(&mut self) {
        let edit = self
            .api
            .json(
                "PUT",
                &self.message_path(&self.edited),
                &self.user,
                &json!({"body": "edited while down"}),
            )
            .await;
        assert_eq!(edit.status, 202, "{edit:?}");
        let delete = self
            .api
            .call(
                "DELETE",
                &self.message_path(&self.deleted),
                Some(&self.user),
                &[],
                None,
            )
            .await;
        assert_eq!(delete.status, 204, "{delete:?}");
        let after = self
            .api
            .json(
                "POST",
                &self.path,
                &self.user,
                &json!({"body": "sent after both"}),
            )
            .await;
        assert_eq!(
            (after.status, after.body["status"].as_str()),
            (202, Some("pending"))
        );
        // The history shows the accepted changes already.
        let now = self
            .api
            .get(&self.message_path(&self.edited), &self.user)
            .await;
        assert_eq!(now.body["body"], "edited while down");
        let gone = self
            .api
            .get(&self.message_path(&self.deleted), &self.user)
            .await;
        assert_eq!(gone.body["status"], "deleted");
        self.after = Some(after);
    }

    async fn delivered(&self) -> Result<(), String> {
        let after = self.after.as_ref().unwrap();
        let last = self.api.get(&self.message_path(after), &self.user).await;
        (last.body["status"] == "sent")
            .then_some(())
            .ok_or(format!("changes: {last:?}"))
    }

    /// In order: the edit, the redaction, then the later send.
    async fn check(&self) {
        let timeline = self.carol.timeline(&self.room_id).await;
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
                && event["content"]["m.relates_to"]["event_id"] == self.edited.body["event_id"]
        });
        let redaction_at = position(&|event| event["type"] == "m.room.redaction");
        let send_at = position(&|event| event["content"]["body"] == "sent after both");
        assert!(
            edit_at < redaction_at && redaction_at < send_at,
            "{edit_at} {redaction_at} {send_at}"
        );
    }
}

/// Room and member changes: a member added and the room renamed while down
/// (`202`, the table has them already), both in Matrix once it is back;
/// then the outbox is empty again.
struct Syncs {
    api: Api,
    admin: String,
    carol: MatrixUser,
    conversation: String,
    room_id: String,
    bob_id: String,
    member_path: String,
}

impl Syncs {
    async fn prepare() -> Self {
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
        let namer = bridge::ids::PuppetNamer::new(
            var("BRIDGE_PUPPET_PREFIX"),
            ruma::server_name!("localhost"),
        );
        let bob_id = namer
            .user_id(&bridge::ids::AppUserId::parse(bob.as_str()).unwrap())
            .to_string();
        Self {
            member_path: format!("/v1/conversations/{conversation}/members/{bob}"),
            api,
            admin,
            carol,
            conversation,
            room_id,
            bob_id,
        }
    }

    async fn while_down(&self) {
        let added = self
            .api
            .json(
                "PUT",
                &self.member_path,
                &self.admin,
                &json!({"role": "moderator", "display_name": "Bob"}),
            )
            .await;
        assert_eq!(added.status, 202, "{added:?}");
        let renamed = self
            .api
            .json(
                "PATCH",
                &format!("/v1/conversations/{}", self.conversation),
                &self.admin,
                &json!({"name": "After"}),
            )
            .await;
        assert_eq!(renamed.status, 202, "{renamed:?}");
        assert_eq!(renamed.body["name"], "After", "the table has it already");
    }

    async fn delivered(&self) -> Result<(), String> {
        let name = self.carol.state(&self.room_id, "m.room.name", "").await;
        let levels = self
            .carol
            .state(&self.room_id, "m.room.power_levels", "")
            .await;
        (name["name"] == "After" && levels["users"][&self.bob_id] == 50)
            .then_some(())
            .ok_or(format!("room and member: {name} {levels}"))
    }

    async fn check(&self) {
        let member = self
            .carol
            .state(&self.room_id, "m.room.member", &self.bob_id)
            .await;
        assert_eq!(
            (
                member["membership"].as_str(),
                member["displayname"].as_str()
            ),
            (Some("join"), Some("Bob"))
        );
        let direct = self
            .api
            .json(
                "PUT",
                &self.member_path,
                &self.admin,
                &json!({"role": "owner"}),
            )
            .await;
        assert_eq!(direct.status, 200, "the outbox is empty again: {direct:?}");
    }
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn what_is_accepted_while_the_homeserver_is_down_is_delivered_later_in_order() {
    let (mut sends, mut changes, syncs) =
        tokio::join!(Sends::prepare(), Changes::prepare(), Syncs::prepare());
    let down = HomeserverDown::stop().await;
    sends.while_down().await;
    changes.while_down().await;
    syncs.while_down().await;
    let retry = RetryLoop::new().await;
    sends.handed_back(&retry).await;
    drop(down);
    sends.back_up().await;

    // The retry function delivers them all.
    let started = Instant::now();
    loop {
        retry.once().await;
        let (a, b, c) = tokio::join!(sends.delivered(), changes.delivered(), syncs.delivered());
        let waiting: Vec<String> = [a, b, c].into_iter().filter_map(Result::err).collect();
        if waiting.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not delivered: {waiting:?}"
        );
    }
    sends.check().await;
    changes.check().await;
    syncs.check().await;
}
