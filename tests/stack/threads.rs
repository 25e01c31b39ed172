//! Threads, mentions, reactions and notices through the front door, as a
//! plain Matrix user in the room sees them, and back.

use serde_json::{Value, json};

use crate::client::{Api, MatrixUser, token, unique};

/// A conversation with alice (owner), bob (member) and carol, a plain
/// Matrix user who joined; returns its id and room.
async fn conversation(api: &Api, alice: &str, bob: &str, carol: &MatrixUser) -> (String, String) {
    let id = unique("thr");
    let created = api
        .provision(&json!({
            "id": id, "kind": "event",
            "members": [
                {"user_id": alice, "role": "owner", "display_name": "Alice"},
                {"user_id": bob, "role": "member", "display_name": "Bob"},
                {"matrix_user_id": carol.user_id},
            ],
        }))
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room).await;
    (id, room)
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_notice_reaches_a_plain_matrix_user_as_an_m_notice_from_the_bot() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let (id, room) = conversation(&api, &alice, &bob, &carol).await;
    let path = format!("/v1/conversations/{id}/messages");
    let notice = json!({"body": "The event starts in one hour", "msgtype": "notice"});
    let sent = api
        .json_with(
            "POST",
            &path,
            &token("svc", true),
            &[("idempotency-key", "notice-1")],
            &notice,
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let again = api
        .json_with(
            "POST",
            &path,
            &token("svc", true),
            &[("idempotency-key", "notice-1")],
            &notice,
        )
        .await;
    assert_eq!(
        again.body["id"], sent.body["id"],
        "the replay is the same message"
    );
    let refused = api
        .json("POST", &path, &token(&alice, false), &notice)
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");

    let creator = carol.events(&room, "m.room.create").await[0]["sender"].clone();
    let notices: Vec<Value> = carol
        .messages(&room)
        .await
        .into_iter()
        .filter(|event| event["content"]["msgtype"] == "m.notice")
        .collect();
    assert_eq!(notices.len(), 1, "one notice for two requests: {notices:?}");
    assert_eq!(notices[0]["sender"], creator, "from the bridge's bot");
    assert_eq!(
        notices[0]["content"]["body"],
        "The event starts in one hour"
    );
    assert_eq!(notices[0]["event_id"], sent.body["event_id"]);

    let message = api
        .get(
            &format!("{path}/{}", sent.body["id"].as_str().unwrap()),
            &token(&alice, false),
        )
        .await;
    assert_eq!(message.body["msgtype"], "notice");
    assert_eq!(message.body["sender"]["matrix_user_id"], creator);
}
