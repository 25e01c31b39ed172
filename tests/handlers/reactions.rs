//! Reactions on the fakes: the `m.reaction` annotation as the caller's
//! puppet (ruma reads it back), once per user and key, its redaction, the
//! counts in history, the retry path, and every refusal.

use bridge::matrix::fake::Op;
use ruma::events::reaction::ReactionEventContent;

use super::*;

const THUMBS: &str = "👍";

impl Bridge {
    /// `PUT` (or, with `remove`, `DELETE`) the reaction `key` of `user` to
    /// `message`: the status.
    async fn react(&self, user: &str, message: &str, key: &str, remove: bool) -> (u16, Value) {
        let name = if remove {
            "delete-reaction"
        } else {
            "put-reaction"
        };
        let event = Event::load(name)
            .by(user, false)
            .path_param("message_id", message)
            .path_param("key", key);
        let response = self.call("react", event.request()).await;
        let status = response.status().as_u16();
        let body = if status == 204 {
            Value::Null
        } else {
            json_of(&response)
        };
        (status, body)
    }

    /// The `m.reaction`s the fake was asked for: sender, txn id, target and key.
    fn reactions_sent(&self) -> Vec<(ruma::OwnedUserId, String, String, String)> {
        self.matrix
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                Call::React {
                    sender,
                    txn_id,
                    target,
                    key,
                    ..
                } => Some((sender, txn_id, target.to_string(), key)),
                _ => None,
            })
            .collect()
    }

    /// `message`'s reactions as `user` reads them in history.
    async fn reactions_seen(&self, user: &str, message: &str) -> Value {
        let (status, page) = self.listed(user, &[]).await;
        assert_eq!(status, 200);
        let found = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == message)
            .cloned()
            .unwrap();
        found.get("reactions").cloned().unwrap_or(Value::Null)
    }
}

#[tokio::test]
async fn a_reaction_is_an_annotation_by_the_puppet_once_per_user_and_key_and_counted() {
    let bridge = Bridge::with_conversation().await;
    let (_, message) = bridge
        .posted("alice", json!({"body": "Hike on Sunday?"}))
        .await;
    let id = message["id"].as_str().unwrap();
    let event = message["event_id"].as_str().unwrap();

    assert_eq!(bridge.react("bob", id, THUMBS, false).await.0, 204);
    assert_eq!(
        bridge.react("bob", id, THUMBS, false).await.0,
        204,
        "a repeat changes nothing"
    );
    assert_eq!(bridge.react("alice", id, THUMBS, false).await.0, 204);
    assert_eq!(bridge.react("alice", id, "🎉", false).await.0, 204);
    let sent = bridge.reactions_sent();
    assert_eq!(sent.len(), 3, "one event per user and key: {sent:?}");
    let (sender, _, target, key) = &sent[0];
    assert_eq!(sender, &puppet("bob"));
    assert_eq!((target.as_str(), key.as_str()), (event, THUMBS));
    // What Matrix gets is a spec annotation.
    let timeline = bridge.matrix.timeline(&bridge.room().await);
    let content: ReactionEventContent = serde_json::from_value(
        timeline
            .iter()
            .find(|e| e.sender == puppet("bob") && e.content.get("m.relates_to").is_some())
            .unwrap()
            .content
            .clone(),
    )
    .unwrap();
    assert_eq!(content.relates_to.event_id, event);
    assert_eq!(content.relates_to.key, THUMBS);

    assert_eq!(
        bridge.reactions_seen("bob", id).await,
        json!({THUMBS: {"count": 2, "me": true}, "🎉": {"count": 1, "me": false}})
    );
    assert_eq!(
        bridge.reactions_seen("alice", id).await,
        json!({THUMBS: {"count": 2, "me": true}, "🎉": {"count": 1, "me": true}})
    );
    let one = bridge
        .handle(
            Event::load("history-get-message")
                .by("bob", false)
                .path_param("message_id", id),
        )
        .await;
    assert_eq!(json_of(&one)["reactions"][THUMBS]["count"], 2);
}

#[tokio::test]
async fn removing_a_reaction_redacts_it_once_and_uncounts_it() {
    let bridge = Bridge::with_conversation().await;
    let (_, message) = bridge.posted("alice", json!({"body": "Hike?"})).await;
    let id = message["id"].as_str().unwrap();
    bridge.react("bob", id, THUMBS, false).await;
    bridge.react("alice", id, THUMBS, false).await;
    let bob_event = format!("${}", bridge.reactions_sent()[0].1);

    assert_eq!(bridge.react("bob", id, THUMBS, true).await.0, 204);
    let redactions = bridge.redactions();
    assert_eq!(redactions.len(), 1);
    assert!(
        format!("{:?}", redactions[0]).contains(&bob_event),
        "{redactions:?}"
    );
    assert_eq!(
        bridge.reactions_seen("bob", id).await,
        json!({THUMBS: {"count": 1, "me": false}})
    );
    assert_eq!(
        bridge.react("bob", id, THUMBS, true).await.0,
        204,
        "removing what is not there is done already"
    );
    assert_eq!(bridge.redactions().len(), 1, "no second redaction");
    // Reacting again is a new reaction, a new event.
    assert_eq!(bridge.react("bob", id, THUMBS, false).await.0, 204);
    let sent = bridge.reactions_sent();
    assert_eq!(sent.len(), 3);
    assert_ne!(sent[0].1, sent[2].1, "a new transaction id");
}

#[tokio::test]
async fn refusals_keys_too_long_deleted_or_pending_messages_and_strangers() {
    let bridge = Bridge::with_conversation().await;
    let (_, message) = bridge.posted("alice", json!({"body": "Hike?"})).await;
    let id = message["id"].as_str().unwrap();
    let long = "x".repeat(65);
    let (status, error) = bridge.react("bob", id, &long, false).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 64")
    );
    assert_eq!(bridge.react("bob", id, " ", false).await.0, 400);
    assert_eq!(bridge.react("bob", id, &"x".repeat(64), false).await.0, 204);
    assert_eq!(bridge.react("bob", "not-an-id", THUMBS, false).await.0, 400);
    assert_eq!(
        bridge
            .react("bob", &MessageId::new().to_string(), THUMBS, false)
            .await
            .0,
        404
    );
    assert_eq!(bridge.react("eve", id, THUMBS, false).await.0, 404);

    // Pending: not in Matrix yet.
    bridge.matrix.fail_next_send(Failure::Down);
    let (status, pending) = bridge.posted("alice", json!({"body": "later"})).await;
    assert_eq!(status, 202);
    let (status, error) = bridge
        .react("bob", pending["id"].as_str().unwrap(), THUMBS, false)
        .await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pending")
    );

    // Deleted: 409, and its reactions are gone from history.
    bridge.react("bob", id, THUMBS, false).await;
    let message_id: MessageId = id.parse().unwrap();
    assert_eq!(bridge.delete("alice", message_id).await.status(), 204);
    let (status, error) = bridge.react("bob", id, "🎉", false).await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deleted")
    );
    assert_eq!(bridge.reactions_seen("bob", id).await, Value::Null);
}

#[tokio::test]
async fn a_reaction_the_homeserver_cannot_take_is_sent_by_the_retry_function_once() {
    let bridge = Bridge::with_conversation().await;
    let (_, message) = bridge.posted("alice", json!({"body": "Hike?"})).await;
    let id = message["id"].as_str().unwrap();
    bridge.matrix.fail_next(Op::React, Failure::Down);
    assert_eq!(bridge.react("bob", id, THUMBS, false).await.0, 204);
    assert_eq!(
        bridge.reactions_seen("alice", id).await,
        json!({THUMBS: {"count": 1, "me": false}}),
        "accepted, so counted"
    );
    let jobs = bridge.queue.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].operation, Operation::React);
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 2)).await).is_empty());
    let sent = bridge.reactions_sent();
    assert_eq!(sent.len(), 2, "the failed attempt and the retry");
    assert_eq!(sent[0].1, sent[1].1, "the same transaction id");
    let visible = bridge
        .matrix
        .timeline(&bridge.room().await)
        .into_iter()
        .filter(|e| e.content.get("m.relates_to").is_some())
        .count();
    assert_eq!(visible, 1, "one reaction in the room");

    // A removal the homeserver cannot take is redacted on retry.
    bridge.matrix.fail_next(Op::Redact, Failure::Down);
    assert_eq!(bridge.react("bob", id, THUMBS, true).await.0, 204);
    assert_eq!(bridge.reactions_seen("alice", id).await, Value::Null);
    let jobs: Vec<_> = bridge
        .queue
        .jobs()
        .into_iter()
        .filter(|job| job.operation == Operation::Unreact)
        .collect();
    assert_eq!(jobs.len(), 1);
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    let redacted = bridge
        .matrix
        .timeline(&bridge.room().await)
        .into_iter()
        .filter(|e| e.sender == puppet("bob") && e.redacted_by.is_some())
        .count();
    assert_eq!(redacted, 1, "the reaction, redacted (its content gone)");
}
