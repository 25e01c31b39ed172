//! The appservice webhook's protocol on the fakes, no stack: transaction
//! bodies Synapse pushed (recorded in `events/synapse/`, ids normalised to
//! the fakes' rooms and users) handed to the `transactions` function as API
//! Gateway delivers them (`events/transactions-push.json`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bridge::fakes::Fakes;
use bridge::function::{Handler, HttpFunction};
use bridge::handlers::registry;
use bridge::handlers::transactions::Transaction;
use bridge::ids::{AppUserId, ConversationId};
use bridge::inbound::{EventKind, InboundEvent, Membership};
use bridge::matrix::MESSAGE_ID_KEY;
use bridge::matrix::fake::{Call, Failure};
use bridge::model::{Message, MessageStatus, MsgType, Origin};
use bridge::store::prelude::*;
use lambda_http::{Body, Response};
use ruma::{OwnedUserId, owned_room_id, room_id};
use serde_json::{Value, json};

/// Alice's message in the recorded room, which replies and receipts name.
const WELCOME: &str = "$OD5qj_u8ef6jbyEHiYeLnbv1RIHpPUelZbqUZVcHM98";

fn fixture(name: &str) -> String {
    match name {
        "echo-and-text" => include_str!("../events/synapse/echo-and-text.json"),
        "formatted-text" => include_str!("../events/synapse/formatted-text.json"),
        "reply" => include_str!("../events/synapse/reply.json"),
        "image" => include_str!("../events/synapse/image.json"),
        "edit" => include_str!("../events/synapse/edit.json"),
        "redaction" => include_str!("../events/synapse/redaction.json"),
        "join-leave-typing-receipt" => {
            include_str!("../events/synapse/join-leave-typing-receipt.json")
        }
        "kick-of-a-puppet" => include_str!("../events/synapse/kick-of-a-puppet.json"),
        "room-setup-by-the-bot" => include_str!("../events/synapse/room-setup-by-the-bot.json"),
        "puppet-join" => include_str!("../events/synapse/puppet-join.json"),
        "notice-and-presence" => include_str!("../events/synapse/notice-and-presence.json"),
        "emote-reaction-topic" => include_str!("../events/synapse/emote-reaction-topic.json"),
        "file-rename-ban" => include_str!("../events/synapse/file-rename-ban.json"),
        other => panic!("no fixture {other}"),
    }
    .to_owned()
}

fn user(name: &str) -> OwnedUserId {
    OwnedUserId::try_from(format!("@{name}:localhost")).unwrap()
}

fn conversation(id: &str) -> ConversationId {
    ConversationId::parse(id).unwrap()
}

fn json_of(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null)
}

/// How a request carries the `hs_token`.
enum Token<'a> {
    Bearer(&'a str),
    Query(&'a str),
    Both(&'a str, &'a str),
    None,
}

/// Every function of the bridge on one set of fakes, with two conversations:
/// `grp-42` in `!room1:localhost` (alice, owner; bob; carol, a Matrix
/// moderator; dave, a Matrix user) and `grp-43` in `!room2:localhost`
/// (alice, owner; bob).
struct Hook {
    fakes: Fakes,
    functions: HashMap<&'static str, Box<dyn HttpFunction>>,
}

impl Hook {
    async fn new() -> Self {
        let fakes = Fakes::new();
        let mut functions = HashMap::new();
        for function in registry::<Fakes>() {
            if let Handler::Http(handler) = function.handler(&fakes).await.unwrap() {
                functions.insert(function.name, handler);
            }
        }
        let hook = Self { fakes, functions };
        hook.provision(json!({
            "id": "grp-42", "kind": "group",
            "members": [
                {"user_id": "alice", "role": "owner", "display_name": "Alice"},
                {"user_id": "bob", "role": "member"},
                {"matrix_user_id": "@carol:localhost", "role": "moderator"},
                {"matrix_user_id": "@dave:localhost"},
            ],
        }))
        .await;
        hook.provision(json!({
            "id": "grp-43", "kind": "group",
            "members": [{"user_id": "alice", "role": "owner"}, {"user_id": "bob", "role": "member"}],
        }))
        .await;
        hook
    }

    async fn provision(&self, body: Value) {
        let mut event: Value =
            serde_json::from_str(include_str!("../events/provision-create-conversation.json"))
                .unwrap();
        let claims = &mut event["requestContext"]["authorizer"]["jwt"]["claims"];
        claims["sub"] = json!("svc");
        claims["scope"] = json!("bridge.admin");
        event["body"] = json!(body.to_string());
        let response = self.call("provision", event).await;
        assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    }

    async fn call(&self, function: &str, event: Value) -> Response<Body> {
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        self.functions[function].call(request).await
    }

    /// Sends a message through the API as `user` in `grp-42`.
    async fn send(&self, user: &str, body: &str) -> Response<Body> {
        let mut event: Value =
            serde_json::from_str(include_str!("../events/send-message-plain.json")).unwrap();
        event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(user);
        event["headers"]
            .as_object_mut()
            .unwrap()
            .remove("idempotency-key");
        event["body"] = json!(json!({"body": body}).to_string());
        self.call("send", event).await
    }

    /// A provisioning member change (`PUT` with `body`, or `DELETE`) by the
    /// application's service account.
    async fn provision_member(&self, id: &str, user: &str, body: Option<Value>) -> Response<Body> {
        let mut event: Value = match body {
            Some(_) => serde_json::from_str(include_str!("../events/provision-put-member.json")),
            None => serde_json::from_str(include_str!("../events/provision-remove-member.json")),
        }
        .unwrap();
        let claims = &mut event["requestContext"]["authorizer"]["jwt"]["claims"];
        claims["sub"] = json!("svc");
        claims["scope"] = json!("bridge.admin");
        let path = format!("/v1/conversations/{id}/members/{user}");
        event["pathParameters"] = json!({"id": id, "user_id": user});
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        if let Some(body) = body {
            event["body"] = json!(body.to_string());
        }
        self.call("provision", event).await
    }

    /// An appservice request as API Gateway delivers it.
    async fn appservice(
        &self,
        method: &str,
        route_key: &str,
        path: &str,
        params: Value,
        token: Token<'_>,
        body: &str,
    ) -> Response<Body> {
        let mut event: Value =
            serde_json::from_str(include_str!("../events/transactions-push.json")).unwrap();
        event["routeKey"] = json!(route_key);
        event["requestContext"]["routeKey"] = json!(route_key);
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        event["requestContext"]["http"]["method"] = json!(method);
        event["pathParameters"] = params;
        event["body"] = json!(body);
        let headers = event["headers"].as_object_mut().unwrap();
        headers.remove("content-length");
        headers.remove("authorization");
        let query = match token {
            Token::Bearer(token) => {
                headers.insert("authorization".into(), json!(format!("Bearer {token}")));
                None
            }
            Token::Query(token) => Some(token),
            Token::Both(bearer, query) => {
                headers.insert("authorization".into(), json!(format!("Bearer {bearer}")));
                Some(query)
            }
            Token::None => None,
        };
        if let Some(token) = query {
            event["rawQueryString"] = json!(format!("access_token={token}"));
            event["queryStringParameters"] = json!({"access_token": token});
        }
        self.call("transactions", event).await
    }

    /// Pushes transaction `txn` with `body`, with the right token.
    async fn push(&self, txn: &str, body: &str) -> Response<Body> {
        self.push_with(txn, body, Token::Bearer(Fakes::HS_TOKEN))
            .await
    }

    async fn push_with(&self, txn: &str, body: &str, token: Token<'_>) -> Response<Body> {
        self.appservice(
            "PUT",
            "PUT /_matrix/app/v1/transactions/{txnId}",
            &format!("/_matrix/app/v1/transactions/{txn}"),
            json!({"txnId": txn}),
            token,
            body,
        )
        .await
    }

    /// Pushes and expects `200 {}`.
    async fn pushed(&self, txn: &str, body: &str) {
        let response = self.push(txn, body).await;
        assert_eq!(response.status(), 200, "{:?}", json_of(&response));
        assert_eq!(json_of(&response), json!({}));
    }

    fn published(&self) -> Vec<InboundEvent> {
        self.fakes.inbound.events()
    }

    fn published_of(&self, kind: EventKind) -> Vec<InboundEvent> {
        self.published()
            .into_iter()
            .filter(|event| event.kind == kind)
            .collect()
    }

    /// A conversation's messages, oldest first.
    async fn history(&self, id: &str) -> Vec<Message> {
        let mut messages = self
            .fakes
            .store
            .messages(&conversation(id), 1000, None)
            .await
            .unwrap()
            .messages;
        messages.reverse();
        messages
    }

    async fn by_event(&self, id: &str, event_id: &str) -> Option<Message> {
        self.history(id).await.into_iter().find(|message| {
            message
                .event_id
                .as_ref()
                .is_some_and(|e| e.as_str() == event_id)
        })
    }

    /// Alice's message in `grp-42`, sent through the API; its event id.
    async fn welcome(&self) -> String {
        let sent = self.send("alice", "Welcome, everyone").await;
        assert_eq!(sent.status(), 201);
        json_of(&sent)["event_id"].as_str().unwrap().to_owned()
    }
}

/// A fixture where alice's recorded message is `welcome`.
fn with_welcome(name: &str, welcome: &str) -> String {
    fixture(name).replace(WELCOME, welcome)
}

#[tokio::test]
async fn a_message_from_matrix_is_stored_published_and_acknowledged() {
    let hook = Hook::new().await;
    hook.pushed("61", &fixture("formatted-text")).await;

    let messages = hook.history("grp-42").await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.origin, Origin::Matrix);
    assert_eq!(message.status, MessageStatus::Sent);
    assert_eq!(message.sender.matrix_user_id, user("carol"));
    assert_eq!(message.sender.user_id, None);
    assert_eq!(message.body, "**bold** move");
    assert_eq!(message.html.as_deref(), Some("<strong>bold</strong> move"));

    let published = hook.published();
    assert_eq!(published.len(), 1);
    let event = &published[0];
    assert_eq!(event.kind, EventKind::MessageCreated);
    assert_eq!(event.conversation_id, conversation("grp-42"));
    assert_eq!(event.message_id, Some(message.id));
    assert_eq!(event.event_id, message.event_id);
    assert_eq!(event.html.as_deref(), Some("<strong>bold</strong> move"));
    assert_eq!(event.sender.as_ref().unwrap().matrix_user_id, user("carol"));
    // As the application reads it.
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(json["type"], "message.created");
    assert_eq!(json["sender"]["matrix_user_id"], "@carol:localhost");
    assert!(json["occurred_at"].is_string());
}

#[tokio::test]
async fn a_repeated_transaction_changes_nothing() {
    let hook = Hook::new().await;
    let welcome = hook.welcome().await;
    let body = with_welcome("join-leave-typing-receipt", &welcome);
    hook.pushed("66", &body).await;
    let first = hook.published();
    let members = hook
        .fakes
        .store
        .conversation_with_members(&conversation("grp-42"))
        .await
        .unwrap();
    assert_eq!(first.len(), 4, "{first:#?}");

    // The same bytes again.
    hook.pushed("66", &body).await;
    // Synapse's own retry: re-serialised (`age` moved on) and without the
    // ephemeral events.
    let mut retry: Value = serde_json::from_str(&body).unwrap();
    for event in retry["events"].as_array_mut().unwrap() {
        event["unsigned"]["age"] = json!(9000);
        event["age"] = json!(9000);
    }
    retry["ephemeral"] = json!([]);
    hook.pushed("66", &retry.to_string()).await;

    assert_eq!(hook.published(), first, "no second publication");
    assert_eq!(
        hook.fakes
            .store
            .conversation_with_members(&conversation("grp-42"))
            .await
            .unwrap(),
        members,
        "no second store"
    );
}

#[tokio::test]
async fn a_reused_transaction_id_with_other_events_is_processed() {
    let hook = Hook::new().await;
    let welcome = hook.welcome().await;
    hook.pushed("7", &fixture("formatted-text")).await;
    // The homeserver was reset and counts from the start again.
    hook.pushed("7", &with_welcome("reply", &welcome)).await;
    let created = hook.published_of(EventKind::MessageCreated);
    assert_eq!(created.len(), 2, "{created:#?}");
    let reply = hook
        .by_event("grp-42", "$2_V607mPSSxn_hq5d53z_mPwuXjWi-U5SQEDcoFyVc8")
        .await
        .unwrap();
    assert_eq!(reply.body, "thanks!");
    let welcome_message = hook.by_event("grp-42", &welcome).await.unwrap();
    assert_eq!(reply.reply_to, Some(welcome_message.id));
    assert_eq!(created[1].reply_to, Some(welcome_message.id));
}

#[tokio::test]
async fn a_hundred_events_in_one_transaction_are_stored_and_published_in_order() {
    let hook = Hook::new().await;
    let body =
        bridge_dev::bench::synthetic_transaction("!room1:localhost", "@carol:localhost", 100, "h");
    hook.pushed("100", &body.to_string()).await;

    let published = hook.published();
    assert_eq!(published.len(), 100);
    let sent: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_id"].as_str().unwrap())
        .collect();
    let order: Vec<&str> = published
        .iter()
        .map(|event| event.event_id.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(order, sent, "in order");
    let kinds = |kind| published.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        (
            kinds(EventKind::MessageCreated),
            kinds(EventKind::MessageEdited),
            kinds(EventKind::MessageDeleted)
        ),
        (86, 10, 4)
    );
    let messages = hook.history("grp-42").await;
    assert_eq!(messages.len(), 86);
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.status == MessageStatus::Deleted)
            .count(),
        4
    );
    let edited = messages.iter().filter(|m| m.edited_at.is_some()).count();
    assert_eq!(edited, 10);
    assert!(
        messages
            .iter()
            .all(|m| m.sender.display_name.is_none() || m.origin == Origin::Matrix)
    );
    // The messages sort as they were sent.
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m.event_id.as_ref().unwrap().as_str())
        .collect();
    let mut in_order: Vec<&str> = sent.iter().copied().filter(|id| ids.contains(id)).collect();
    in_order.dedup();
    assert_eq!(ids, in_order);
}

#[tokio::test]
async fn the_hs_token_is_required_and_checked_in_either_place() {
    let hook = Hook::new().await;
    let body = fixture("formatted-text");
    let missing = hook.push_with("1", &body, Token::None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(json_of(&missing)["errcode"], "M_MISSING_TOKEN");
    let wrong = hook.push_with("1", &body, Token::Bearer("nope")).await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(json_of(&wrong)["errcode"], "M_FORBIDDEN");
    let mismatch = hook
        .push_with("1", &body, Token::Both(Fakes::HS_TOKEN, "nope"))
        .await;
    assert_eq!(mismatch.status(), 403);
    let empty = hook.push_with("1", &body, Token::Bearer("")).await;
    assert_eq!(empty.status(), 403);
    for refused in [&missing, &wrong, &mismatch, &empty] {
        let text = String::from_utf8_lossy(refused.body().as_ref()).into_owned();
        assert!(!text.contains(Fakes::HS_TOKEN), "{text}");
    }
    assert!(hook.published().is_empty(), "nothing done when refused");

    // The legacy query parameter, alone or agreeing with the header.
    let legacy = hook
        .push_with("1", &body, Token::Query(Fakes::HS_TOKEN))
        .await;
    assert_eq!(legacy.status(), 200, "{:?}", json_of(&legacy));
    let both = hook
        .push_with(
            "2",
            &fixture("image"),
            Token::Both(Fakes::HS_TOKEN, Fakes::HS_TOKEN),
        )
        .await;
    assert_eq!(both.status(), 200);
    assert_eq!(hook.published().len(), 2);
}

#[tokio::test]
async fn garbage_is_refused_in_matrix_words_and_a_bad_event_is_skipped_with_its_reason() {
    let hook = Hook::new().await;
    for (body, errcode) in [
        ("not json", "M_NOT_JSON"),
        ("{\"events\": ", "M_NOT_JSON"),
        ("{\"events\": 5}", "M_BAD_JSON"),
        ("[]", "M_BAD_JSON"),
        ("{}", "M_BAD_JSON"),
    ] {
        let response = hook.push("1", body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(json_of(&response)["errcode"], errcode, "{body}");
    }
    let long = "x".repeat(300);
    let response = hook.push(&long, "{\"events\": []}").await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(&response)["errcode"], "M_INVALID_PARAM");

    // One good event between two bad ones: it goes through, they are
    // recorded with why.
    let mut body: Value = serde_json::from_str(&fixture("formatted-text")).unwrap();
    let good = body["events"][0].clone();
    let mut no_body = good.clone();
    no_body["content"] = json!({"msgtype": "m.text"});
    no_body["event_id"] = json!("$no-body");
    let not_an_event = json!({"what": "is this"});
    body["events"] = json!([no_body, good, not_an_event]);
    let body = body.to_string();
    hook.pushed("3", &body).await;
    assert_eq!(hook.published().len(), 1);
    let transaction = Transaction::parse("3", body.as_bytes()).unwrap();
    let record = hook
        .fakes
        .store
        .transaction_context("3", &transaction.fingerprint, &[], &[])
        .await
        .unwrap()
        .record
        .expect("the transaction is recorded");
    assert_eq!(record.published, 1);
    let skipped: Vec<(u32, Option<&str>)> = record
        .skipped
        .iter()
        .map(|s| (s.index, s.event_id.as_deref()))
        .collect();
    assert_eq!(skipped, [(0, Some("$no-body")), (2, None)]);
    assert!(
        record.skipped[0].reason.contains("body"),
        "{:?}",
        record.skipped
    );
}

#[tokio::test]
async fn unknown_event_types_are_ignored_and_notices_and_emotes_kept() {
    let hook = Hook::new().await;
    hook.pushed("39", &fixture("room-setup-by-the-bot")).await;
    assert!(hook.published().is_empty());
    // A notice, and presence (ephemeral).
    hook.pushed("79", &fixture("notice-and-presence")).await;
    // An emote, a reaction and a topic change: only the emote is passed on.
    hook.pushed("80", &fixture("emote-reaction-topic")).await;
    let created = hook.published_of(EventKind::MessageCreated);
    let kinds: Vec<Option<MsgType>> = created.iter().map(|e| e.msgtype).collect();
    assert_eq!(kinds, [Some(MsgType::Notice), Some(MsgType::Emote)]);
    assert_eq!(hook.published().len(), 2);
    let messages = hook.history("grp-42").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].msgtype, Some(MsgType::Emote));
    assert_eq!(messages[1].body, "waves");
}

#[tokio::test]
async fn our_own_events_are_echoes_that_confirm_delivery_never_new_messages() {
    let hook = Hook::new().await;
    // A send whose answer was lost: pending, queued for a retry.
    hook.fakes.matrix.fail_next_send(Failure::AnswerLost);
    let sent = hook.send("alice", "did it land?").await;
    assert_eq!(sent.status(), 202);
    let message_id = json_of(&sent)["id"].as_str().unwrap().to_owned();
    let landed = hook
        .fakes
        .matrix
        .timeline(room_id!("!room1:localhost"))
        .pop()
        .unwrap();
    // Its echo, as Synapse pushes it, with carol's message after it.
    let mut body: Value = serde_json::from_str(&fixture("echo-and-text")).unwrap();
    let echo = &mut body["events"][0];
    echo["room_id"] = json!("!room1:localhost");
    echo["event_id"] = json!(landed.event_id);
    echo["content"][MESSAGE_ID_KEY] = json!(message_id);
    hook.pushed("60", &body.to_string()).await;

    let messages = hook.history("grp-42").await;
    assert_eq!(
        messages.len(),
        2,
        "the echo is not a message: {messages:#?}"
    );
    let ours = messages.iter().find(|m| m.origin == Origin::App).unwrap();
    assert_eq!(ours.status, MessageStatus::Sent);
    assert_eq!(ours.event_id.as_ref(), Some(&landed.event_id));
    let outbox = hook
        .fakes
        .store
        .conversation(&conversation("grp-42"))
        .await
        .unwrap()
        .unwrap()
        .outbox;
    assert_eq!(outbox, 0, "the delivered message left the outbox");
    let created = hook.published_of(EventKind::MessageCreated);
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].sender.as_ref().unwrap().matrix_user_id,
        user("carol")
    );

    // The recorded one: the echo of a message this bridge does not know,
    // and the puppets' own joins, are nothing to pass on.
    let again = Hook::new().await;
    again.pushed("60", &fixture("echo-and-text")).await;
    again.pushed("54", &fixture("puppet-join")).await;
    assert_eq!(again.published().len(), 1, "carol's message only");
    assert_eq!(again.history("grp-43").await.len(), 0);
}

#[tokio::test]
async fn a_kick_of_a_puppet_by_a_matrix_moderator_stands() {
    let hook = Hook::new().await;
    let room = owned_room_id!("!room2:localhost");
    let bob = user("app_bob");
    // What Synapse did, then told the webhook.
    hook.fakes
        .matrix
        .moderator_kick(&room, &bob, &user("carol"), Some("spamming"));
    hook.pushed("55", &fixture("kick-of-a-puppet")).await;

    let left = hook.published_of(EventKind::MemberLeft);
    assert_eq!(left.len(), 1);
    let left = &left[0];
    assert_eq!(left.conversation_id, conversation("grp-43"));
    let sender = left.sender.as_ref().unwrap();
    assert_eq!(sender.user_id, Some(AppUserId::parse("bob").unwrap()));
    assert_eq!(left.actor.as_ref().unwrap().matrix_user_id, user("carol"));
    assert_eq!(left.reason.as_deref(), Some("spamming"));
    assert_eq!(left.membership, Some(Membership::Leave));
    let member = hook
        .fakes
        .store
        .member(&conversation("grp-43"), &bob)
        .await
        .unwrap()
        .unwrap();
    assert!(!member.joined);
    let removal = member.removed.unwrap();
    assert_eq!(removal.by, user("carol"));
    assert!(!removal.banned);

    // Bob's sends are refused, clearly; nobody puts him back.
    let mut event: Value =
        serde_json::from_str(include_str!("../events/send-message-plain.json")).unwrap();
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!("bob");
    event["pathParameters"]["id"] = json!("grp-43");
    event["rawPath"] = json!("/v1/conversations/grp-43/messages");
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    let calls = hook.fakes.matrix.calls().len();
    let refused = hook.call("send", event).await;
    assert_eq!(refused.status(), 403);
    let message = json_of(&refused)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("kicked")
            && message.contains("@carol:localhost")
            && message.contains("spamming"),
        "{message}"
    );
    assert_eq!(
        hook.fakes.matrix.calls().len(),
        calls,
        "no call to Matrix at all"
    );
}

#[tokio::test]
async fn a_puppet_kicked_before_the_webhook_heard_of_it_is_not_invited_back() {
    let hook = Hook::new().await;
    let room = owned_room_id!("!room1:localhost");
    let bob = user("app_bob");
    // Bob's puppet joins when it first sends.
    assert_eq!(hook.send("bob", "hello").await.status(), 201);
    hook.fakes
        .matrix
        .moderator_ban(&room, &bob, &user("carol"), Some("trolling"));
    let refused = hook.send("bob", "let me back in").await;
    assert_eq!(refused.status(), 403, "{:?}", json_of(&refused));
    assert!(
        json_of(&refused)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("banned")
    );
    assert!(
        !hook
            .fakes
            .matrix
            .calls()
            .iter()
            .any(|call| matches!(call, Call::Invite(_, invited) if *invited == bob)),
        "not invited back"
    );
    let failed = hook.history("grp-42").await;
    assert_eq!(failed.last().unwrap().status, MessageStatus::Failed);

    // A puppet that lost its membership without a moderator is put back.
    let again = Hook::new().await;
    assert_eq!(again.send("bob", "hello").await.status(), 201);
    again.fakes.matrix.remove(&room, &bob);
    assert_eq!(again.send("bob", "back again").await.status(), 201);
    assert!(
        again
            .fakes
            .matrix
            .calls()
            .contains(&Call::Invite(room.clone(), bob.clone()))
    );
}

/// Whether the fake homeserver was asked to invite `user`.
fn invited(hook: &Hook, user: &OwnedUserId) -> bool {
    hook.fakes
        .matrix
        .calls()
        .iter()
        .any(|call| matches!(call, Call::Invite(_, invited) if invited == user))
}

#[tokio::test]
async fn a_member_a_matrix_moderator_kicked_comes_back_only_when_the_application_says_rejoin() {
    let hook = Hook::new().await;
    let room = owned_room_id!("!room2:localhost");
    let bob = user("app_bob");
    hook.fakes
        .matrix
        .moderator_kick(&room, &bob, &user("carol"), Some("spamming"));
    hook.pushed("55", &fixture("kick-of-a-puppet")).await;

    // A role change does not put him back: 409, and nothing changes.
    let refused = hook
        .provision_member("grp-43", "bob", Some(json!({"role": "moderator"})))
        .await;
    assert_eq!(refused.status(), 409, "{:?}", json_of(&refused));
    let message = json_of(&refused)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("kicked")
            && message.contains("@carol:localhost")
            && message.contains("\"rejoin\": true"),
        "{message}"
    );
    assert!(!invited(&hook, &bob), "not invited back");
    let grp43 = conversation("grp-43");
    let member = hook
        .fakes
        .store
        .member(&grp43, &bob)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(member.role, bridge::model::Role::Member, "unchanged");
    assert!(member.removed.is_some() && !member.joined);

    // Removing him and adding him again is no way around it either.
    let removed = hook.provision_member("grp-43", "bob", None).await;
    assert_eq!(removed.status(), 204, "{:?}", json_of(&removed));
    let again = hook
        .provision_member("grp-43", "bob", Some(json!({"role": "member"})))
        .await;
    assert_eq!(again.status(), 409, "{:?}", json_of(&again));
    assert!(!invited(&hook, &bob), "still not invited back");
    assert_eq!(hook.fakes.store.member(&grp43, &bob).await.unwrap(), None);

    // The application's explicit decision puts him back.
    let back = hook
        .provision_member(
            "grp-43",
            "bob",
            Some(json!({"role": "moderator", "rejoin": true})),
        )
        .await;
    assert_eq!(back.status(), 200, "{:?}", json_of(&back));
    assert!(json_of(&back).get("removed").is_none());
    assert_eq!(
        hook.fakes.matrix.membership_of(&room, &bob).as_deref(),
        Some("join")
    );
    let member = hook
        .fakes
        .store
        .member(&grp43, &bob)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(member.role, bridge::model::Role::Moderator);
    assert!(member.joined && member.removed.is_none());
    // The same request again changes nothing.
    let calls = hook.fakes.matrix.calls().len();
    let same = hook
        .provision_member(
            "grp-43",
            "bob",
            Some(json!({"role": "moderator", "rejoin": true})),
        )
        .await;
    assert_eq!(same.status(), 200);
    assert_eq!(hook.fakes.matrix.calls().len(), calls);
}

#[tokio::test]
async fn a_ban_the_webhook_has_not_heard_of_yet_stands_until_the_application_says_rejoin() {
    let hook = Hook::new().await;
    let room = owned_room_id!("!room2:localhost");
    let bob = user("app_bob");
    let grp43 = conversation("grp-43");
    hook.fakes
        .matrix
        .moderator_ban(&room, &bob, &user("carol"), Some("trolling"));

    // The sync finds the ban in the room's state: he is not invited, the
    // removal is recorded, and the change is undone.
    let refused = hook
        .provision_member("grp-43", "bob", Some(json!({"role": "moderator"})))
        .await;
    assert_eq!(refused.status(), 409, "{:?}", json_of(&refused));
    assert!(
        json_of(&refused)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("banned")
    );
    assert!(!invited(&hook, &bob));
    let member = hook
        .fakes
        .store
        .member(&grp43, &bob)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(member.role, bridge::model::Role::Member);
    let removal = member.removed.expect("the ban is recorded");
    assert!(removal.banned);
    assert_eq!(removal.by, user("carol"));
    let outbox = hook
        .fakes
        .store
        .conversation(&grp43)
        .await
        .unwrap()
        .unwrap()
        .outbox;
    assert_eq!(outbox, 0, "the change left the outbox");
    // From now on the record says so: a 409 without asking Matrix.
    let calls = hook.fakes.matrix.calls().len();
    let again = hook
        .provision_member("grp-43", "bob", Some(json!({"role": "member"})))
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(hook.fakes.matrix.calls().len(), calls);

    // `rejoin` lifts the ban, invites and joins him.
    let back = hook
        .provision_member(
            "grp-43",
            "bob",
            Some(json!({"role": "member", "rejoin": true})),
        )
        .await;
    assert_eq!(back.status(), 200, "{:?}", json_of(&back));
    assert!(
        hook.fakes
            .matrix
            .calls()
            .contains(&Call::Unban(room.clone(), bob.clone()))
    );
    assert!(invited(&hook, &bob));
    assert_eq!(
        hook.fakes.matrix.membership_of(&room, &bob).as_deref(),
        Some("join")
    );
    let member = hook
        .fakes
        .store
        .member(&grp43, &bob)
        .await
        .unwrap()
        .unwrap();
    assert!(member.joined && member.removed.is_none());
}

#[tokio::test]
async fn a_member_who_left_on_their_own_is_put_back_by_a_member_change() {
    let hook = Hook::new().await;
    let room = owned_room_id!("!room2:localhost");
    let bob = user("app_bob");
    hook.fakes.matrix.remove(&room, &bob);
    let changed = hook
        .provision_member("grp-43", "bob", Some(json!({"role": "moderator"})))
        .await;
    assert_eq!(changed.status(), 200, "{:?}", json_of(&changed));
    assert!(invited(&hook, &bob));
    assert_eq!(
        hook.fakes.matrix.membership_of(&room, &bob).as_deref(),
        Some("join")
    );
}

#[tokio::test]
async fn joins_leaves_bans_typing_and_receipts_reach_the_application() {
    let hook = Hook::new().await;
    let welcome = hook.welcome().await;
    hook.pushed("66", &with_welcome("join-leave-typing-receipt", &welcome))
        .await;
    let published = hook.published();
    let kinds: Vec<EventKind> = published.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::MemberJoined,
            EventKind::MemberLeft,
            EventKind::Typing,
            EventKind::Receipt
        ]
    );
    assert_eq!(
        published[0].sender.as_ref().unwrap().matrix_user_id,
        user("dave")
    );
    assert_eq!(published[0].membership, Some(Membership::Join));
    assert_eq!(published[1].actor, None);
    let typing = published[2].typing.as_ref().unwrap();
    assert_eq!(typing.len(), 1);
    assert_eq!(typing[0].matrix_user_id, user("carol"));
    let welcome_message = hook.by_event("grp-42", &welcome).await.unwrap();
    assert_eq!(published[3].message_id, Some(welcome_message.id));
    assert_eq!(published[3].receipt_type.as_deref(), Some("m.read"));
    let dave = hook
        .fakes
        .store
        .member(&conversation("grp-42"), &user("dave"))
        .await
        .unwrap()
        .unwrap();
    assert!(!dave.joined);

    // A file, a rename (not passed on; the member's name changes) and a ban.
    hook.pushed("81", &fixture("file-rename-ban")).await;
    let created = hook.published_of(EventKind::MessageCreated);
    let file = &created[0];
    assert_eq!(file.msgtype, Some(MsgType::File));
    assert_eq!(file.attachments[0].mimetype.as_deref(), Some("text/plain"));
    assert_eq!(file.attachments[0].filename.as_deref(), Some("notes.txt"));
    let banned = hook.published_of(EventKind::MemberLeft).pop().unwrap();
    assert_eq!(banned.membership, Some(Membership::Ban));
    assert_eq!(banned.reason.as_deref(), Some("trolling"));
    assert_eq!(banned.actor.as_ref().unwrap().matrix_user_id, user("carol"));
    assert_eq!(
        banned.sender.as_ref().unwrap().display_name.as_deref(),
        Some("Frank F."),
        "the rename reached the member record"
    );
}

#[tokio::test]
async fn edits_by_the_sender_apply_and_redactions_delete() {
    let hook = Hook::new().await;
    // Carol's messages, her edit of the first, her redaction of the second.
    let mut text: Value = serde_json::from_str(&fixture("echo-and-text")).unwrap();
    text["events"].as_array_mut().unwrap().remove(0);
    hook.pushed("60", &text.to_string()).await;
    hook.pushed("61", &fixture("formatted-text")).await;
    // Someone else's replacement of carol's message is not an edit.
    let mut forged: Value = serde_json::from_str(&fixture("edit")).unwrap();
    forged["events"][0]["sender"] = json!("@dave:localhost");
    forged["events"][0]["event_id"] = json!("$forged");
    forged["events"][0]["content"]["m.new_content"]["body"] = json!("forged");
    hook.pushed("63", &forged.to_string()).await;
    hook.pushed("64", &fixture("edit")).await;
    hook.pushed("65", &fixture("redaction")).await;

    let messages = hook.history("grp-42").await;
    assert_eq!(messages[0].body, "hello from Matrix (edited)");
    assert!(messages[0].edited_at.is_some());
    assert_eq!(messages[1].status, MessageStatus::Deleted);
    assert!(messages[1].body.is_empty() && messages[1].html.is_none());
    let edited = hook.published_of(EventKind::MessageEdited);
    assert_eq!(edited.len(), 1, "the forged edit is not passed on");
    assert_eq!(edited[0].message_id, Some(messages[0].id));
    let deleted = hook.published_of(EventKind::MessageDeleted);
    assert_eq!(deleted[0].message_id, Some(messages[1].id));
    assert_eq!(deleted[0].reason.as_deref(), Some("wrong room"));

    // A redaction naming its event only at the top level (room versions
    // before 11) deletes too.
    let mut old: Value = serde_json::from_str(&fixture("redaction")).unwrap();
    let event = &mut old["events"][0];
    event["redacts"] = json!(messages[0].event_id);
    event["content"].as_object_mut().unwrap().remove("redacts");
    event["event_id"] = json!("$old-style");
    hook.pushed("70", &old.to_string()).await;
    assert_eq!(
        hook.history("grp-42").await[0].status,
        MessageStatus::Deleted
    );
}

#[tokio::test]
async fn the_unstable_ephemeral_key_is_read_and_puppets_typing_left_out() {
    let hook = Hook::new().await;
    let welcome = hook.welcome().await;
    let mut body: Value =
        serde_json::from_str(&with_welcome("join-leave-typing-receipt", &welcome)).unwrap();
    let ephemeral = body["ephemeral"].take();
    body.as_object_mut().unwrap().remove("ephemeral");
    body["de.sorunome.msc2409.ephemeral"] = ephemeral;
    body["events"] = json!([]);
    hook.pushed("90", &body.to_string()).await;
    assert_eq!(hook.published().len(), 2, "typing and receipt");

    let puppets_only = json!({"events": [], "ephemeral": [
        {"type": "m.typing", "room_id": "!room1:localhost", "content": {"user_ids": ["@app_alice:localhost"]}},
        {"type": "m.receipt", "room_id": "!room1:localhost", "content": {welcome.clone(): {"m.read": {"@app_bob:localhost": {"ts": 1}}}}},
    ]});
    hook.pushed("91", &puppets_only.to_string()).await;
    assert_eq!(hook.published().len(), 2, "the puppets' own are left out");
}

#[tokio::test]
async fn events_in_rooms_the_bridge_does_not_know_are_ignored() {
    let hook = Hook::new().await;
    let body = fixture("formatted-text").replace("!room1:localhost", "!elsewhere:localhost");
    hook.pushed("61", &body).await;
    assert!(hook.published().is_empty());
    assert!(hook.history("grp-42").await.is_empty());
}

#[tokio::test]
async fn an_unavailable_queue_is_503_and_the_retry_publishes_once() {
    let hook = Hook::new().await;
    let body = fixture("image");
    hook.fakes.inbound.fail_next(1);
    let down = hook.push("63", &body).await;
    assert_eq!(down.status(), 503);
    assert_eq!(json_of(&down)["errcode"], "M_UNKNOWN");
    hook.pushed("63", &body).await;
    let created = hook.published_of(EventKind::MessageCreated);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].msgtype, Some(MsgType::Image));
    let file = &created[0].attachments[0];
    assert_eq!(
        file.content_uri.as_str(),
        "mxc://localhost/DXswpuohHegSvDJRJUCrCDwz"
    );
    assert_eq!(
        (file.width, file.height, file.size),
        (Some(4), Some(3), Some(119))
    );
    assert_eq!(hook.history("grp-42").await.len(), 1, "stored once");
    // And once done, a repeat is answered without a publication.
    hook.pushed("63", &body).await;
    assert_eq!(hook.published().len(), 1);
}

#[tokio::test]
async fn the_other_appservice_routes() {
    let hook = Hook::new().await;
    let token = || Token::Bearer(Fakes::HS_TOKEN);
    let ping = hook
        .appservice(
            "POST",
            "POST /_matrix/app/v1/ping",
            "/_matrix/app/v1/ping",
            json!({}),
            token(),
            "{\"transaction_id\": \"t1\"}",
        )
        .await;
    assert_eq!((ping.status().as_u16(), json_of(&ping)), (200, json!({})));

    let query_user = |user_id: &'static str| {
        let hook = &hook;
        async move {
            hook.appservice(
                "GET",
                "GET /_matrix/app/v1/users/{userId}",
                &format!("/_matrix/app/v1/users/{user_id}"),
                json!({"userId": user_id}),
                Token::Bearer(Fakes::HS_TOKEN),
                "",
            )
            .await
        }
    };
    let registered_before = hook
        .fakes
        .matrix
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Register(_)))
        .count();
    let known = query_user("@app_alice:localhost").await;
    assert_eq!((known.status().as_u16(), json_of(&known)), (200, json!({})));
    assert_eq!(
        hook.fakes
            .matrix
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Register(_)))
            .count(),
        registered_before + 1,
        "registered (again) before answering"
    );
    for unknown in [
        "@app_zed:localhost",
        "@carol:localhost",
        "@app_alice:elsewhere.org",
    ] {
        let response = query_user(unknown).await;
        assert_eq!(response.status(), 404, "{unknown}");
        assert_eq!(json_of(&response)["errcode"], "M_NOT_FOUND");
    }
    let malformed = query_user("not-a-user-id").await;
    assert_eq!(malformed.status(), 400, "{:?}", json_of(&malformed));
    assert_eq!(
        json_of(&malformed)["errcode"],
        "M_INVALID_PARAM",
        "{:?}",
        json_of(&malformed)
    );

    let alias = hook
        .appservice(
            "GET",
            "GET /_matrix/app/v1/rooms/{roomAlias}",
            "/_matrix/app/v1/rooms/#app_x:localhost",
            json!({"roomAlias": "#app_x:localhost"}),
            token(),
            "",
        )
        .await;
    assert_eq!(alias.status(), 404);
    assert_eq!(json_of(&alias)["errcode"], "M_NOT_FOUND");

    // API Gateway's catch-all `ANY /_matrix/{proxy+}`: unknown paths are
    // 404, known ones with another method 405, in Matrix's words.
    let unknown = hook
        .appservice(
            "GET",
            "ANY /_matrix/{proxy+}",
            "/_matrix/app/v1/thirdparty/protocol/x",
            json!({"proxy": "app/v1/thirdparty/protocol/x"}),
            token(),
            "",
        )
        .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(json_of(&unknown)["errcode"], "M_UNRECOGNIZED");
    let wrong_method = hook
        .appservice(
            "GET",
            "ANY /_matrix/{proxy+}",
            "/_matrix/app/v1/transactions/5",
            json!({"proxy": "app/v1/transactions/5"}),
            token(),
            "",
        )
        .await;
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(json_of(&wrong_method)["errcode"], "M_UNRECOGNIZED");
}
