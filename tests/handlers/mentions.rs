//! Mentions on the fakes: `m.mentions` with the puppets' ids built with
//! ruma's types, pills in the formatted body, and every refusal.

use ruma::events::room::message::{MessageType, RoomMessageEventContent};

use super::*;

/// A conversation with an owner (Alice), a moderator (Mo), a member (Bob)
/// and a member with no display name of its own (dan).
const ROOM: &str = "grp-mentions";

impl Bridge {
    async fn with_roles() -> Self {
        let bridge = Self::new(Fakes::new()).await;
        let create = Event::load("provision-create-conversation")
            .by("svc", true)
            .body(json!({"id": ROOM, "kind": "group", "members": [
                {"user_id": "alice", "role": "owner", "display_name": "Alice"},
                {"user_id": "mo", "role": "moderator", "display_name": "Mo"},
                {"user_id": "bob", "role": "member", "display_name": "Bob"},
                {"user_id": "dan", "role": "member"},
            ]}));
        let response = bridge.handle(create).await;
        assert_eq!(response.status(), 201, "{:?}", json_of(&response));
        bridge
    }

    /// A send to [`ROOM`] by `user` (a service token for `svc`).
    async fn mention(&self, user: &str, body: Value) -> (u16, Value) {
        let event = Event::load("send-message-plain")
            .by(user, user == "svc")
            .without_header("idempotency-key")
            .path_param("id", ROOM)
            .body(body);
        let response = self.call(send::NAME, event.request()).await;
        (response.status().as_u16(), json_of(&response))
    }

    /// The content of the message the fake sent last, as ruma reads it.
    fn last_content(&self) -> (Value, RoomMessageEventContent) {
        let Some(Call::Send { content, .. }) = self.matrix.sends().last().cloned() else {
            panic!("nothing sent")
        };
        let parsed = serde_json::from_value(content.clone()).unwrap();
        (content, parsed)
    }
}

fn formatted(content: &RoomMessageEventContent) -> String {
    match &content.msgtype {
        MessageType::Text(text) => text.formatted.as_ref().map(|f| f.body.clone()),
        MessageType::Notice(notice) => notice.formatted.as_ref().map(|f| f.body.clone()),
        _ => None,
    }
    .unwrap_or_default()
}

#[tokio::test]
async fn mentions_are_m_mentions_of_the_puppets_with_pills_in_markdown() {
    let bridge = Bridge::with_roles().await;
    let (status, view) = bridge
        .mention(
            "bob",
            json!({"body": "**Hi** @Alice and Mo", "format": "markdown",
                   "mentions": {"user_ids": ["alice", "mo", "alice"]}}),
        )
        .await;
    assert_eq!(status, 201, "{view}");
    let (raw, content) = bridge.last_content();
    let mentions = content.mentions.clone().expect("m.mentions");
    assert_eq!(
        mentions.user_ids.into_iter().collect::<Vec<_>>(),
        [puppet("alice"), puppet("mo")]
    );
    assert!(!mentions.room);
    let html = formatted(&content);
    assert_eq!(
        html,
        format!(
            "<p><strong>Hi</strong> <a href=\"{}\">Alice</a> and <a href=\"{}\">Mo</a></p>",
            puppet("alice").matrix_to_uri(),
            puppet("mo").matrix_to_uri()
        ),
        "{raw}"
    );
    assert_eq!(
        view["mentions"],
        json!({"user_ids": ["alice", "mo"], "room": false})
    );
    let id = view["id"].as_str().unwrap();
    let stored = bridge
        .handle(
            Event::load("history-get-message")
                .by("alice", false)
                .path_param("id", ROOM)
                .path_param("message_id", id),
        )
        .await;
    assert_eq!(json_of(&stored)["mentions"], view["mentions"]);
}

#[tokio::test]
async fn a_plain_message_gets_pills_only_where_a_name_appears() {
    let bridge = Bridge::with_roles().await;
    let (status, view) = bridge
        .mention(
            "bob",
            json!({"body": "dan & Alice:\nsee <this>", "mentions": {"user_ids": ["dan", "alice"]}}),
        )
        .await;
    assert_eq!(status, 201, "{view}");
    let (_, content) = bridge.last_content();
    assert_eq!(content.body(), "dan & Alice:\nsee <this>");
    assert_eq!(
        formatted(&content),
        format!(
            "<a href=\"{}\">dan</a> &amp; <a href=\"{}\">Alice</a>:<br>see &lt;this&gt;",
            puppet("dan").matrix_to_uri(),
            puppet("alice").matrix_to_uri()
        ),
        "a member without a display name goes by its user id"
    );
    assert_eq!(view["format"], "plain");

    // Nobody named: m.mentions all the same, and no formatted body.
    let (status, _) = bridge
        .mention(
            "bob",
            json!({"body": "look at this", "mentions": {"user_ids": ["alice"]}}),
        )
        .await;
    assert_eq!(status, 201);
    let (raw, content) = bridge.last_content();
    assert!(raw.get("formatted_body").is_none(), "{raw}");
    assert_eq!(content.mentions.unwrap().user_ids.len(), 1);
    // No mentions: no m.mentions either.
    bridge.mention("bob", json!({"body": "Alice"})).await;
    let (raw, _) = bridge.last_content();
    assert!(raw.get("m.mentions").is_none(), "{raw}");
}

#[tokio::test]
async fn room_mentions_are_for_moderators_owners_and_notices() {
    let bridge = Bridge::with_roles().await;
    let before = bridge.matrix.sends().len();
    let (status, error) = bridge
        .mention(
            "bob",
            json!({"body": "everyone!", "mentions": {"room": true}}),
        )
        .await;
    assert_eq!(status, 403, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("moderators and owners")
    );
    assert_eq!(bridge.matrix.sends().len(), before, "nothing sent");
    for user in ["mo", "alice"] {
        let (status, view) = bridge
            .mention(
                user,
                json!({"body": "everyone!", "mentions": {"room": true}}),
            )
            .await;
        assert_eq!(status, 201, "{user}: {view}");
        assert!(bridge.last_content().1.mentions.unwrap().room);
        assert_eq!(view["mentions"], json!({"user_ids": [], "room": true}));
    }
    let (status, view) = bridge
        .mention(
            "svc",
            json!({"body": "Starts in one hour", "msgtype": "notice", "mentions": {"room": true}}),
        )
        .await;
    assert_eq!(status, 201, "{view}");
    let (_, content) = bridge.last_content();
    assert!(matches!(content.msgtype, MessageType::Notice(_)));
    assert!(content.mentions.unwrap().room);
}

#[tokio::test]
async fn mentioning_a_non_member_or_a_malformed_list_is_refused() {
    let bridge = Bridge::with_roles().await;
    bridge.provision_other("grp-elsewhere", "eve").await;
    let before = bridge.matrix.sends().len();
    let refused = [
        json!({"body": "hi", "mentions": {"user_ids": ["eve"]}}),
        json!({"body": "hi", "mentions": {"user_ids": ["nobody"]}}),
        json!({"body": "hi", "mentions": {"user_ids": ["bad id with spaces"]}}),
        json!({"body": "hi", "mentions": {"users": ["alice"]}}),
        json!({"body": "hi", "mentions": {"user_ids": "alice"}}),
        json!({"body": "hi", "mentions": {"user_ids": vec!["alice"; 101]}}),
    ];
    for (n, body) in refused.into_iter().enumerate() {
        let (status, error) = bridge.mention("bob", body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        // The bridge's own checks name the field; malformed JSON says
        // what is wrong with it.
        let named = n < 2 || n == 5;
        assert!(!named || message.contains("mentions"), "{body}: {error}");
    }
    let (_, error) = bridge
        .mention(
            "bob",
            json!({"body": "hi", "mentions": {"user_ids": ["eve"]}}),
        )
        .await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'eve' is not a member")
    );
    // A stranger learns nothing about the members.
    let (status, _) = bridge
        .mention(
            "eve",
            json!({"body": "hi", "mentions": {"user_ids": ["alice"]}}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(bridge.matrix.sends().len(), before, "nothing sent");
}

#[tokio::test]
async fn an_edit_keeps_the_mentions_and_notifies_nobody_again() {
    let bridge = Bridge::with_roles().await;
    let (_, view) = bridge
        .mention(
            "alice",
            json!({"body": "Bob, hi", "mentions": {"user_ids": ["bob"]}}),
        )
        .await;
    let id: MessageId = view["id"].as_str().unwrap().parse().unwrap();
    let edit = Event::load("edit-message")
        .by("alice", false)
        .without_header("idempotency-key")
        .path_param("id", ROOM)
        .path_param("message_id", &id.to_string())
        .body(json!({"body": "Bob, hello"}));
    let response = bridge.call("edit", edit.request()).await;
    assert_eq!(response.status(), 200, "{:?}", json_of(&response));
    let (raw, _) = bridge.last_content();
    assert_eq!(
        raw["m.new_content"]["m.mentions"],
        json!({"user_ids": [puppet("bob")]})
    );
    assert_eq!(raw["m.mentions"], json!({}), "{raw}");
    assert_eq!(json_of(&response)["mentions"]["user_ids"], json!(["bob"]));
}
