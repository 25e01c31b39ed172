//! The appservice webhook against the real Synapse: a plain Matrix user does
//! what people do in a room, Synapse pushes its own transactions to the
//! front door, and the application sees each thing once, in its history and
//! on the inbound queue. No transaction here is made by hand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::{Value, json};

use crate::client::{Api, MatrixUser, token, unique};
use crate::matrix_ops::png;
use crate::support::{sdk_config, var};

/// How long Synapse gets to deliver.
const DEADLINE: Duration = Duration::from_secs(45);

/// Reads one conversation's events off the shared inbound queue. The tests
/// of this binary read it at once: whoever receives a message files it
/// under its conversation (before deleting it, so a conversation's later
/// messages, which SQS holds back until then, are filed after it) and takes
/// its own from the file. Handing others' messages back instead starves
/// them: under load some stayed in flight at every other reader's turn.
pub struct Inbound {
    sqs: aws_sdk_sqs::Client,
    url: String,
    conversation: String,
    pub seen: Vec<Value>,
}

/// Events received, by conversation, not yet taken by their test.
static FILED: Mutex<BTreeMap<String, Vec<Value>>> = Mutex::new(BTreeMap::new());

impl Inbound {
    pub async fn new(conversation: &str) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(&sdk_config().await),
            url: var("BRIDGE_INBOUND_QUEUE_URL"),
            conversation: conversation.to_owned(),
            seen: Vec::new(),
        }
    }

    /// Receives once (waiting up to a second), then takes what is filed
    /// under this conversation.
    async fn receive(&mut self) {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .unwrap();
        for message in received.messages.unwrap_or_default() {
            let body: Value = serde_json::from_str(message.body.as_deref().unwrap()).unwrap();
            let conversation = body["conversation_id"].as_str().unwrap_or_default();
            let group = message
                .attributes
                .as_ref()
                .and_then(|attributes| attributes.get(&MessageSystemAttributeName::MessageGroupId));
            assert_eq!(group.map(String::as_str), Some(conversation), "{body}");
            FILED
                .lock()
                .unwrap()
                .entry(conversation.to_owned())
                .or_default()
                .push(body);
            self.sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(message.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
        if let Some(ours) = FILED.lock().unwrap().remove(&self.conversation) {
            self.seen.extend(ours);
        }
    }

    /// Receives until `done` holds of what was seen, or panics at the deadline.
    pub async fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let started = Instant::now();
        while !done(&self.seen) {
            assert!(
                started.elapsed() < DEADLINE,
                "{what}: not on the inbound queue within {DEADLINE:?}; seen {:#?}",
                self.seen
            );
            self.receive().await;
        }
    }

    /// Keeps receiving for `time`, to catch repeats.
    pub async fn linger(&mut self, time: Duration) {
        let started = Instant::now();
        while started.elapsed() < time {
            self.receive().await;
        }
    }

    /// The events seen of `kind`.
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|event| event["type"] == kind)
            .collect()
    }
}

/// How many times each Matrix event was published as `kind`.
fn counts<'a>(events: impl IntoIterator<Item = &'a Value>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events {
        *counts
            .entry(event["event_id"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// The conversation's history as `user` sees it, until `done` holds of it.
async fn history_until(
    api: &Api,
    id: &str,
    user: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let reply = api
            .get(
                &format!("/v1/conversations/{id}/messages?limit=100"),
                &token(user, false),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let messages = reply.body["messages"].as_array().unwrap().clone();
        if done(&messages) {
            return messages;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not in history within {DEADLINE:?}: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A conversation `prefix-…` of alice (owner), bob (member), carol (a
/// Matrix moderator, joined) and `others` (Matrix users, invited): its id,
/// its room, its provisioning answer, and the reader of its inbound events.
async fn conversation(
    api: &Api,
    prefix: &str,
    (alice, bob): (&str, &str),
    carol: &MatrixUser,
    others: &[&MatrixUser],
) -> (String, String, Value, Inbound) {
    let id = unique(prefix);
    let mut members = vec![
        json!({"user_id": alice, "role": "owner"}),
        json!({"user_id": bob, "role": "member"}),
        json!({"matrix_user_id": carol.user_id, "role": "moderator"}),
    ];
    members.extend(
        others
            .iter()
            .map(|user| json!({"matrix_user_id": user.user_id})),
    );
    let created = api
        .provision(&json!({"id": id, "kind": "group", "members": members}))
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let inbound = Inbound::new(&id).await;
    carol.join(&room).await;
    (id, room, created, inbound)
}

fn by_event<'a>(messages: &'a [Value], event_id: &str) -> Option<&'a Value> {
    messages
        .iter()
        .find(|message| message["event_id"] == event_id)
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn what_a_matrix_user_does_reaches_the_application_once() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let dave = MatrixUser::register(&unique("dave")).await;
    let (id, room, _, mut inbound) =
        conversation(&api, "hook", (&alice, &bob), &carol, &[&dave]).await;

    // The application says something; it must not come back as new.
    let sent = api
        .json(
            "POST",
            &format!("/v1/conversations/{id}/messages"),
            &token(&alice, false),
            &json!({"body": "Welcome, everyone"}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let welcome = sent.body["event_id"].as_str().unwrap().to_owned();
    let welcome_id = sent.body["id"].as_str().unwrap().to_owned();

    // What carol does, as Element would.
    let text = carol
        .send(
            &room,
            json!({"msgtype": "m.text", "body": "hello from Matrix"}),
        )
        .await;
    let markdown = carol
        .send(
            &room,
            json!({"msgtype": "m.text", "body": "**bold** move",
                   "format": "org.matrix.custom.html",
                   "formatted_body": "<strong>bold</strong> move<script>alert(1)</script>"}),
        )
        .await;
    let reply = carol
        .send(
            &room,
            json!({"msgtype": "m.text", "body": "thanks!",
                   "m.relates_to": {"m.in_reply_to": {"event_id": welcome}}}),
        )
        .await;
    let picture = png(4, 3);
    let size = picture.len();
    let mxc = carol.upload("image/png", "red.png", picture).await;
    let image = carol
        .send(
            &room,
            json!({"msgtype": "m.image", "body": "red.png", "url": mxc,
                   "info": {"mimetype": "image/png", "size": size, "w": 4, "h": 3}}),
        )
        .await;
    let edit = carol
        .send(
            &room,
            json!({"msgtype": "m.text", "body": "* hello from Matrix (edited)",
                   "m.new_content": {"msgtype": "m.text", "body": "hello from Matrix (edited)"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": text}}),
        )
        .await;
    let redaction = carol.redact(&room, &markdown, "wrong room").await;
    dave.join(&room).await;
    dave.leave(&room).await;
    carol.typing(&room, true).await;
    carol.read(&room, &welcome).await;

    // History: each message once, as the application reads it.
    let messages = history_until(&api, &id, &alice, "carol's messages", |messages| {
        by_event(messages, &image).is_some()
            && by_event(messages, &text).is_some_and(|m| m["edited_at"].is_string())
            && by_event(messages, &markdown).is_some_and(|m| m["status"] == "deleted")
    })
    .await;
    assert_eq!(messages.len(), 5, "{messages:#?}");
    let from_carol = |event: &str| {
        let message = by_event(&messages, event).unwrap();
        assert_eq!(message["origin"], "matrix");
        assert_eq!(message["sender"]["matrix_user_id"], carol.user_id.as_str());
        assert!(message["sender"]["display_name"].is_string(), "{message}");
        assert!(message["sender"].get("user_id").is_none());
        message.clone()
    };
    assert_eq!(from_carol(&text)["body"], "hello from Matrix (edited)");
    let deleted = from_carol(&markdown);
    assert!(
        deleted.get("body").is_none() && deleted.get("html").is_none(),
        "{deleted}"
    );
    assert_eq!(from_carol(&reply)["reply_to"], welcome_id.as_str());
    let shown = from_carol(&image);
    assert_eq!(shown["msgtype"], "image");
    assert_eq!(shown["attachments"][0]["content_uri"], mxc.as_str());
    assert_eq!(shown["attachments"][0]["width"], 4);
    let ours: Vec<&Value> = messages.iter().filter(|m| m["origin"] == "app").collect();
    assert_eq!(
        ours.len(),
        1,
        "the API send is not echoed back: {messages:#?}"
    );
    assert_eq!(ours[0]["event_id"], welcome.as_str());

    // The inbound queue: each event once, in order.
    inbound
        .until("everything carol and dave did", |seen| {
            let has = |kind: &str, event: &str| {
                seen.iter()
                    .any(|e| e["type"] == kind && e["event_id"] == event)
            };
            has("message.created", &image)
                && has("message.edited", &edit)
                && has("message.deleted", &redaction)
                && seen.iter().filter(|e| e["type"] == "member.left").count() == 1
                && seen.iter().any(|e| e["type"] == "receipt")
                && seen.iter().any(|e| {
                    e["type"] == "typing"
                        && e["typing"].as_array().is_some_and(|users| {
                            users
                                .iter()
                                .any(|u| u["matrix_user_id"] == carol.user_id.as_str())
                        })
                })
        })
        .await;
    inbound.linger(Duration::from_secs(3)).await;
    let created: Vec<&str> = inbound
        .of("message.created")
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        [&*text, &*markdown, &*reply, &*image],
        "once each, in order"
    );
    for kind in [
        "message.created",
        "message.edited",
        "message.deleted",
        "member.joined",
        "member.left",
    ] {
        assert!(
            counts(inbound.of(kind)).values().all(|n| *n == 1),
            "{kind} published more than once: {:#?}",
            inbound.seen
        );
    }
    let created = inbound.of("message.created");
    assert!(
        created
            .iter()
            .all(|e| e["sender"]["matrix_user_id"] == carol.user_id.as_str())
    );
    assert_eq!(created[1]["html"], "<strong>bold</strong> move");
    assert_eq!(created[2]["reply_to"], welcome_id.as_str());
    assert_eq!(created[3]["msgtype"], "image");
    assert_eq!(created[3]["attachments"][0]["content_uri"], mxc.as_str());
    assert_eq!(created[3]["attachments"][0]["mimetype"], "image/png");
    let edited = &inbound.of("message.edited")[0];
    assert_eq!(edited["message_id"], created[0]["message_id"]);
    assert_eq!(edited["body"], "hello from Matrix (edited)");
    let deleted = &inbound.of("message.deleted")[0];
    assert_eq!(deleted["message_id"], created[1]["message_id"]);
    assert_eq!(deleted["reason"], "wrong room");
    let joined: Vec<&str> = inbound
        .of("member.joined")
        .iter()
        .map(|e| e["sender"]["matrix_user_id"].as_str().unwrap())
        .collect();
    assert_eq!(joined, [carol.user_id.as_str(), dave.user_id.as_str()]);
    let left = &inbound.of("member.left")[0];
    assert_eq!(left["sender"]["matrix_user_id"], dave.user_id.as_str());
    assert_eq!(left["membership"], "leave");
    assert!(left.get("actor").is_none());
    let receipts = inbound.of("receipt");
    assert_eq!(receipts.len(), 1, "{receipts:#?}");
    assert_eq!(receipts[0]["message_id"], welcome_id.as_str());
    assert_eq!(
        receipts[0]["sender"]["matrix_user_id"],
        carol.user_id.as_str()
    );
    let typing: Vec<&Value> = inbound
        .of("typing")
        .into_iter()
        .filter(|e| !e["typing"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(typing.len(), 1, "{typing:#?}");
    // Nothing of the application's own comes back.
    assert!(
        inbound
            .seen
            .iter()
            .all(|e| e["sender"]["user_id"].is_null()),
        "{:#?}",
        inbound.seen
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_puppet_a_matrix_moderator_kicks_stays_out_and_its_sends_are_refused() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("mod")).await;
    let (id, room, created, mut inbound) =
        conversation(&api, "kick", (&alice, &bob), &carol, &[]).await;
    let bob_puppet = created["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == bob.as_str())
        .unwrap()["matrix_user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    carol.kick(&room, &bob_puppet, "spamming").await;

    inbound
        .until("bob's kick", |seen| {
            seen.iter().any(|e| e["type"] == "member.left")
        })
        .await;
    let left = &inbound.of("member.left")[0];
    assert_eq!(left["sender"]["user_id"], bob.as_str());
    assert_eq!(left["actor"]["matrix_user_id"], carol.user_id.as_str());
    assert_eq!(left["reason"], "spamming");
    assert_eq!(left["membership"], "leave");

    // Bob's sends are refused, clearly, and the bridge does not put him back.
    let send = api
        .json(
            "POST",
            &format!("/v1/conversations/{id}/messages"),
            &token(&bob, false),
            &json!({"body": "let me back in"}),
        )
        .await;
    assert_eq!(send.status, 403, "{send:?}");
    let message = send.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("kicked") && message.contains("spamming"),
        "{message}"
    );
    let state = carol.state(&room, "m.room.member", &bob_puppet).await;
    assert_eq!(
        state["membership"], "leave",
        "not invited or joined again: {state}"
    );
    // Alice, untouched, still posts.
    let send = api
        .json(
            "POST",
            &format!("/v1/conversations/{id}/messages"),
            &token(&alice, false),
            &json!({"body": "still here"}),
        )
        .await;
    assert_eq!(send.status, 201, "{send:?}");

    // Provisioning does not put him back either, until the application
    // says `rejoin`.
    let put = crate::provisioning::put_member(&api, &id, &bob, json!({"role": "moderator"})).await;
    assert_eq!(put.status, 409, "{put:?}");
    let message = put.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"rejoin\": true"), "{message}");
    let state = carol.state(&room, "m.room.member", &bob_puppet).await;
    assert_eq!(state["membership"], "leave", "still out: {state}");
    let put = crate::provisioning::put_member(
        &api,
        &id,
        &bob,
        json!({"role": "moderator", "rejoin": true}),
    )
    .await;
    assert_eq!(put.status, 200, "{put:?}");
    assert!(put.body.get("removed").is_none(), "{put:?}");
    let state = carol.state(&room, "m.room.member", &bob_puppet).await;
    assert_eq!(state["membership"], "join", "back, as asked: {state}");
    let send = api
        .json(
            "POST",
            &format!("/v1/conversations/{id}/messages"),
            &token(&bob, false),
            &json!({"body": "back in"}),
        )
        .await;
    assert_eq!(send.status, 201, "{send:?}");
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_hundred_event_transaction_costs_few_sequential_round_trips() {
    let sdk = sdk_config().await;
    let env = crate::support::stack_env();
    let sender = format!("@{}:{}", unique("bench"), var("MATRIX_SERVER_NAME"));
    let (conversation, room) = bridge_dev::bench::bench_conversation(&sdk, env, &sender)
        .await
        .unwrap();
    let mut inbound = Inbound::new(conversation.as_str()).await;
    let [cold, warm] = bridge_dev::bench::critical_path(&sdk, env, &room, &sender, 100)
        .await
        .unwrap();
    // The transaction record, rooms and events at once; the members and
    // messages (cold only: warm, the room's conversation is cached); the
    // writes at once; the record.
    assert_eq!(cold.table.sequential, 4, "{cold:?}");
    assert_eq!(warm.table.sequential, 3, "{warm:?}");
    // One SendMessageBatch per ten events of a conversation, in order.
    assert_eq!(warm.queue.sequential, 10, "{warm:?}");
    assert_eq!(warm.storage.sequential, 13, "{warm:?}");
    // Take the 200 events off the shared queue (moto slows as it fills).
    inbound
        .until("the counted transactions' events", |seen| seen.len() >= 200)
        .await;
}
