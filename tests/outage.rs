//! With the homeserver down, nothing accepted is lost: a send answers `202`,
//! the message stays `pending`, a retry job is on the queue, and later sends
//! of the conversation queue behind it instead of overtaking it.
//!
//! This stops the real Synapse, so it is a test binary of its own (cargo runs
//! test binaries one after another) and restarts Synapse when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "stack/client.rs"]
mod client;
#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use client::{Api, token, unique};
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
        }
    }
}

/// Takes the retry jobs for `conversation` off the queue, oldest first.
async fn jobs_for(conversation: &str, expected: usize) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = var("BRIDGE_RETRY_QUEUE_URL");
    let mut jobs = Vec::new();
    let started = Instant::now();
    while jobs.len() < expected && started.elapsed() < Duration::from_secs(20) {
        let output = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in output.messages.unwrap_or_default() {
            let job: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            if job["conversation_id"] == conversation {
                sqs.delete_message()
                    .queue_url(&queue)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                jobs.push(job);
            }
        }
    }
    jobs
}

#[tokio::test]
async fn with_the_homeserver_down_sends_are_accepted_queued_and_kept_in_order() {
    let api = Api::new();
    let alice = unique("alice");
    let conversation = unique("outage");
    api.provision(&json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;
    let path = format!("/v1/conversations/{conversation}/messages");
    let user = token(&alice, false);

    let down = HomeserverDown::stop().await;
    let first = api
        .json_with(
            "POST",
            &path,
            &user,
            &[("idempotency-key", "o-1")],
            &json!({"body": "while down"}),
        )
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.body["status"], "pending");
    assert!(first.body.get("event_id").is_none());
    let retried = api
        .json_with(
            "POST",
            &path,
            &user,
            &[("idempotency-key", "o-1")],
            &json!({"body": "while down"}),
        )
        .await;
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

    let jobs = jobs_for(&conversation, 2).await;
    let ids: Vec<&Value> = jobs.iter().map(|job| &job["message_id"]).collect();
    assert_eq!(
        ids,
        [&first.body["id"], &second.body["id"]],
        "one job each, in order: {jobs:?}"
    );
    assert!(jobs.iter().all(|job| job["operation"] == "send"));

    let history = api.get(&path, &user).await;
    let statuses: Vec<&str> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "pending"]);
}
