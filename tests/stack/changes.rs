//! Edits and deletes through the front door, as a plain Matrix user in the
//! room sees them: the edit applied to the original event, the redaction,
//! one of each however often the request is repeated.

use serde_json::{Value, json};

use crate::client::{Api, MatrixUser, token, unique};

/// A conversation with alice (owner), bob (member) and carol, a plain
/// Matrix user who joined; returns its id and room.
async fn conversation(api: &Api, alice: &str, bob: &str, carol: &MatrixUser) -> (String, String) {
    let id = unique("chg");
    let created = api
        .provision(&json!({
            "id": id, "kind": "group",
            "members": [
                {"user_id": alice, "role": "owner"},
                {"user_id": bob, "role": "member"},
                {"matrix_user_id": carol.user_id},
            ],
        }))
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room).await;
    (id, room)
}

async fn send(api: &Api, id: &str, user: &str, body: &str) -> Value {
    let sent = api
        .json(
            "POST",
            &format!("/v1/conversations/{id}/messages"),
            &token(user, false),
            &json!({"body": body}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    sent.body
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn an_edit_reaches_a_plain_matrix_user_as_a_replacement_of_the_original() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let (id, room) = conversation(&api, &alice, &bob, &carol).await;
    let sent = send(&api, &id, &alice, "See you at 7").await;
    let path = format!(
        "/v1/conversations/{id}/messages/{}",
        sent["id"].as_str().unwrap()
    );
    let original = sent["event_id"].as_str().unwrap();

    let edit = |body: &'static str, user: String, key: &'static str| {
        let (api, path) = (&api, &path);
        async move {
            api.json_with(
                "PUT",
                path,
                &token(&user, false),
                &[("idempotency-key", key)],
                &json!({"body": body, "format": "markdown"}),
            )
            .await
        }
    };
    let first = edit("See you at **8**", alice.clone(), "e1").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body["edited_at"].is_string());
    // The same request again is not a second edit.
    assert_eq!(
        edit("See you at **8**", alice.clone(), "e1").await.status,
        200
    );
    assert_eq!(edit("See you at 9", alice.clone(), "e1").await.status, 409);
    assert_eq!(edit("hijack", bob.clone(), "b1").await.status, 403);
    assert_eq!(edit("stranger", unique("eve"), "x1").await.status, 404);

    // Carol sees the original replaced: the server's aggregation names the
    // one edit, which carries the new text and the fallback.
    let replacements: Vec<Value> = carol
        .messages(&room)
        .await
        .into_iter()
        .filter(|event| event["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .collect();
    assert_eq!(replacements.len(), 1, "{replacements:?}");
    let replacement = &replacements[0];
    assert_eq!(replacement["content"]["m.relates_to"]["event_id"], original);
    assert_eq!(replacement["content"]["body"], "* See you at **8**");
    assert_eq!(
        replacement["content"]["m.new_content"]["body"],
        "See you at **8**"
    );
    assert_eq!(
        replacement["content"]["m.new_content"]["formatted_body"],
        "<p>See you at <strong>8</strong></p>"
    );
    let seen = carol.event(&room, original).await;
    assert_eq!(
        seen["unsigned"]["m.relations"]["m.replace"]["event_id"], replacement["event_id"],
        "{seen}"
    );

    let history = api.get(&path, &token(&alice, false)).await;
    assert_eq!(history.body["body"], "See you at **8**");
    assert!(history.body["edited_at"].is_string());
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_delete_is_one_redaction_a_plain_matrix_user_sees() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let (id, room) = conversation(&api, &alice, &bob, &carol).await;
    let own = send(&api, &id, &bob, "oops, wrong group").await;
    let others = send(&api, &id, &alice, "the plan").await;
    let delete = |user: String, message: &Value, body: Option<Value>| {
        let path = format!(
            "/v1/conversations/{id}/messages/{}",
            message["id"].as_str().unwrap()
        );
        let api = &api;
        async move {
            match body {
                Some(body) => api.json("DELETE", &path, &token(&user, false), &body).await,
                None => {
                    api.call("DELETE", &path, Some(&token(&user, false)), &[], None)
                        .await
                }
            }
        }
    };
    assert_eq!(
        delete(bob.clone(), &others, None).await.status,
        403,
        "a member, not the sender"
    );
    let reason = json!({"reason": "posted in the wrong group"});
    assert_eq!(
        delete(bob.clone(), &own, Some(reason.clone())).await.status,
        204
    );
    assert_eq!(
        delete(bob.clone(), &own, Some(reason)).await.status,
        204,
        "again"
    );
    assert_eq!(delete(alice.clone(), &others, None).await.status, 204);

    let redactions = carol.events(&room, "m.room.redaction").await;
    assert_eq!(redactions.len(), 2, "one per message: {redactions:?}");
    let by_bob = redactions
        .iter()
        .find(|r| r["redacts"] == own["event_id"] || r["content"]["redacts"] == own["event_id"])
        .expect("bob's message redacted");
    assert_eq!(by_bob["content"]["reason"], "posted in the wrong group");
    let seen = carol.event(&room, own["event_id"].as_str().unwrap()).await;
    assert!(seen["content"].as_object().unwrap().is_empty(), "{seen}");

    let path = format!(
        "/v1/conversations/{id}/messages/{}",
        own["id"].as_str().unwrap()
    );
    let history = api.get(&path, &token(&alice, false)).await;
    assert_eq!(history.body["status"], "deleted");
    assert!(history.body["deleted_at"].is_string());
    assert!(history.body.get("body").is_none(), "{:?}", history.body);
}
