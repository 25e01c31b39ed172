//! The handlers' domain logic on the in-memory fakes: no network. Requests
//! are the sample Lambda events in `events/`, as API Gateway sends them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bridge::fakes::Fakes;
use bridge::function::{Handler, HttpFunction, QueueFunction};
use bridge::handlers::{registry, send};
use bridge::ids::{AppUserId, ConversationId};
use bridge::matrix::MESSAGE_ID_KEY;
use bridge::matrix::fake::{Call, Failure, FakeMatrix};
use bridge::model::{Delivery, MessageId, MessageStatus};
use bridge::queue::{MemoryQueue, Operation};
use bridge::store::{MemoryStore, prelude::*};
use lambda_http::{Body, Response};
use serde_json::{Value, json};

fn puppet(user: &str) -> ruma::OwnedUserId {
    Fakes::new().namer.user_id(&AppUserId::parse(user).unwrap())
}

/// A sample event with changes: `sub`, admin scope, body, headers.
struct Event {
    json: Value,
}

impl Event {
    fn load(name: &str) -> Self {
        let text = match name {
            "provision-create-conversation" => {
                include_str!("../events/provision-create-conversation.json")
            }
            "provision-get-conversation" => {
                include_str!("../events/provision-get-conversation.json")
            }
            "provision-put-user" => include_str!("../events/provision-put-user.json"),
            "provision-update-conversation" => {
                include_str!("../events/provision-update-conversation.json")
            }
            "provision-archive-conversation" => {
                include_str!("../events/provision-archive-conversation.json")
            }
            "provision-put-member" => include_str!("../events/provision-put-member.json"),
            "provision-remove-member" => include_str!("../events/provision-remove-member.json"),
            "send-message-plain" => include_str!("../events/send-message-plain.json"),
            "send-message-markdown" => include_str!("../events/send-message-markdown.json"),
            "history-list-messages" => include_str!("../events/history-list-messages.json"),
            "history-get-message" => include_str!("../events/history-get-message.json"),
            "edit-message" => include_str!("../events/edit-message.json"),
            "delete-message" => include_str!("../events/delete-message.json"),
            other => panic!("no event {other}"),
        };
        Self {
            json: serde_json::from_str(text).unwrap(),
        }
    }

    fn by(mut self, user: &str, admin: bool) -> Self {
        let claims = &mut self.json["requestContext"]["authorizer"]["jwt"]["claims"];
        claims["sub"] = json!(user);
        claims["scope"] = json!(if admin { "bridge.admin" } else { "bridge.user" });
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.json["body"] = json!(body.to_string());
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.json["headers"][name] = json!(value);
        self
    }

    fn without_header(mut self, name: &str) -> Self {
        self.json["headers"].as_object_mut().unwrap().remove(name);
        self
    }

    fn path_param(mut self, name: &str, value: &str) -> Self {
        self.json["pathParameters"][name] = json!(value);
        self
    }

    fn request(self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.json.to_string()).unwrap()
    }
}

fn json_of(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null)
}

/// Every registered function, built on one set of fakes.
struct Bridge {
    fakes: Fakes,
    http: HashMap<&'static str, Box<dyn HttpFunction>>,
    store: MemoryStore,
    matrix: FakeMatrix,
    queue: MemoryQueue,
}

impl Bridge {
    /// A bridge with `grp-42` provisioned from the sample event (alice owner, bob member).
    async fn with_conversation() -> Self {
        let bridge = Self::new(Fakes::new()).await;
        let created = bridge
            .handle(Event::load("provision-create-conversation").by("svc", true))
            .await;
        assert_eq!(created.status(), 201, "{:?}", json_of(&created));
        bridge
    }

    /// Every registered function on `fakes`, nothing provisioned.
    async fn new(fakes: Fakes) -> Self {
        let mut http = HashMap::new();
        for function in registry::<Fakes>() {
            if let Handler::Http(handler) = function.handler(&fakes).await.unwrap() {
                http.insert(function.name, handler);
            }
        }
        Self {
            store: fakes.store.clone(),
            matrix: fakes.matrix.clone(),
            queue: fakes.queue.clone(),
            fakes,
            http,
        }
    }

    /// Calls the function `name` with a request.
    async fn call(&self, name: &str, request: lambda_http::Request) -> Response<Body> {
        self.http[name].call(request).await
    }

    /// How many messages of `grp-42` wait in its outbox.
    async fn outbox(&self) -> i64 {
        self.store
            .conversation(&Self::conversation())
            .await
            .unwrap()
            .unwrap()
            .outbox
    }

    /// The message a retry job is about, as stored.
    async fn stored(&self, job: &bridge::queue::RetryJob) -> bridge::model::Message {
        self.store
            .message(&job.conversation_id, job.message_id)
            .await
            .unwrap()
            .unwrap()
    }

    /// The retry function on this bridge's fakes, giving up after `max_attempts`.
    async fn retry(&self, max_attempts: u32) -> Box<dyn QueueFunction> {
        let fakes = Fakes {
            retry_max_attempts: max_attempts,
            ..self.fakes.clone()
        };
        match registry::<Fakes>()
            .into_iter()
            .find(|function| function.name == "retry")
            .expect("retry is registered")
            .handler(&fakes)
            .await
            .unwrap()
        {
            Handler::Queue(retry) => retry,
            Handler::Http(_) => panic!("retry is a queue function"),
        }
    }

    /// Hands an event to the function that serves its route, as API Gateway would.
    async fn handle(&self, event: Event) -> Response<Body> {
        let key = event.json["routeKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let spec = bridge::api::routes::by_key(&key).unwrap_or_else(|| panic!("no route {key}"));
        self.call(spec.function, event.request()).await
    }

    async fn send(&self, user: &str, body: &str) -> Response<Body> {
        let event = Event::load("send-message-plain")
            .by(user, false)
            .without_header("idempotency-key");
        self.call(send::NAME, event.body(json!({ "body": body })).request())
            .await
    }

    fn conversation() -> ConversationId {
        ConversationId::parse("grp-42").unwrap()
    }
}

#[tokio::test]
async fn provisioning_creates_one_room_with_power_levels_and_joined_puppets() {
    let bridge = Bridge::with_conversation().await;
    let calls = bridge.matrix.calls();
    let Some(Call::CreateRoom(spec)) = calls.iter().find(|c| matches!(c, Call::CreateRoom(_)))
    else {
        panic!("no room created: {calls:?}");
    };
    assert_eq!(spec.name.as_deref(), Some("Hiking club"));
    assert_eq!(spec.invite, vec![puppet("alice"), puppet("bob")]);
    assert_eq!(spec.power_levels.get(&puppet("alice")), Some(&100));
    assert_eq!(
        spec.power_levels.get(&puppet("bob")),
        None,
        "members keep the default level"
    );
    assert!(calls.contains(&Call::Register("app_alice".into())));
    assert!(calls.contains(&Call::DisplayName(puppet("alice"), "Alice".into())));
    let joins = calls.iter().filter(|c| matches!(c, Call::Join(..))).count();
    assert_eq!(joins, 2);

    let again = bridge
        .handle(Event::load("provision-create-conversation").by("svc", true))
        .await;
    assert_eq!(again.status(), 200);
    let rooms = bridge
        .matrix
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::CreateRoom(_)))
        .count();
    assert_eq!(rooms, 1, "the same request again makes no second room");

    let read = bridge
        .handle(Event::load("provision-get-conversation").by("bob", false))
        .await;
    assert_eq!(read.status(), 200);
    assert_eq!(json_of(&read)["members"].as_array().unwrap().len(), 2);
    let stranger = bridge
        .handle(Event::load("provision-get-conversation").by("eve", false))
        .await;
    assert_eq!(stranger.status(), 404);
}

#[tokio::test]
async fn a_puppet_is_registered_once() {
    let bridge = Bridge::with_conversation().await;
    let put = bridge
        .handle(Event::load("provision-put-user").by("svc", true))
        .await;
    assert_eq!(put.status(), 200, "{:?}", json_of(&put));
    let registrations = bridge
        .matrix
        .calls()
        .iter()
        .filter(|c| **c == Call::Register("app_alice".into()))
        .count();
    assert_eq!(registrations, 1, "remembered in the table");
    let plain_user = bridge
        .handle(Event::load("provision-put-user").by("alice", false))
        .await;
    assert_eq!(plain_user.status(), 403);
    let bad_avatar = Event::load("provision-put-user")
        .by("svc", true)
        .body(json!({"avatar_url": "ftp://x"}));
    assert_eq!(
        bridge
            .call("provision", bad_avatar.request())
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn a_send_is_one_matrix_request_with_a_derived_transaction_id() {
    let bridge = Bridge::with_conversation().await;
    let before = bridge.matrix.sends().len();
    let response = bridge
        .handle(Event::load("send-message-markdown").by("alice", false))
        .await;
    assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    let sent = json_of(&response);
    let sends = bridge.matrix.sends();
    assert_eq!(sends.len(), before + 1);
    let Call::Send {
        sender,
        txn_id,
        content,
        ..
    } = sends.last().unwrap()
    else {
        unreachable!()
    };
    let id: MessageId = sent["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(txn_id, &id.txn_id("send"));
    assert_eq!(sender, &puppet("alice"));
    assert_eq!(content[MESSAGE_ID_KEY], sent["id"]);
    assert_eq!(content["format"], "org.matrix.custom.html");
    let stored = bridge
        .store
        .message(&Bridge::conversation(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, MessageStatus::Sent);
    assert_eq!(
        stored.event_id.as_ref().map(|e| e.to_string()),
        sent["event_id"].as_str().map(str::to_owned)
    );
}

#[tokio::test]
async fn when_the_homeserver_is_down_later_messages_queue_behind() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    let first = bridge.send("alice", "one").await;
    assert_eq!(first.status(), 202);
    assert_eq!(json_of(&first)["status"], "pending");
    let sends_after_first = bridge.matrix.sends().len();

    let second = bridge.send("bob", "two").await;
    assert_eq!(second.status(), 202, "queued behind the first");
    assert_eq!(
        bridge.matrix.sends().len(),
        sends_after_first,
        "no attempt to overtake"
    );

    let jobs = bridge.queue.jobs();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|job| job.operation == Operation::Send));
    assert_eq!(
        jobs[0].message_id.to_string(),
        json_of(&first)["id"].as_str().unwrap()
    );
    assert_eq!(
        jobs[1].message_id.to_string(),
        json_of(&second)["id"].as_str().unwrap()
    );
    let conversation = bridge
        .store
        .conversation(&Bridge::conversation())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conversation.outbox, 2);
    for job in jobs {
        let message = bridge.stored(&job).await;
        assert_eq!(
            (message.status, message.delivery),
            (MessageStatus::Pending, Delivery::Queued)
        );
    }
}

#[tokio::test]
async fn rate_limits_queue_and_refusals_fail_for_good() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Refused);
    let refused = bridge.send("alice", "refused").await;
    assert_eq!(refused.status(), 201);
    assert_eq!(json_of(&refused)["status"], "failed");
    assert!(
        json_of(&refused)["failure"]
            .as_str()
            .unwrap()
            .contains("M_BAD_JSON")
    );
    assert!(bridge.queue.jobs().is_empty(), "a refusal is not retried");

    bridge.matrix.fail_next_send(Failure::RateLimited);
    assert_eq!(bridge.send("alice", "later").await.status(), 202);
    assert_eq!(bridge.queue.jobs().len(), 1);
}

#[tokio::test]
async fn a_puppet_that_left_the_room_is_joined_again() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge
        .store
        .conversation(&Bridge::conversation())
        .await
        .unwrap()
        .unwrap()
        .room_id
        .unwrap();
    bridge.matrix.remove(&room, &puppet("bob"));
    let response = bridge.send("bob", "back again").await;
    assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    assert_eq!(
        bridge
            .matrix
            .calls()
            .iter()
            .filter(|c| **c == Call::Join(room.clone(), puppet("bob")))
            .count(),
        3,
        "joined at provisioning, refused after leaving, joined again"
    );
    assert!(
        bridge
            .matrix
            .calls()
            .contains(&Call::Invite(room.clone(), puppet("bob"))),
        "the invite-only room needed a new invite"
    );
}

#[tokio::test]
async fn idempotent_retries_replay_and_reuse_conflicts() {
    let bridge = Bridge::with_conversation().await;
    let event = || {
        Event::load("send-message-plain")
            .by("alice", false)
            .header("idempotency-key", "k-1")
    };
    let first = bridge.handle(event()).await;
    let again = bridge.handle(event()).await;
    assert_eq!(
        (first.status().as_u16(), again.status().as_u16()),
        (201, 201)
    );
    assert_eq!(json_of(&first), json_of(&again));
    assert_eq!(bridge.matrix.sends().len(), 1, "no second event");
    let other_body = bridge
        .handle(event().body(json!({"body": "different"})))
        .await;
    assert_eq!(other_body.status(), 409);
    let other_user = bridge.handle(event().by("bob", false)).await;
    assert_eq!(other_user.status(), 201, "keys are scoped to the caller");
}

#[tokio::test]
async fn history_lists_newest_first_for_members_only() {
    let bridge = Bridge::with_conversation().await;
    for body in ["a", "b", "c"] {
        assert_eq!(bridge.send("alice", body).await.status(), 201);
    }
    let list = bridge
        .handle(Event::load("history-list-messages").by("bob", false))
        .await;
    assert_eq!(list.status(), 200);
    let bodies: Vec<Value> = json_of(&list)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("c"), json!("b"), json!("a")]);
    assert_eq!(
        json_of(&list)["messages"][0]["sender"]["display_name"],
        "Alice",
        "from the member record"
    );
    let admin = bridge
        .handle(Event::load("history-list-messages").by("svc", true))
        .await;
    assert_eq!(admin.status(), 200);
    let stranger = bridge
        .handle(Event::load("history-list-messages").by("eve", false))
        .await;
    assert_eq!(stranger.status(), 404);

    let newest = json_of(&list)["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = Event::load("history-get-message")
        .by("alice", false)
        .path_param("message_id", &newest);
    let one = bridge.call("history", one.request()).await;
    assert_eq!(
        (one.status().as_u16(), json_of(&one)["body"].clone()),
        (200, json!("c"))
    );
    let to_wrong_function = Event::load("history-list-messages")
        .by("alice", false)
        .request();
    let wrong_function = bridge.call("send", to_wrong_function).await;
    assert_eq!(wrong_function.status(), 404);
}

/// The sample SQS batch, holding these jobs as consecutive receives of one group.
fn retry_batch(
    jobs: &[bridge::queue::RetryJob],
    receive_count: u32,
) -> aws_lambda_events::sqs::SqsEvent {
    let sample: Value =
        serde_json::from_str(include_str!("../events/retry-sqs-batch.json")).unwrap();
    let records: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let mut record = sample["Records"][0].clone();
            record["messageId"] = json!(uuid::Uuid::new_v4().to_string());
            record["body"] = json!(serde_json::to_string(job).unwrap());
            record["attributes"]["MessageGroupId"] = json!(job.conversation_id.as_str());
            record["attributes"]["ApproximateReceiveCount"] = json!(receive_count.to_string());
            record
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn failed_ids(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn the_retry_function_delivers_queued_messages_in_order() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(bridge.send("alice", "one").await.status(), 202);
    assert_eq!(bridge.send("bob", "two").await.status(), 202);
    let jobs = bridge.queue.jobs();
    let retry = bridge.retry(8).await;

    // Still down: the first is handed back, and the second waits behind it.
    bridge.matrix.fail_next_send(Failure::Down);
    let sends_before = bridge.matrix.sends().len();
    let batch = retry_batch(&jobs, 1);
    let expected: Vec<String> = batch
        .records
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect();
    let response = retry.call(batch).await;
    assert_eq!(failed_ids(&response), expected);
    assert_eq!(
        bridge.matrix.sends().len(),
        sends_before + 1,
        "the second job was not tried before the first"
    );

    // Back up: both go out, in order, with the transaction ids of their messages.
    let response = retry.call(retry_batch(&jobs, 2)).await;
    assert!(failed_ids(&response).is_empty());
    let bodies: Vec<Value> = bridge.matrix.sends()[sends_before + 1..]
        .iter()
        .map(|call| match call {
            Call::Send { content, .. } => content["body"].clone(),
            _ => Value::Null,
        })
        .collect();
    assert_eq!(bodies, [json!("one"), json!("two")]);
    for job in &jobs {
        let message = bridge.stored(job).await;
        assert_eq!(message.status, MessageStatus::Sent);
    }
    assert_eq!(bridge.outbox().await, 0);
    assert_eq!(
        bridge.send("alice", "three").await.status(),
        201,
        "the outbox is empty again"
    );

    // A job whose message was delivered already does nothing.
    let sends = bridge.matrix.sends().len();
    assert!(failed_ids(&retry.call(retry_batch(&jobs[..1], 3)).await).is_empty());
    assert_eq!(bridge.matrix.sends().len(), sends);
}

#[tokio::test]
async fn the_retry_function_gives_up_on_the_last_attempt_and_on_refusals() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(bridge.send("alice", "doomed").await.status(), 202);
    assert_eq!(
        bridge.send("alice", "refused later").await.status(),
        202,
        "queued behind the first"
    );
    let jobs = bridge.queue.jobs();
    let retry = bridge.retry(3).await;

    bridge.matrix.fail_next_send(Failure::Down);
    let response = retry.call(retry_batch(&jobs[..1], 3)).await;
    assert!(
        failed_ids(&response).is_empty(),
        "the last attempt ends the job"
    );
    let first = bridge.stored(&jobs[0]).await;
    assert_eq!(first.status, MessageStatus::Failed);
    assert!(
        first
            .failure
            .unwrap()
            .starts_with("gave up after 3 attempts")
    );

    bridge.matrix.fail_next_send(Failure::Refused);
    let response = retry.call(retry_batch(&jobs[1..], 1)).await;
    assert!(failed_ids(&response).is_empty());
    let second = bridge.stored(&jobs[1]).await;
    assert_eq!(second.status, MessageStatus::Failed);
    assert!(second.failure.unwrap().contains("M_BAD_JSON"));
    assert_eq!(bridge.outbox().await, 0);

    let mut malformed = retry_batch(&jobs[..1], 1);
    malformed.records[0].body = Some("{\"not\": \"a job\"}".into());
    let id = malformed.records[0].message_id.clone().unwrap();
    assert_eq!(
        failed_ids(&retry.call(malformed).await),
        [id],
        "left for the dead-letter queue"
    );
}

#[tokio::test]
async fn a_member_who_cannot_join_yet_is_queued_not_refused() {
    use bridge::model::{Conversation, ConversationKind, Member, Role};
    use bridge::store::Claim;
    let bridge = Bridge::with_conversation().await;
    // grp-43, where bob is a member whose puppet has not joined the room yet.
    let id = ConversationId::parse("grp-43").unwrap();
    let draft = Conversation::draft(
        id.clone(),
        ConversationKind::Group,
        time::OffsetDateTime::now_utc(),
    );
    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let Claim::Granted {
        token,
        mut conversation,
    } = bridge
        .store
        .claim_conversation(&draft, until)
        .await
        .unwrap()
    else {
        panic!("not granted");
    };
    conversation.room_id = Some(ruma::owned_room_id!("!elsewhere:localhost"));
    let bob = Member {
        conversation_id: id.clone(),
        matrix_user_id: puppet("bob"),
        user_id: Some(AppUserId::parse("bob").unwrap()),
        role: Role::Member,
        display_name: None,
        joined: false,
    };
    bridge
        .store
        .activate_conversation(&conversation, token, &[bob])
        .await
        .unwrap();

    bridge.matrix.fail_next_join(Failure::Down);
    let event = Event::load("send-message-plain")
        .by("bob", false)
        .without_header("idempotency-key")
        .path_param("id", "grp-43");
    let response = bridge.call("send", event.request()).await;
    assert_eq!(response.status(), 202, "{:?}", json_of(&response));
    assert_eq!(bridge.queue.jobs().len(), 1);
    assert_eq!(
        bridge
            .store
            .conversation(&id)
            .await
            .unwrap()
            .unwrap()
            .outbox,
        1
    );
}

#[tokio::test]
async fn replies_to_unknown_messages_do_not_leak_to_strangers() {
    let bridge = Bridge::with_conversation().await;
    let reply = |user: &str| {
        Event::load("send-message-plain")
            .by(user, false)
            .without_header("idempotency-key")
            .body(json!({"body": "re", "reply_to": MessageId::new()}))
            .request()
    };
    assert_eq!(bridge.call("send", reply("alice")).await.status(), 400);
    assert_eq!(bridge.call("send", reply("eve")).await.status(), 404);
}

#[tokio::test]
async fn conversations_nest_in_spaces() {
    let bridge = Bridge::with_conversation().await;
    let create = |body: Value| {
        Event::load("provision-create-conversation")
            .by("svc", true)
            .body(body)
            .request()
    };
    let space = bridge
        .call(
            "provision",
            create(json!({"id": "hikers", "kind": "space", "name": "Hikers"})),
        )
        .await;
    assert_eq!(space.status(), 201);
    let space_room = json_of(&space)["room_id"].as_str().unwrap().to_owned();

    let child = bridge
        .call(
            "provision",
            create(json!({"id": "hike-1", "kind": "event", "parent_id": "hikers"})),
        )
        .await;
    assert_eq!(child.status(), 201, "{:?}", json_of(&child));
    assert_eq!(json_of(&child)["parent_id"], "hikers");
    let child_room = json_of(&child)["room_id"].as_str().unwrap().to_owned();
    let calls = bridge.matrix.calls();
    let specs: Vec<&bridge::matrix::RoomSpec> = calls
        .iter()
        .filter_map(|c| {
            if let Call::CreateRoom(spec) = c {
                Some(spec)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        specs.last().unwrap().parent.as_ref().map(|r| r.as_str()),
        Some(space_room.as_str())
    );
    assert!(calls.contains(&Call::AddSpaceChild {
        space: space_room.as_str().try_into().unwrap(),
        child: child_room.as_str().try_into().unwrap(),
    }));

    let not_a_space = bridge
        .call(
            "provision",
            create(json!({"id": "x-1", "kind": "group", "parent_id": "grp-42"})),
        )
        .await;
    assert_eq!(not_a_space.status(), 400);
    let missing = bridge
        .call(
            "provision",
            create(json!({"id": "x-2", "kind": "group", "parent_id": "nope"})),
        )
        .await;
    assert_eq!(missing.status(), 400);
}

#[tokio::test]
async fn a_retry_finds_a_send_whose_answer_was_lost_instead_of_sending_twice() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::AnswerLost);
    let response = bridge.send("alice", "landed, but nobody heard").await;
    assert_eq!(response.status(), 202);
    let jobs = bridge.queue.jobs();
    let sends = bridge.matrix.sends().len();

    let retry = bridge.retry(8).await;
    assert!(failed_ids(&retry.call(retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(
        bridge.matrix.sends().len(),
        sends,
        "found in the room, not sent again"
    );
    let message = bridge.stored(&jobs[0]).await;
    assert_eq!(message.status, MessageStatus::Sent);
    assert_eq!(
        message.event_id.unwrap().as_str(),
        format!("${}", jobs[0].message_id.txn_id("send"))
    );
}

// ---------------------------------------------------------------- changes

impl Bridge {
    /// Sends `body` as `user` and returns the message's id.
    async fn sent(&self, user: &str, body: &str) -> MessageId {
        let response = self.send(user, body).await;
        assert!(
            matches!(response.status().as_u16(), 201 | 202),
            "{:?}",
            json_of(&response)
        );
        json_of(&response)["id"].as_str().unwrap().parse().unwrap()
    }

    /// An edit of `message` by `user`, with an `Idempotency-Key` unless `None`.
    async fn edit(
        &self,
        user: &str,
        message: MessageId,
        body: &str,
        key: Option<&str>,
    ) -> Response<Body> {
        let mut event = Event::load("edit-message")
            .by(user, false)
            .path_param("message_id", &message.to_string())
            .body(json!({ "body": body }));
        event = match key {
            Some(key) => event.header("idempotency-key", key),
            None => event.without_header("idempotency-key"),
        };
        self.call("edit", event.request()).await
    }

    async fn delete(&self, user: &str, message: MessageId) -> Response<Body> {
        let event = Event::load("delete-message")
            .by(user, false)
            .path_param("message_id", &message.to_string());
        self.call("delete", event.request()).await
    }

    async fn stored_message(&self, id: MessageId) -> bridge::model::Message {
        self.store
            .message(&Self::conversation(), id)
            .await
            .unwrap()
            .unwrap()
    }

    fn redactions(&self) -> Vec<Call> {
        self.matrix
            .calls()
            .into_iter()
            .filter(|call| matches!(call, Call::Redact { .. }))
            .collect()
    }
}

#[tokio::test]
async fn an_edit_replaces_the_original_event_once() {
    let bridge = Bridge::with_conversation().await;
    let id = bridge.sent("alice", "See you at 7").await;
    let original = bridge.stored_message(id).await.event_id.unwrap();
    let sends = bridge.matrix.sends().len();

    let edited = bridge
        .edit("alice", id, "See you at **8**", Some("k1"))
        .await;
    assert_eq!(edited.status(), 200, "{:?}", json_of(&edited));
    assert!(json_of(&edited)["edited_at"].is_string());
    let all = bridge.matrix.sends();
    assert_eq!(all.len(), sends + 1);
    let Call::Send {
        sender,
        txn_id,
        content,
        ..
    } = all.last().unwrap()
    else {
        unreachable!()
    };
    assert_eq!(sender, &puppet("alice"));
    assert_eq!(txn_id, &id.txn_id("edit1"));
    assert_eq!(content["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(content["m.relates_to"]["event_id"], original.as_str());
    assert_eq!(content["m.new_content"]["body"], "See you at **8**");
    assert_eq!(content["body"], "* See you at **8**");

    // The same request again is not a second edit; another body is a conflict.
    let again = bridge
        .edit("alice", id, "See you at **8**", Some("k1"))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(bridge.matrix.sends().len(), sends + 1);
    let other = bridge.edit("alice", id, "See you at 9", Some("k1")).await;
    assert_eq!(other.status(), 409);

    // A second edit still replaces the original, with its own transaction.
    assert_eq!(
        bridge
            .edit("alice", id, "See you at 9", None)
            .await
            .status(),
        200
    );
    let Call::Send {
        txn_id, content, ..
    } = bridge.matrix.sends().last().unwrap().clone()
    else {
        unreachable!()
    };
    assert_eq!(txn_id, id.txn_id("edit2"));
    assert_eq!(content["m.relates_to"]["event_id"], original.as_str());

    let stored = bridge.stored_message(id).await;
    assert_eq!(stored.body, "See you at 9");
    assert!(stored.edited_at.is_some() && stored.pending_change.is_none());
}

#[tokio::test]
async fn only_the_sender_edits_and_deleted_messages_stay_deleted() {
    let bridge = Bridge::with_conversation().await;
    let id = bridge.sent("alice", "mine").await;
    assert_eq!(bridge.edit("bob", id, "yours?", None).await.status(), 403);
    assert_eq!(bridge.edit("eve", id, "stranger", None).await.status(), 404);
    let unknown = MessageId::new();
    assert_eq!(bridge.edit("alice", unknown, "x", None).await.status(), 404);
    let empty = bridge.edit("alice", id, "   ", None).await;
    assert_eq!(empty.status(), 400);
    let huge = bridge.edit("alice", id, &"x".repeat(40 * 1024), None).await;
    assert_eq!(huge.status(), 413);
    let malformed = Event::load("edit-message")
        .by("alice", false)
        .path_param("message_id", "not-an-id")
        .body(json!({"body": "x"}));
    assert_eq!(bridge.call("edit", malformed.request()).await.status(), 400);

    assert_eq!(bridge.delete("alice", id).await.status(), 204);
    assert_eq!(
        bridge.edit("alice", id, "too late", None).await.status(),
        409
    );
}

#[tokio::test]
async fn a_delete_is_one_redaction_by_the_sender_or_the_bot() {
    let bridge = Bridge::with_conversation().await;
    let own = bridge.sent("bob", "oops").await;
    let event = bridge.stored_message(own).await.event_id.unwrap();
    assert_eq!(bridge.delete("bob", own).await.status(), 204);
    assert_eq!(
        bridge.delete("bob", own).await.status(),
        204,
        "twice is fine"
    );
    let redactions = bridge.redactions();
    assert_eq!(redactions.len(), 1, "one redaction: {redactions:?}");
    let Call::Redact {
        sender,
        event_id,
        reason,
        ..
    } = &redactions[0]
    else {
        unreachable!()
    };
    assert_eq!((sender, event_id), (&puppet("bob"), &event));
    assert_eq!(reason.as_deref(), Some("posted in the wrong group"));
    let stored = bridge.stored_message(own).await;
    assert_eq!(stored.status, MessageStatus::Deleted);
    assert!(stored.body.is_empty() && stored.deleted_at.is_some());

    // A plain member may not delete others' messages; the owner may, as the bot.
    let alices = bridge.sent("alice", "announcement").await;
    assert_eq!(bridge.delete("bob", alices).await.status(), 403);
    let bobs = bridge.sent("bob", "spam").await;
    assert_eq!(bridge.delete("alice", bobs).await.status(), 204);
    let Call::Redact { sender, .. } = bridge.redactions().last().unwrap().clone() else {
        unreachable!()
    };
    assert_eq!(sender.localpart(), "bridgebot");
    assert_eq!(bridge.delete("eve", bobs).await.status(), 404);

    // History shows it deleted, without its text.
    let one = Event::load("history-get-message")
        .by("alice", false)
        .path_param("message_id", &own.to_string());
    let view = json_of(&bridge.call("history", one.request()).await);
    assert_eq!(view["status"], "deleted");
    assert!(view["deleted_at"].is_string());
    assert!(view.get("body").is_none(), "{view}");
}

#[tokio::test]
async fn changes_wait_in_the_outbox_and_the_retry_function_delivers_them_in_order() {
    let bridge = Bridge::with_conversation().await;
    let first = bridge.sent("alice", "first").await;
    let second = bridge.sent("alice", "second").await;
    let first_event = bridge.stored_message(first).await.event_id.unwrap();

    // The homeserver goes down: the edit is accepted and queued.
    bridge.matrix.fail_next_send(Failure::Down);
    let edit = bridge.edit("alice", first, "first, edited", None).await;
    assert_eq!(edit.status(), 202, "{:?}", json_of(&edit));
    assert_eq!(bridge.outbox().await, 1);
    // While it waits, a delete of another message queues behind it.
    assert_eq!(bridge.delete("alice", second).await.status(), 204);
    assert_eq!(bridge.outbox().await, 2);
    assert!(bridge.redactions().is_empty(), "nothing overtakes the edit");
    // A second edit replaces the queued one: one job, the latest text.
    assert_eq!(
        bridge
            .edit("alice", first, "first, edited twice", None)
            .await
            .status(),
        202
    );
    let jobs = bridge.queue.jobs();
    assert_eq!(
        jobs.iter().map(|job| job.operation).collect::<Vec<_>>(),
        [Operation::Change, Operation::Change]
    );

    let sends = bridge.matrix.sends().len();
    let retry = bridge.retry(8).await;
    assert!(failed_ids(&retry.call(retry_batch(&jobs, 1)).await).is_empty());
    let new_sends = bridge.matrix.sends()[sends..].to_vec();
    assert_eq!(new_sends.len(), 1, "one edit, the latest: {new_sends:?}");
    let Call::Send { content, .. } = &new_sends[0] else {
        unreachable!()
    };
    assert_eq!(content["m.new_content"]["body"], "first, edited twice");
    assert_eq!(content["m.relates_to"]["event_id"], first_event.as_str());
    assert_eq!(bridge.redactions().len(), 1);
    assert_eq!(bridge.outbox().await, 0);
    // The order in Matrix: the edit, then the redaction.
    let calls = bridge.matrix.calls();
    let edit_at = calls
        .iter()
        .rposition(|c| matches!(c, Call::Send { .. }))
        .unwrap();
    let redact_at = calls
        .iter()
        .rposition(|c| matches!(c, Call::Redact { .. }))
        .unwrap();
    assert!(edit_at < redact_at);
    // Delivered once: the same jobs again change nothing.
    assert!(failed_ids(&retry.call(retry_batch(&jobs, 2)).await).is_empty());
    assert_eq!(bridge.redactions().len(), 1);
    assert_eq!(bridge.matrix.sends().len(), sends + 1);
}

#[tokio::test]
async fn pending_messages_are_edited_in_place_and_cancelled_by_a_delete() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    let edited = bridge.sent("alice", "draft").await;
    let cancelled = bridge.sent("alice", "never mind").await;
    assert_eq!(bridge.outbox().await, 2);

    // Still pending: the edit changes what will be sent, with no edit event.
    assert_eq!(
        bridge.edit("alice", edited, "final", None).await.status(),
        200
    );
    // Deleting a pending message cancels it.
    assert_eq!(bridge.delete("alice", cancelled).await.status(), 204);
    assert_eq!(bridge.outbox().await, 1);

    let sends = bridge.matrix.sends().len();
    let retry = bridge.retry(8).await;
    assert!(failed_ids(&retry.call(retry_batch(&bridge.queue.jobs(), 1)).await).is_empty());
    let delivered = bridge.matrix.sends()[sends..].to_vec();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let Call::Send { content, .. } = &delivered[0] else {
        unreachable!()
    };
    assert_eq!(content["body"], "final");
    assert!(content.get("m.relates_to").is_none());
    assert!(bridge.redactions().is_empty());
    assert_eq!(bridge.outbox().await, 0);
    assert_eq!(
        bridge.stored_message(cancelled).await.status,
        MessageStatus::Deleted
    );
}

#[tokio::test]
async fn a_refused_change_is_failed_with_a_reason() {
    let bridge = Bridge::with_conversation().await;
    let id = bridge.sent("alice", "hello").await;
    bridge.matrix.fail_next_send(Failure::Refused);
    let edit = bridge.edit("alice", id, "hello again", None).await;
    assert_eq!(edit.status(), 200);
    let failure = json_of(&edit)["failure"].as_str().unwrap().to_owned();
    assert!(
        failure.starts_with("the change was not delivered"),
        "{failure}"
    );
    assert!(!failure.contains("bad"), "no homeserver text: {failure}");
    assert_eq!(bridge.outbox().await, 0);
}

// ----------------------------------------------------------- provisioning

#[path = "handlers/provisioning.rs"]
mod provisioning;
