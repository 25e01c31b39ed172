//! The handlers' domain logic on the in-memory fakes: no network. Requests
//! are the sample Lambda events in `events/`, as API Gateway sends them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bridge::fakes::Fakes;
use bridge::function::{Handler, HttpFunction, QueueFunction};
use bridge::handlers::{registry, send};
use bridge::ids::{AppUserId, ConversationId};
use bridge::matrix::fake::{Call, Failure, FakeMatrix};
use bridge::matrix::{MESSAGE_ID_KEY, Matrix as _};
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
            "put-reaction" => include_str!("../events/put-reaction.json"),
            "delete-reaction" => include_str!("../events/delete-reaction.json"),
            "media-upload" => include_str!("../events/media-upload.json"),
            "activity-typing" => include_str!("../events/activity-typing.json"),
            "activity-read" => include_str!("../events/activity-read.json"),
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

    /// Sets a query parameter, or removes it (`None`), in the raw query
    /// string (which `lambda_http` reads) and the parsed parameters alike.
    fn query(mut self, name: &str, value: Option<&str>) -> Self {
        let query = &mut self.json["queryStringParameters"];
        if !query.is_object() {
            *query = json!({});
        }
        let query = query.as_object_mut().unwrap();
        match value {
            Some(value) => query.insert(name.to_owned(), json!(value)),
            None => query.remove(name),
        };
        let encode = |text: &str| {
            percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        };
        let raw: Vec<String> = query
            .iter()
            .map(|(name, value)| format!("{}={}", encode(name), encode(value.as_str().unwrap())))
            .collect();
        self.json["rawQueryString"] = json!(raw.join("&"));
        self
    }

    /// A binary body, base64-encoded as API Gateway passes it on.
    fn bytes(mut self, bytes: &[u8]) -> Self {
        use base64::Engine;
        self.json["body"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        self.json["isBase64Encoded"] = json!(true);
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

    /// The jobs queued for `message`'s operations, in order.
    fn jobs_of(&self, message: MessageId) -> Vec<bridge::queue::RetryJob> {
        let mut jobs = self.queue.jobs();
        jobs.retain(|job| job.message_id == message);
        jobs
    }

    /// Whether the homeserver shows `event_id` redacted.
    fn redacted(&self, event_id: &ruma::EventId) -> bool {
        self.matrix.event(event_id).unwrap().redacted_by.is_some()
    }

    /// Whether `message`'s pending change is recorded in doubt.
    async fn change_in_doubt(&self, message: MessageId) -> bool {
        self.stored_message(message)
            .await
            .pending_change
            .unwrap()
            .in_doubt
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

    /// The bodies of the messages sent to Matrix from the `from`th send on.
    fn sent_bodies(&self, from: usize) -> Vec<Value> {
        self.matrix.sends()[from..]
            .iter()
            .map(|call| match call {
                Call::Send { content, .. } => content["body"].clone(),
                _ => Value::Null,
            })
            .collect()
    }

    /// A batch of these jobs of this bridge's queue, as SQS hands them out.
    fn retry_batch(
        &self,
        jobs: &[bridge::queue::RetryJob],
        receive_count: u32,
    ) -> aws_lambda_events::sqs::SqsEvent {
        retry_batch_of(jobs, receive_count, |job| self.queue.queued_at(job))
    }

    /// The retry function on this bridge's fakes.
    async fn retry(&self) -> Box<dyn QueueFunction> {
        self.retry_with_deadline(bridge::config::SweepSettings::default().max_age)
            .await
    }

    /// The retry function, failing what is undelivered after `max_age`.
    async fn retry_with_deadline(&self, max_age: time::Duration) -> Box<dyn QueueFunction> {
        let mut fakes = self.fakes.clone();
        fakes.sweep.max_age = max_age;
        Self::retry_on(&fakes).await
    }

    /// The retry function, holding jobs it hands back for `backoff`.
    async fn retry_with_backoff(
        &self,
        backoff: bridge::config::RetryBackoff,
    ) -> Box<dyn QueueFunction> {
        let mut fakes = self.fakes.clone();
        fakes.backoff = backoff;
        Self::retry_on(&fakes).await
    }

    async fn retry_on(fakes: &Fakes) -> Box<dyn QueueFunction> {
        match registry::<Fakes>()
            .into_iter()
            .find(|function| function.name == "retry")
            .expect("retry is registered")
            .handler(fakes)
            .await
            .unwrap()
        {
            Handler::Queue(retry) => retry,
            _ => panic!("retry is a queue function"),
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

/// The sample SQS batch, holding these jobs as consecutive receives of one
/// group, each with when the queue took it (`SentTimestamp`; now for a job
/// it never took).
fn retry_batch_of(
    jobs: &[bridge::queue::RetryJob],
    receive_count: u32,
    queued_at: impl Fn(&bridge::queue::RetryJob) -> Option<time::OffsetDateTime>,
) -> aws_lambda_events::sqs::SqsEvent {
    let sample: Value =
        serde_json::from_str(include_str!("../events/retry-sqs-batch.json")).unwrap();
    let records: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let at = queued_at(job).unwrap_or_else(time::OffsetDateTime::now_utc);
            let millis = at.unix_timestamp_nanos() / 1_000_000;
            let mut record = sample["Records"][0].clone();
            record["messageId"] = json!(uuid::Uuid::new_v4().to_string());
            record["receiptHandle"] = json!(format!("receipt-{}", uuid::Uuid::new_v4()));
            record["body"] = json!(serde_json::to_string(job).unwrap());
            record["attributes"]["MessageGroupId"] = json!(job.conversation_id.as_str());
            record["attributes"]["ApproximateReceiveCount"] = json!(receive_count.to_string());
            record["attributes"]["SentTimestamp"] = json!(millis.to_string());
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
    let retry = bridge.retry().await;

    // Still down: the first is handed back, and the second waits behind it.
    bridge.matrix.fail_next_send(Failure::Down);
    let sends_before = bridge.matrix.sends().len();
    let batch = bridge.retry_batch(&jobs, 1);
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
    let response = retry.call(bridge.retry_batch(&jobs, 2)).await;
    assert!(failed_ids(&response).is_empty());
    let bodies = bridge.sent_bodies(sends_before + 1);
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
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs[..1], 3)).await).is_empty());
    assert_eq!(bridge.matrix.sends().len(), sends);
}

#[tokio::test]
async fn a_job_delivers_first_what_waits_ahead_of_it_without_a_job() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(bridge.send("alice", "one").await.status(), 202);
    assert_eq!(bridge.send("bob", "two").await.status(), 202);
    let jobs = bridge.queue.jobs();
    let sends_before = bridge.matrix.sends().len();

    // The first job is lost (dead-lettered, say): the second's delivers
    // the first message before its own.
    let response = bridge
        .retry()
        .await
        .call(bridge.retry_batch(&jobs[1..], 1))
        .await;
    assert!(failed_ids(&response).is_empty());
    let bodies = bridge.sent_bodies(sends_before);
    assert_eq!(bodies, [json!("one"), json!("two")]);
    for job in &jobs {
        assert_eq!(bridge.stored(job).await.status, MessageStatus::Sent);
    }
    assert_eq!(bridge.outbox().await, 0);

    // The lost job, found again later (the sweeper, a replay), does nothing.
    let sends = bridge.matrix.sends().len();
    assert!(
        failed_ids(
            &bridge
                .retry()
                .await
                .call(bridge.retry_batch(&jobs[..1], 1))
                .await
        )
        .is_empty()
    );
    assert_eq!(bridge.matrix.sends().len(), sends);
}

#[tokio::test]
async fn a_job_waits_for_an_earlier_operation_still_on_its_way() {
    let bridge = Bridge::with_conversation().await;
    // A send still in its request (stored direct, not settled yet)...
    let id = bridge.sent("alice", "settled").await;
    let mut in_flight = bridge.stored_message(id).await;
    in_flight.id = MessageId::new();
    in_flight.status = MessageStatus::Pending;
    in_flight.event_id = None;
    in_flight.body = "in flight".into();
    bridge.store.insert_message(&in_flight, None).await.unwrap();
    // ...and one accepted after it, queued behind it.
    assert_eq!(bridge.send("bob", "behind").await.status(), 202);
    let jobs = bridge.queue.jobs();
    let behind = jobs.last().unwrap().clone();
    let sends = bridge.matrix.sends().len();

    let retry = bridge.retry().await;
    let response = retry
        .call(bridge.retry_batch(std::slice::from_ref(&behind), 1))
        .await;
    assert_eq!(failed_ids(&response).len(), 1, "handed back");
    assert_eq!(bridge.matrix.sends().len(), sends, "nothing overtook it");
    assert_eq!(bridge.stored(&behind).await.status, MessageStatus::Pending);

    // Its request gives it to the retry function: the job delivers both, in order.
    bridge.store.mark_queued(&in_flight).await.unwrap();
    let response = retry
        .call(bridge.retry_batch(std::slice::from_ref(&behind), 2))
        .await;
    assert!(failed_ids(&response).is_empty());
    let bodies = bridge.sent_bodies(sends);
    assert_eq!(bodies, [json!("in flight"), json!("behind")]);
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn the_retry_function_waits_until_the_deadline_and_gives_up_on_refusals() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(bridge.send("alice", "doomed").await.status(), 202);
    assert_eq!(
        bridge.send("alice", "refused later").await.status(),
        202,
        "queued behind the first"
    );
    let jobs = bridge.queue.jobs();

    // However many attempts it takes, before the deadline it waits.
    bridge.matrix.fail_next_send(Failure::Down);
    let response = bridge
        .retry()
        .await
        .call(bridge.retry_batch(&jobs[..1], 50))
        .await;
    assert_eq!(failed_ids(&response).len(), 1, "handed back at attempt 50");
    assert_eq!(bridge.stored(&jobs[0]).await.status, MessageStatus::Pending);

    // Past the deadline, it fails, with the reason.
    let retry = bridge.retry_with_deadline(time::Duration::ZERO).await;
    bridge.matrix.fail_next_send(Failure::Down);
    let response = retry.call(bridge.retry_batch(&jobs[..1], 51)).await;
    assert!(
        failed_ids(&response).is_empty(),
        "past the deadline the job ends"
    );
    let first = bridge.stored(&jobs[0]).await;
    assert_eq!(first.status, MessageStatus::Failed);
    let failure = first.failure.unwrap();
    assert!(
        failure.starts_with("not delivered within 0 hours (51 attempts)"),
        "{failure}"
    );

    bridge.matrix.fail_next_send(Failure::Refused);
    let response = retry.call(bridge.retry_batch(&jobs[1..], 1)).await;
    assert!(failed_ids(&response).is_empty());
    let second = bridge.stored(&jobs[1]).await;
    assert_eq!(second.status, MessageStatus::Failed);
    assert!(second.failure.unwrap().contains("M_BAD_JSON"));
    assert_eq!(bridge.outbox().await, 0);

    let mut malformed = bridge.retry_batch(&jobs[..1], 1);
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
        typing_until: None,
        removed: None,
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

    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
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
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
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
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 2)).await).is_empty());
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
    // Deleting a pending message cancels it. Its send may be on its way
    // (a retry under way), so the cancel stays in the outbox until the
    // retry function settles it: nothing accepted later overtakes it.
    assert_eq!(bridge.delete("alice", cancelled).await.status(), 204);
    assert_eq!(bridge.outbox().await, 2);

    let sends = bridge.matrix.sends().len();
    let retry = bridge.retry().await;
    assert!(
        failed_ids(
            &retry
                .call(bridge.retry_batch(&bridge.queue.jobs(), 1))
                .await
        )
        .is_empty()
    );
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

/// A PNG signature and IHDR chunk: all the checks read.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bytes.extend(width.to_be_bytes());
    bytes.extend(height.to_be_bytes());
    bytes.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend(b"\x00\x00\x00\x00IEND\xaeB`\x82");
    bytes
}

impl Bridge {
    /// The room of `grp-42`.
    async fn room(&self) -> ruma::OwnedRoomId {
        self.store
            .conversation(&Self::conversation())
            .await
            .unwrap()
            .unwrap()
            .room_id
            .unwrap()
    }

    /// Uploads the sample PNG as `user`; answers the `media_id`.
    async fn upload(&self, user: &str) -> String {
        let response = self
            .handle(Event::load("media-upload").by(user, false))
            .await;
        assert_eq!(response.status(), 201, "{:?}", json_of(&response));
        json_of(&response)["media_id"].as_str().unwrap().to_owned()
    }

    /// Sends `body` as `user`, with these attachments.
    async fn send_with(&self, user: &str, body: Value) -> Response<Body> {
        let event = Event::load("send-message-plain")
            .by(user, false)
            .without_header("idempotency-key")
            .body(body);
        self.call(send::NAME, event.request()).await
    }

    async fn typing(&self, user: &str, body: Value) -> Response<Body> {
        let event = Event::load("activity-typing").by(user, false).body(body);
        self.handle(event).await
    }

    async fn read(&self, user: &str, message_id: &Value) -> Response<Body> {
        let event = Event::load("activity-read")
            .by(user, false)
            .body(json!({ "message_id": message_id }));
        self.handle(event).await
    }

    /// Provisions conversation `id` with `member` alone (its owner: a group
    /// that names members needs one).
    async fn provision_other(&self, id: &str, member: &str) {
        let create = Event::load("provision-create-conversation")
            .by("svc", true)
            .body(json!({"id": id, "kind": "group", "members": [{"user_id": member, "role": "owner"}]}));
        let response = self.handle(create).await;
        assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    }

    fn typing_calls(&self) -> Vec<(bool, std::time::Duration)> {
        self.matrix
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                Call::Typing {
                    typing, timeout, ..
                } => Some((typing, timeout)),
                _ => None,
            })
            .collect()
    }
}

fn error_message(response: &Response<Body>) -> String {
    json_of(response)["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_upload_lands_in_the_media_repository_as_the_puppet_and_is_recorded() {
    let bridge = Bridge::with_conversation().await;
    let response = bridge
        .handle(Event::load("media-upload").by("alice", false))
        .await;
    assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    let body = json_of(&response);
    let uri = body["content_uri"].as_str().unwrap();
    assert!(uri.starts_with("mxc://"), "{body}");
    assert_eq!(
        (
            &body["mimetype"],
            &body["filename"],
            &body["width"],
            &body["height"]
        ),
        (&json!("image/png"), &json!("red.png"), &json!(2), &json!(2))
    );
    let stored = bridge.matrix.media(uri.into()).unwrap();
    assert_eq!(stored.uploader, puppet("alice"));
    assert_eq!(stored.content_type, "image/png");
    assert_eq!(stored.filename.as_deref(), Some("red.png"));
    assert_eq!(body["size"], json!(stored.bytes.len()));
    let media_id = body["media_id"].as_str().unwrap().parse().unwrap();
    let record = bridge
        .store
        .media(&Bridge::conversation(), media_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.uploader.as_str(), "alice");
    assert_eq!(record.content_uri.as_str(), uri);

    // Names are cleaned, or made up from the type.
    let named = |name: Option<&str>| {
        Event::load("media-upload")
            .by("bob", false)
            .query("filename", name)
    };
    let response = bridge.handle(named(Some("../../etc/\u{202e}x.png"))).await;
    assert_eq!(json_of(&response)["filename"], "x.png");
    let response = bridge.handle(named(None)).await;
    assert_eq!(json_of(&response)["filename"], "image.png");

    // A service token uploads for a member with `?as_user=`.
    let response = bridge
        .handle(
            Event::load("media-upload")
                .by("svc", true)
                .query("as_user", Some("bob")),
        )
        .await;
    assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    assert!(matches!(
        bridge.matrix.calls().last(),
        Some(Call::Upload { uploader, .. }) if *uploader == puppet("bob")
    ));
}

#[tokio::test]
async fn uploads_are_refused_for_size_type_content_and_strangers() {
    let bridge = Bridge::with_conversation().await;
    let upload = |user: &str| Event::load("media-upload").by(user, false);
    let status_and_message =
        |response: Response<Body>| (response.status().as_u16(), error_message(&response));

    let mut big = png(1, 1);
    big.resize(bridge::media::MAX_MEDIA + 1, 0);
    let (status, message) = status_and_message(bridge.handle(upload("alice").bytes(&big)).await);
    assert_eq!(status, 413);
    assert!(message.contains("at most 4194304"), "{message}");

    let jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00";
    let (status, message) = status_and_message(bridge.handle(upload("alice").bytes(jpeg)).await);
    assert_eq!(status, 415);
    assert_eq!(
        message,
        "the file's content is not image/png (it looks like image/jpeg)"
    );

    for declared in ["application/octet-stream", "image/svg+xml"] {
        let event = upload("alice").header("content-type", declared);
        let (status, message) = status_and_message(bridge.handle(event).await);
        assert_eq!(status, 415, "{declared}");
        assert!(message.contains("not accepted"), "{message}");
    }

    let (status, message) = status_and_message(bridge.handle(upload("alice").bytes(b"")).await);
    assert_eq!(status, 400);
    assert!(message.contains("empty"), "{message}");

    assert_eq!(bridge.handle(upload("eve")).await.status(), 404);
    let for_stranger = Event::load("media-upload")
        .by("svc", true)
        .query("as_user", Some("eve"));
    assert_eq!(bridge.handle(for_stranger).await.status(), 403);
    let as_other = upload("alice").query("as_user", Some("bob"));
    assert_eq!(bridge.handle(as_other).await.status(), 403);
    let malformed = upload("alice").path_param("id", "no spaces");
    assert_eq!(bridge.handle(malformed).await.status(), 400);
    let unknown = upload("alice").path_param("id", "grp-0");
    assert_eq!(bridge.handle(unknown).await.status(), 404);

    assert!(
        !bridge
            .matrix
            .calls()
            .iter()
            .any(|call| matches!(call, Call::Upload { .. })),
        "nothing refused reached the homeserver"
    );
}

#[tokio::test]
async fn an_attachment_is_sent_as_m_image_with_its_info() {
    let bridge = Bridge::with_conversation().await;
    let media_id = bridge.upload("alice").await;
    let response = bridge
        .send_with(
            "alice",
            json!({"body": "a **red** square", "format": "markdown", "attachments": [{"media_id": media_id}]}),
        )
        .await;
    assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    let sent = json_of(&response);
    let attachment = &sent["attachments"][0];
    assert_eq!(attachment["media_id"], media_id.as_str());
    assert_eq!(
        (
            &attachment["mimetype"],
            &attachment["filename"],
            &attachment["width"],
            &attachment["height"]
        ),
        (&json!("image/png"), &json!("red.png"), &json!(2), &json!(2))
    );

    let Some(Call::Send { content, .. }) = bridge.matrix.sends().last().cloned() else {
        panic!("nothing sent");
    };
    assert_eq!(content["msgtype"], "m.image");
    assert_eq!(content["url"], attachment["content_uri"]);
    assert_eq!(content["body"], "a **red** square", "the caption");
    assert_eq!(
        content["formatted_body"],
        "<p>a <strong>red</strong> square</p>"
    );
    assert_eq!(content["filename"], "red.png");
    assert_eq!(
        content["info"],
        json!({"mimetype": "image/png", "size": attachment["size"], "w": 2, "h": 2})
    );
    assert_eq!(content[MESSAGE_ID_KEY], sent["id"]);

    // History keeps the attachment.
    let one = Event::load("history-get-message")
        .by("bob", false)
        .path_param("message_id", sent["id"].as_str().unwrap());
    let one = bridge.call("history", one.request()).await;
    assert_eq!(json_of(&one)["attachments"], sent["attachments"]);

    // Without a caption, the body may be empty: the file name shows.
    let response = bridge
        .send_with("alice", json!({"attachments": [{"media_id": media_id}]}))
        .await;
    assert_eq!(response.status(), 201, "{:?}", json_of(&response));
    let Some(Call::Send { content, .. }) = bridge.matrix.sends().last().cloned() else {
        panic!("nothing sent");
    };
    assert_eq!(content["body"], "red.png");
    assert!(content.get("formatted_body").is_none());
    assert_eq!(
        bridge
            .send_with("alice", json!({"body": " "}))
            .await
            .status(),
        400,
        "without an attachment a body is needed"
    );
}

#[tokio::test]
async fn attachments_are_one_per_message_and_the_uploaders_own() {
    let bridge = Bridge::with_conversation().await;
    let mine = bridge.upload("alice").await;
    let other = bridge.upload("alice").await;
    let sends = bridge.matrix.sends().len();

    let two = json!({"body": "two", "attachments": [{"media_id": mine}, {"media_id": other}]});
    let response = bridge.send_with("alice", two).await;
    assert_eq!(response.status(), 400);
    assert!(
        error_message(&response).contains("at most 1 per message"),
        "{}",
        error_message(&response)
    );

    let with = |media_id: &str| json!({"body": "x", "attachments": [{"media_id": media_id}]});
    let response = bridge.send_with("bob", with(&mine)).await;
    assert_eq!(response.status(), 403, "another user's upload");
    assert!(error_message(&response).contains("only its uploader"));
    let response = bridge
        .send_with("alice", with(&MessageId::new().to_string()))
        .await;
    assert_eq!(response.status(), 400, "unknown");
    assert_eq!(bridge.send_with("eve", with(&mine)).await.status(), 404);
    assert_eq!(
        bridge.send_with("alice", with("not-an-id")).await.status(),
        400
    );
    let extra = json!({"body": "x", "attachments": [{"media_id": mine, "url": "mxc://evil/x"}]});
    assert_eq!(bridge.send_with("alice", extra).await.status(), 400);

    // An upload of another conversation is unknown in this one.
    bridge.provision_other("grp-7", "alice").await;
    let elsewhere = Event::load("media-upload")
        .by("alice", false)
        .path_param("id", "grp-7");
    let elsewhere = json_of(&bridge.handle(elsewhere).await)["media_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = bridge.send_with("alice", with(&elsewhere)).await;
    assert_eq!(response.status(), 400);
    assert!(error_message(&response).contains("no media"));
    assert_eq!(bridge.matrix.sends().len(), sends, "nothing was sent");
}

#[tokio::test]
async fn a_queued_attachment_is_retried_with_the_same_file() {
    let bridge = Bridge::with_conversation().await;
    let media_id = bridge.upload("alice").await;
    bridge.matrix.fail_next_send(Failure::Down);
    let response = bridge
        .send_with(
            "alice",
            json!({"body": "later", "attachments": [{"media_id": media_id}]}),
        )
        .await;
    assert_eq!(response.status(), 202, "{:?}", json_of(&response));
    let Some(Call::Send { content: first, .. }) = bridge.matrix.sends().last().cloned() else {
        panic!("nothing tried");
    };
    let retry = bridge.retry().await;
    assert!(
        failed_ids(
            &retry
                .call(bridge.retry_batch(&bridge.queue.jobs(), 1))
                .await
        )
        .is_empty()
    );
    let Some(Call::Send { content, .. }) = bridge.matrix.sends().last().cloned() else {
        panic!("nothing sent");
    };
    assert_eq!(content, first, "the same event content");
    assert_eq!(content["msgtype"], "m.image");
    assert_eq!(content["body"], "later");
    let message = bridge.stored(&bridge.queue.jobs()[0]).await;
    assert_eq!(message.status, MessageStatus::Sent);
    assert_eq!(message.attachments.len(), 1);
}

#[tokio::test]
async fn typing_is_passed_on_once_per_window() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room().await;
    let typing = json!({"typing": true, "timeout_ms": 10000});
    for _ in 0..3 {
        let response = bridge.typing("alice", typing.clone()).await;
        assert_eq!(response.status(), 204, "{:?}", json_of(&response));
    }
    assert_eq!(
        bridge.typing_calls(),
        [(true, std::time::Duration::from_secs(10))],
        "repeats within the window are not passed on"
    );
    assert!(bridge.matrix.is_typing(&room, &puppet("alice")));

    assert_eq!(
        bridge
            .typing("alice", json!({"typing": false}))
            .await
            .status(),
        204
    );
    assert!(!bridge.matrix.is_typing(&room, &puppet("alice")));
    assert_eq!(
        bridge
            .typing("alice", json!({"typing": false}))
            .await
            .status(),
        204
    );
    assert_eq!(
        bridge.typing_calls().len(),
        2,
        "stopping when not typing tells nobody"
    );
    let member = bridge
        .store
        .member(&Bridge::conversation(), &puppet("alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(member.typing_until, None);

    // After stopping, typing again is news; the timeout defaults to 30 s.
    bridge.typing("alice", json!({"typing": true})).await;
    assert_eq!(
        bridge.typing_calls().last(),
        Some(&(true, std::time::Duration::from_secs(30)))
    );
    // Each member has a window of its own.
    bridge.typing("bob", typing.clone()).await;
    assert_eq!(bridge.typing_calls().len(), 4);
    assert!(bridge.matrix.is_typing(&room, &puppet("bob")));
}

#[tokio::test]
async fn typing_that_the_homeserver_missed_is_tried_again() {
    let bridge = Bridge::with_conversation().await;
    bridge
        .matrix
        .fail_next(bridge::matrix::fake::Op::Typing, Failure::Down);
    let typing = json!({"typing": true, "timeout_ms": 5000});
    assert_eq!(bridge.typing("alice", typing.clone()).await.status(), 503);
    assert_eq!(bridge.typing("alice", typing).await.status(), 204);
    assert_eq!(bridge.typing_calls().len(), 2, "the window was not kept");
    assert!(
        bridge
            .matrix
            .is_typing(&bridge.room().await, &puppet("alice"))
    );
}

#[tokio::test]
async fn typing_requests_are_checked() {
    let bridge = Bridge::with_conversation().await;
    for timeout in [0, 999, 120_001] {
        let response = bridge
            .typing("alice", json!({"typing": true, "timeout_ms": timeout}))
            .await;
        assert_eq!(response.status(), 400, "{timeout}");
        assert!(error_message(&response).contains("between 1000 and 120000"));
    }
    for body in [
        json!({}),
        json!({"typing": "yes"}),
        json!({"typing": true, "for": 1}),
    ] {
        assert_eq!(bridge.typing("alice", body).await.status(), 400);
    }
    let typing = json!({"typing": true});
    assert_eq!(bridge.typing("eve", typing.clone()).await.status(), 404);
    let for_stranger = Event::load("activity-typing")
        .by("svc", true)
        .body(json!({"typing": true, "as_user": "eve"}));
    assert_eq!(bridge.handle(for_stranger).await.status(), 403);
    let for_member = Event::load("activity-typing")
        .by("svc", true)
        .body(json!({"typing": true, "as_user": "bob"}));
    assert_eq!(bridge.handle(for_member).await.status(), 204);
    let unknown = Event::load("activity-typing")
        .by("alice", false)
        .path_param("id", "grp-0");
    assert_eq!(bridge.handle(unknown).await.status(), 404);
    assert_eq!(bridge.typing_calls().len(), 1, "only bob's");
}

#[tokio::test]
async fn a_read_receipt_marks_a_sent_message_read() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room().await;
    let sent = json_of(&bridge.send("alice", "read me").await);
    let response = bridge.read("bob", &sent["id"]).await;
    assert_eq!(response.status(), 204, "{:?}", json_of(&response));
    assert_eq!(
        bridge
            .matrix
            .read_up_to(&room, &puppet("bob"))
            .map(|e| e.to_string()),
        sent["event_id"].as_str().map(str::to_owned)
    );

    // Unknown, of another conversation, or asked by a stranger: 404.
    assert_eq!(
        bridge
            .read("bob", &json!(MessageId::new().to_string()))
            .await
            .status(),
        404
    );
    assert_eq!(bridge.read("eve", &sent["id"]).await.status(), 404);
    bridge.provision_other("grp-7", "bob").await;
    let elsewhere = Event::load("activity-read")
        .by("bob", false)
        .path_param("id", "grp-7")
        .body(json!({"message_id": sent["id"]}));
    assert_eq!(bridge.handle(elsewhere).await.status(), 404);
    assert_eq!(bridge.read("bob", &json!("nope")).await.status(), 400);

    // Not sent yet: nothing to point a receipt at.
    bridge.matrix.fail_next_send(Failure::Down);
    let pending = json_of(&bridge.send("alice", "stuck").await);
    assert_eq!(pending["status"], "pending");
    let response = bridge.read("bob", &pending["id"]).await;
    assert_eq!(response.status(), 409);
    assert!(
        error_message(&response).contains("pending"),
        "{}",
        error_message(&response)
    );
    let receipts = bridge
        .matrix
        .calls()
        .iter()
        .filter(|call| matches!(call, Call::Receipt { .. }))
        .count();
    assert_eq!(receipts, 1);
}

#[tokio::test]
async fn a_puppet_that_left_is_joined_again_to_mark_read() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room().await;
    let sent = json_of(&bridge.send("alice", "hello").await);
    bridge.matrix.remove(&room, &puppet("bob"));
    assert_eq!(bridge.read("bob", &sent["id"]).await.status(), 204);
    assert!(bridge.matrix.read_up_to(&room, &puppet("bob")).is_some());
    assert!(
        bridge
            .matrix
            .calls()
            .contains(&Call::Invite(room.clone(), puppet("bob")))
    );
}

#[tokio::test]
async fn an_edit_of_a_file_changes_its_caption_and_keeps_the_file() {
    let bridge = Bridge::with_conversation().await;
    let media_id = bridge.upload("alice").await;
    let sent = bridge
        .send_with(
            "alice",
            json!({"body": "a square", "attachments": [{"media_id": media_id}]}),
        )
        .await;
    assert_eq!(sent.status(), 201, "{:?}", json_of(&sent));
    let id: MessageId = json_of(&sent)["id"].as_str().unwrap().parse().unwrap();
    let edited = bridge.edit("alice", id, "a red square", None).await;
    assert_eq!(edited.status(), 200, "{:?}", json_of(&edited));
    let Call::Send { content, .. } = bridge.matrix.sends().last().unwrap().clone() else {
        unreachable!()
    };
    assert_eq!(content["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(content["m.new_content"]["msgtype"], "m.image");
    assert_eq!(content["m.new_content"]["body"], "a red square");
    assert_eq!(
        content["m.new_content"]["url"],
        json_of(&sent)["attachments"][0]["content_uri"]
    );
    assert_eq!(
        json_of(&edited)["attachments"],
        json_of(&sent)["attachments"]
    );
}

// ---------------------------------------------------------------- sweeper

impl Bridge {
    fn sweeper(&self) -> bridge::handlers::sweeper::Sweeper<MemoryStore, MemoryQueue> {
        bridge::handlers::sweeper::Sweeper::new(
            bridge::config::SweepSettings::default(),
            self.store.clone(),
            self.queue.clone(),
            bridge::metrics::Metrics::off("sweeper"),
        )
    }
}

#[tokio::test]
async fn the_sweeper_hands_forgotten_operations_to_the_retry_function() {
    use bridge::handlers::sweeper::Sweep;
    let bridge = Bridge::with_conversation().await;
    // A send whose request died after storing it: pending, direct, no job.
    let id = bridge.sent("alice", "stored, then the request died").await;
    let stored = bridge.stored_message(id).await;
    let mut orphan = stored.clone();
    orphan.id = MessageId::new();
    orphan.status = MessageStatus::Pending;
    orphan.event_id = None;
    orphan.body = "orphan".into();
    // (Its predecessor settled; this one is stored as a request would.)
    bridge.store.insert_message(&orphan, None).await.unwrap();
    assert_eq!(bridge.outbox().await, 1, "in flight, blocking later sends");
    let jobs_before = bridge.queue.jobs().len();

    let now = time::OffsetDateTime::now_utc();
    let sweeper = bridge.sweeper();
    assert_eq!(
        sweeper.sweep(now).await.unwrap(),
        Sweep::default(),
        "not stale yet"
    );
    let later = now + time::Duration::minutes(11);
    let swept = sweeper.sweep(later).await.unwrap();
    assert_eq!((swept.found, swept.requeued, swept.failed), (1, 1, 0));
    let jobs = bridge.queue.jobs()[jobs_before..].to_vec();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].operation, jobs[0].message_id),
        (Operation::Send, orphan.id)
    );
    assert_eq!(
        bridge.stored_message(orphan.id).await.delivery,
        Delivery::Queued
    );

    // The retry function delivers it, and the conversation flows again.
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(
        bridge.stored_message(orphan.id).await.status,
        MessageStatus::Sent
    );
    assert_eq!(bridge.outbox().await, 0);
    assert_eq!(bridge.send("alice", "direct again").await.status(), 201);
}

#[tokio::test]
async fn the_sweeper_fails_what_is_past_its_deadline_and_requeues_changes() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    let old = bridge.sent("alice", "never delivered").await;
    let now = time::OffsetDateTime::now_utc();
    let swept = bridge
        .sweeper()
        .sweep(now + time::Duration::hours(25))
        .await
        .unwrap();
    assert_eq!((swept.found, swept.failed), (1, 1));
    let failed = bridge.stored_message(old).await;
    assert_eq!(failed.status, MessageStatus::Failed);
    assert!(
        failed
            .failure
            .as_deref()
            .unwrap()
            .starts_with("not delivered within 24 hours"),
        "{:?}",
        failed.failure
    );
    assert_eq!(bridge.outbox().await, 0);

    // A direct change whose request died: requeued as a change job.
    let sent = bridge.sent("alice", "to edit").await;
    let read = bridge.stored_message(sent).await;
    let mut changed = read.clone();
    changed.body = "edited, then the request died".into();
    changed.changes = 1;
    changed.edited_at = Some(now);
    changed.pending_change = Some(bridge::model::PendingChange {
        kind: bridge::model::ChangeKind::Edit,
        delivery: Delivery::Direct,
        since: None,
        in_doubt: false,
    });
    bridge
        .store
        .update_message(&read, &changed, bridge::store::Outbox::EnterIfEmpty, None)
        .await
        .unwrap();
    let swept = bridge
        .sweeper()
        .sweep(now + time::Duration::minutes(11))
        .await
        .unwrap();
    assert_eq!((swept.found, swept.requeued), (1, 1));
    let job = bridge.queue.jobs().last().unwrap().clone();
    assert_eq!((job.operation, job.change), (Operation::Change, Some(1)));
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&[job], 1)).await).is_empty());
    let Call::Send { content, .. } = bridge.matrix.sends().last().unwrap().clone() else {
        unreachable!()
    };
    assert_eq!(
        content["m.new_content"]["body"],
        "edited, then the request died"
    );
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn edits_matrix_would_refuse_and_messages_of_other_conversations_are_refused() {
    let bridge = Bridge::with_conversation().await;
    // Fits as a message; as an edit (fallback and new content) it would not.
    let long = "x".repeat(31 * 1024);
    let id = bridge.sent("alice", &long).await;
    let sends = bridge.matrix.sends().len();
    let too_big = bridge.edit("alice", id, &format!("{long}!"), None).await;
    assert_eq!(too_big.status(), 413, "{:?}", json_of(&too_big));
    assert_eq!(bridge.matrix.sends().len(), sends, "nothing sent");
    assert_eq!(bridge.stored_message(id).await.body, long, "nothing stored");

    // A second conversation alice is in: grp-42's message is not in it.
    let mut other = Event::load("provision-create-conversation").by("svc", true);
    other.json["body"] = json!(
        json!({"id": "grp-7", "kind": "group", "members": [{"user_id": "alice", "role": "owner"}]})
            .to_string()
    );
    assert_eq!(bridge.handle(other).await.status(), 201);
    let elsewhere = Event::load("edit-message")
        .by("alice", false)
        .path_param("id", "grp-7")
        .path_param("message_id", &id.to_string())
        .body(json!({"body": "wrong room"}));
    assert_eq!(bridge.call("edit", elsewhere.request()).await.status(), 404);
    let delete_elsewhere = Event::load("delete-message")
        .by("alice", false)
        .path_param("id", "grp-7")
        .path_param("message_id", &id.to_string());
    assert_eq!(
        bridge
            .call("delete", delete_elsewhere.request())
            .await
            .status(),
        404
    );
    assert!(bridge.redactions().is_empty());
}

// ------------------------------------------- changes racing a send's delivery

impl Bridge {
    /// Another instance of the function `name` on the same fakes (another
    /// container), to run while a send is on its way.
    async fn another(&self, name: &str) -> Box<dyn HttpFunction> {
        let function = registry::<Fakes>()
            .into_iter()
            .find(|function| function.name == name)
            .unwrap();
        match function.handler(&self.fakes).await.unwrap() {
            Handler::Http(handler) => handler,
            _ => panic!("{name} is an HTTP function"),
        }
    }

    /// Deletes (or, with `Some(body)`, edits) the message being sent, as
    /// alice, while its send is on its way to the homeserver.
    async fn while_sending(&self, edit: Option<&'static str>) {
        let function = self
            .another(if edit.is_some() { "edit" } else { "delete" })
            .await;
        self.matrix
            .during_next_send(Box::new(move |content: Value| {
                Box::pin(async move {
                    let id = content[MESSAGE_ID_KEY].as_str().unwrap().to_owned();
                    let (name, mut event) = match edit {
                        Some(body) => ("edit-message", Some(json!({ "body": body }))),
                        None => ("delete-message", None),
                    };
                    let mut request = Event::load(name)
                        .by("alice", false)
                        .path_param("message_id", &id)
                        .without_header("idempotency-key");
                    if let Some(body) = event.take() {
                        request = request.body(body);
                    }
                    let answer = function.call(request.request()).await;
                    assert!(answer.status().is_success(), "{:?}", json_of(&answer));
                })
            }));
    }

    /// The events of `grp-42`'s room that still show `message` (not
    /// redacted, not an edit).
    async fn visible(&self, message: MessageId) -> Vec<bridge::matrix::fake::Event> {
        self.matrix
            .timeline(&self.room().await)
            .into_iter()
            .filter(|event| {
                event.redacted_by.is_none()
                    && bridge::matrix::carries_message(&event.content, &message.to_string())
            })
            .collect()
    }
}

#[tokio::test]
async fn a_send_deleted_after_it_landed_unheard_is_redacted_by_the_retry_function() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::AnswerLost);
    let id = bridge.sent("alice", "landed, but nobody heard").await;
    assert_eq!(bridge.visible(id).await.len(), 1, "it landed");
    assert_eq!(bridge.delete("alice", id).await.status(), 204);
    assert_eq!(
        bridge.outbox().await,
        1,
        "the cancel waits for the send's job"
    );
    let after = bridge.sent("alice", "after the delete").await;
    assert_eq!(
        bridge.stored_message(after).await.status,
        MessageStatus::Pending,
        "queued behind the cancel"
    );

    let retry = bridge.retry().await;
    assert!(
        failed_ids(
            &retry
                .call(bridge.retry_batch(&bridge.queue.jobs(), 1))
                .await
        )
        .is_empty()
    );
    assert!(bridge.visible(id).await.is_empty(), "redacted");
    assert_eq!(bridge.redactions().len(), 1);
    let deleted = bridge.stored_message(id).await;
    assert_eq!(deleted.status, MessageStatus::Deleted);
    assert!(deleted.event_id.is_some() && deleted.pending_change.is_none());
    assert_eq!(bridge.visible(after).await.len(), 1);
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn a_send_deleted_on_its_way_is_redacted_directly_or_on_retry() {
    // Directly: the send request itself redacts what it just sent.
    let bridge = Bridge::with_conversation().await;
    bridge.while_sending(None).await;
    let direct = bridge.sent("alice", "regretted at once").await;
    assert!(bridge.visible(direct).await.is_empty(), "redacted");
    assert_eq!(bridge.redactions().len(), 1);
    assert_eq!(bridge.outbox().await, 0);
    assert_eq!(bridge.send("alice", "next").await.status(), 201);

    // On retry: the retry function redacts what it just sent.
    bridge.matrix.fail_next_send(Failure::Down);
    let queued = bridge.sent("alice", "regretted while queued").await;
    let jobs: Vec<_> = bridge
        .queue
        .jobs()
        .into_iter()
        .filter(|job| job.message_id == queued)
        .collect();
    bridge.while_sending(None).await;
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert!(bridge.visible(queued).await.is_empty(), "redacted");
    assert_eq!(bridge.redactions().len(), 2);
    assert!(bridge.stored_message(queued).await.pending_change.is_none());
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn a_send_edited_on_its_way_or_before_its_lost_answer_shows_the_edit() {
    let latest_text =
        |bridge: &Bridge, id: MessageId, visible: Vec<bridge::matrix::fake::Event>| {
            let replacements: Vec<Value> = bridge
                .matrix
                .sends()
                .into_iter()
                .filter_map(|call| match call {
                    Call::Send { content, .. }
                        if content[MESSAGE_ID_KEY] == id.to_string()
                            && content["m.relates_to"]["rel_type"] == "m.replace" =>
                    {
                        Some(content["m.new_content"]["body"].clone())
                    }
                    _ => None,
                })
                .collect();
            replacements
                .last()
                .cloned()
                .unwrap_or_else(|| visible[0].content["body"].clone())
        };
    // Directly.
    let bridge = Bridge::with_conversation().await;
    bridge.while_sending(Some("second thoughts")).await;
    let direct = bridge.sent("alice", "first thoughts").await;
    assert_eq!(
        latest_text(&bridge, direct, bridge.visible(direct).await),
        "second thoughts"
    );
    assert_eq!(bridge.outbox().await, 0);

    // On retry, after a lost answer: what landed carries the old text.
    bridge.matrix.fail_next_send(Failure::AnswerLost);
    let unheard = bridge.sent("alice", "typo").await;
    assert_eq!(
        bridge.edit("alice", unheard, "fixed", None).await.status(),
        200
    );
    let jobs: Vec<_> = bridge
        .queue
        .jobs()
        .into_iter()
        .filter(|job| job.message_id == unheard)
        .collect();
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(bridge.visible(unheard).await.len(), 1, "not sent twice");
    assert_eq!(
        latest_text(&bridge, unheard, bridge.visible(unheard).await),
        "fixed"
    );
    assert_eq!(
        bridge.stored_message(unheard).await.status,
        MessageStatus::Sent
    );
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn an_edit_whose_answer_was_lost_is_not_sent_again_by_the_retry_function() {
    let bridge = Bridge::with_conversation().await;
    let id = bridge.sent("alice", "typo").await;
    // The edit lands, but its answer is lost: accepted and queued.
    bridge.matrix.fail_next_send(Failure::AnswerLost);
    let edit = bridge.edit("alice", id, "fixed", None).await;
    assert_eq!(edit.status(), 202, "{:?}", json_of(&edit));
    let jobs = bridge.queue.jobs();
    // The homeserver restarted: it forgot the transaction id (the fake
    // never remembers one), so only looking first avoids a second edit.
    let sends = bridge.matrix.sends().len();
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(
        bridge.matrix.sends().len(),
        sends,
        "the edit that landed is found, not sent again"
    );
    let edits: Vec<Value> = bridge
        .matrix
        .timeline(&bridge.room().await)
        .into_iter()
        .filter(|event| bridge::matrix::is_replacement(&event.content))
        .map(|event| event.content)
        .collect();
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert_eq!(edits[0][bridge::matrix::EDIT_KEY], 1);
    assert!(bridge.stored_message(id).await.pending_change.is_none());
    assert_eq!(bridge.outbox().await, 0);

    // A second edit is another number: looked for, not found, sent.
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(
        bridge.edit("alice", id, "fixed again", None).await.status(),
        202
    );
    let jobs = bridge.jobs_of(id)[1..].to_vec();
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    let sent = bridge.matrix.sends();
    let Some(Call::Send { content, .. }) = sent.last() else {
        panic!("the second edit was not sent: {sent:?}")
    };
    assert_eq!(content["m.new_content"]["body"], "fixed again");
    assert_eq!(content[bridge::matrix::EDIT_KEY], 2);
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn a_lost_answer_is_found_however_busy_the_room_became() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::AnswerLost);
    let id = bridge.sent("alice", "landed, but nobody heard").await;
    let jobs = bridge.queue.jobs();
    // The homeserver restarted (it forgot the transaction id; the fake
    // never remembers one) and the room moved on by more than 100 events.
    let room = bridge.room().await;
    let bob = puppet("bob");
    for n in 0..120 {
        bridge
            .matrix
            .send_message(&room, &bob, &format!("chatter-{n}"), &json!({"body": n}))
            .await
            .unwrap();
    }
    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(bridge.visible(id).await.len(), 1, "found, not sent again");
    assert_eq!(bridge.stored_message(id).await.status, MessageStatus::Sent);
}

#[tokio::test]
async fn only_an_attempt_that_may_have_landed_is_looked_for_before_the_next() {
    let bridge = Bridge::with_conversation().await;
    // Nothing listened: the direct attempt never reached the homeserver.
    bridge.matrix.fail_next_send(Failure::ConnectionRefused);
    let id = bridge.sent("alice", "one").await;
    assert!(!bridge.stored_message(id).await.in_doubt);
    let jobs = bridge.queue.jobs();
    // The retry function's attempt lands with its answer lost. It recorded
    // that it might before it was made (had the function died on its way,
    // the record would be the same).
    bridge.matrix.fail_next_send(Failure::AnswerLost);
    let retry = bridge.retry().await;
    assert_eq!(
        failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).len(),
        1
    );
    assert_eq!(
        bridge.matrix.lookups(),
        0,
        "nothing could have landed before"
    );
    assert!(bridge.stored_message(id).await.in_doubt);
    // The homeserver restarted (the fake forgets transaction ids): the
    // next attempt looks first, and finds it.
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 2)).await).is_empty());
    assert_eq!(bridge.matrix.lookups(), 1);
    assert_eq!(bridge.visible(id).await.len(), 1, "found, not sent again");
    assert_eq!(bridge.stored_message(id).await.status, MessageStatus::Sent);

    // An edit: refused at first, then lands with its answer lost, then is
    // found, looked for once.
    bridge.matrix.fail_next_send(Failure::ConnectionRefused);
    assert_eq!(bridge.edit("alice", id, "two", None).await.status(), 202);
    let job = bridge.jobs_of(id)[1..].to_vec();
    bridge.matrix.fail_next_send(Failure::AnswerLost);
    assert_eq!(
        failed_ids(&retry.call(bridge.retry_batch(&job, 1)).await).len(),
        1
    );
    assert_eq!(
        bridge.matrix.lookups(),
        1,
        "the refused edit was not looked for"
    );
    assert!(failed_ids(&retry.call(bridge.retry_batch(&job, 2)).await).is_empty());
    assert_eq!(bridge.matrix.lookups(), 2);
    let edits = bridge
        .matrix
        .timeline(&bridge.room().await)
        .into_iter()
        .filter(|event| bridge::matrix::is_replacement(&event.content))
        .count();
    assert_eq!(edits, 1, "the edit that landed is found, not sent again");
    assert!(bridge.stored_message(id).await.pending_change.is_none());
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn a_redaction_whose_answer_was_lost_is_not_made_again_after_a_restart() {
    let bridge = Bridge::with_conversation().await;
    let id = bridge.sent("alice", "to be deleted").await;
    let event_id = bridge.stored_message(id).await.event_id.unwrap();
    // The redaction lands, its answer lost: accepted, queued in doubt.
    bridge
        .matrix
        .fail_next(bridge::matrix::fake::Op::Redact, Failure::AnswerLost);
    assert_eq!(bridge.delete("alice", id).await.status(), 204);
    assert!(bridge.change_in_doubt(id).await);
    // The homeserver restarted: it forgot the redaction's transaction id.
    bridge.matrix.forget_transactions();
    let retry = bridge.retry().await;
    let jobs = bridge.jobs_of(id);
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(
        bridge.redactions().len(),
        1,
        "found redacted, not redacted again"
    );
    assert!(bridge.redacted(&event_id));
    assert!(bridge.stored_message(id).await.pending_change.is_none());
    assert_eq!(bridge.outbox().await, 0);

    // One refused before it reached the homeserver is redacted without a look.
    let id = bridge.sent("alice", "also deleted").await;
    let event_id = bridge.stored_message(id).await.event_id.unwrap();
    bridge
        .matrix
        .fail_next(bridge::matrix::fake::Op::Redact, Failure::ConnectionRefused);
    assert_eq!(bridge.delete("alice", id).await.status(), 204);
    assert!(!bridge.change_in_doubt(id).await);
    let jobs = bridge.jobs_of(id);
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(bridge.redactions().len(), 3, "refused, then redacted");
    assert!(bridge.redacted(&event_id));
}

#[tokio::test]
async fn a_job_handed_back_waits_an_exponential_jittered_back_off_honouring_retry_after() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    bridge.sent("alice", "one").await;
    bridge.sent("bob", "two").await;
    let jobs = bridge.queue.jobs();
    let retry = bridge.retry().await;
    let backoff = bridge::config::RetryBackoff::default();

    let mut delays = Vec::new();
    for receives in [1, 4, 30] {
        bridge.matrix.fail_next_send(Failure::Down);
        let batch = bridge.retry_batch(&jobs, receives);
        let handles: Vec<String> = batch
            .records
            .iter()
            .map(|r| r.receipt_handle.clone().unwrap())
            .collect();
        let before = bridge.queue.holds().len();
        assert_eq!(failed_ids(&retry.call(batch).await).len(), 2);
        let holds = bridge.queue.holds()[before..].to_vec();
        assert_eq!(
            holds.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>(),
            handles,
            "each job handed back is held, the later one as long as the first"
        );
        assert_eq!(holds[0].1, holds[1].1);
        let ceiling = (backoff.base * (1 << (receives - 1).min(20))).min(backoff.max);
        assert!(
            holds[0].1 >= ceiling / 2 && holds[0].1 <= ceiling,
            "{receives} receives: {:?} within [{:?}, {ceiling:?}]",
            holds[0].1,
            ceiling / 2
        );
        delays.push(holds[0].1);
    }
    assert!(delays[0] < delays[1] && delays[1] < delays[2], "{delays:?}");

    // A refused connection (nothing listens) waits the first step, however
    // many receives: the drain starts soon after the homeserver is back.
    bridge.matrix.fail_next_send(Failure::ConnectionRefused);
    let before = bridge.queue.holds().len();
    assert_eq!(
        failed_ids(&retry.call(bridge.retry_batch(&jobs, 30)).await).len(),
        2
    );
    let refused = bridge.queue.holds()[before].1;
    assert!(
        refused >= backoff.base / 2 && refused <= backoff.base,
        "{refused:?} within the first step, {:?}",
        backoff.base
    );

    // A rate limit's Retry-After (the fake says 2 s) wins over a shorter
    // back-off.
    let short = bridge
        .retry_with_backoff(bridge::config::RetryBackoff {
            base: std::time::Duration::from_millis(100),
            max: std::time::Duration::from_millis(100),
        })
        .await;
    bridge.matrix.fail_next_send(Failure::RateLimited);
    let before = bridge.queue.holds().len();
    assert_eq!(
        failed_ids(&short.call(bridge.retry_batch(&jobs, 1)).await).len(),
        2
    );
    assert_eq!(
        bridge.queue.holds()[before].1,
        std::time::Duration::from_secs(2)
    );
}

// Notices: system messages from the bridge's bot.

impl Bridge {
    /// A send by a service token (`svc`) with this body.
    async fn send_as_service(&self, body: Value, key: Option<&str>) -> Response<Body> {
        let event = Event::load("send-message-plain").by("svc", true);
        let event = match key {
            Some(key) => event.header("idempotency-key", key),
            None => event.without_header("idempotency-key"),
        };
        self.call(send::NAME, event.body(body).request()).await
    }
}

#[tokio::test]
async fn a_notice_is_an_m_notice_from_the_bot_sent_once_per_key() {
    use bridge::matrix::Matrix;
    let bridge = Bridge::with_conversation().await;
    let before = bridge.matrix.sends().len();
    let body = json!({"body": "The event starts in **one hour**", "format": "markdown", "msgtype": "notice"});
    let first = bridge.send_as_service(body.clone(), Some("n-1")).await;
    assert_eq!(first.status(), 201, "{:?}", json_of(&first));
    let again = bridge.send_as_service(body, Some("n-1")).await;
    assert_eq!(
        json_of(&first),
        json_of(&again),
        "the replay answers the same"
    );
    let sends = bridge.matrix.sends();
    assert_eq!(sends.len(), before + 1, "one event for two requests");
    let Call::Send {
        sender, content, ..
    } = sends.last().unwrap()
    else {
        unreachable!()
    };
    assert_eq!(sender.as_str(), bridge.matrix.bot().as_str());
    let parsed: ruma::events::room::message::RoomMessageEventContent =
        serde_json::from_value(content.clone()).unwrap();
    let ruma::events::room::message::MessageType::Notice(notice) = parsed.msgtype else {
        panic!("not a notice: {content}");
    };
    assert_eq!(notice.body, "The event starts in **one hour**");
    let html = notice.formatted.map(|f| f.body).unwrap_or_default();
    assert!(html.contains("<strong>one hour</strong>"), "{html}");
    let view = json_of(&first);
    assert_eq!(view["msgtype"], "notice");
    assert_eq!(
        view["sender"]["matrix_user_id"],
        bridge.matrix.bot().as_str()
    );
    assert!(view["sender"].get("user_id").is_none(), "{view}");
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn notices_are_for_service_tokens_acting_as_themselves() {
    let bridge = Bridge::with_conversation().await;
    let before = bridge.matrix.sends().len();
    let user = Event::load("send-message-plain")
        .by("alice", false)
        .without_header("idempotency-key")
        .body(json!({"body": "hi", "msgtype": "notice"}));
    let response = bridge.call(send::NAME, user.request()).await;
    assert_eq!(response.status(), 403);
    assert!(error_message(&response).contains("service token"));
    let as_user = bridge
        .send_as_service(
            json!({"body": "hi", "msgtype": "notice", "as_user": "alice"}),
            None,
        )
        .await;
    assert_eq!(as_user.status(), 403);
    assert!(error_message(&as_user).contains("as_user"));
    let with_file = bridge
        .send_as_service(
            json!({"body": "hi", "msgtype": "notice", "attachments": [{"media_id": "0190b8f0-0000-7000-8000-000000000001"}]}),
            None,
        )
        .await;
    assert_eq!(with_file.status(), 400);
    let unknown = bridge
        .send_as_service(json!({"body": "hi", "msgtype": "m.emote"}), None)
        .await;
    assert_eq!(unknown.status(), 400);
    assert!(
        error_message(&unknown).contains("`notice`"),
        "{}",
        error_message(&unknown)
    );
    let missing = Event::load("send-message-plain")
        .by("svc", true)
        .without_header("idempotency-key")
        .path_param("id", "no-such-conversation")
        .body(json!({"body": "hi", "msgtype": "notice"}));
    assert_eq!(
        bridge.call(send::NAME, missing.request()).await.status(),
        404
    );
    assert_eq!(
        bridge.matrix.sends().len(),
        before,
        "nothing refused reached Matrix"
    );
}

#[tokio::test]
async fn a_notice_waits_in_the_outbox_and_the_retry_function_sends_it_as_the_bot() {
    use bridge::matrix::Matrix;
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(bridge.send("alice", "first").await.status(), 202);
    let notice = bridge
        .send_as_service(
            json!({"body": "The venue changed", "msgtype": "notice"}),
            None,
        )
        .await;
    assert_eq!(notice.status(), 202, "queued behind the first");
    assert_eq!(bridge.outbox().await, 2);
    let jobs = bridge.queue.jobs();
    let response = bridge
        .retry()
        .await
        .call(bridge.retry_batch(&jobs, 2))
        .await;
    assert!(failed_ids(&response).is_empty());
    let Some(Call::Send {
        sender, content, ..
    }) = bridge.matrix.sends().last().cloned()
    else {
        unreachable!()
    };
    assert_eq!(sender.as_str(), bridge.matrix.bot().as_str());
    assert_eq!(content["msgtype"], "m.notice");
    assert_eq!(content["body"], "The venue changed");
    assert_eq!(bridge.stored(&jobs[1]).await.status, MessageStatus::Sent);
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn a_notice_is_deleted_by_moderators_and_edited_by_no_user() {
    let bridge = Bridge::with_conversation().await;
    let sent = bridge
        .send_as_service(
            json!({"body": "The venue changed", "msgtype": "notice"}),
            None,
        )
        .await;
    assert_eq!(sent.status(), 201);
    let id: MessageId = json_of(&sent)["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(bridge.edit("alice", id, "hijack", None).await.status(), 403);
    assert_eq!(
        bridge.delete("bob", id).await.status(),
        403,
        "a plain member"
    );
    assert_eq!(bridge.delete("alice", id).await.status(), 204, "the owner");
    assert_eq!(bridge.redactions().len(), 1);
    assert_eq!(
        bridge.stored_message(id).await.status,
        MessageStatus::Deleted
    );
}

// Threads.

impl Bridge {
    /// A send by `user` with this body: its status and answer.
    async fn posted(&self, user: &str, body: Value) -> (u16, Value) {
        let response = self.send_with(user, body).await;
        (response.status().as_u16(), json_of(&response))
    }

    /// The list of one thread (or of everything, without `thread_id`), as `user` reads it.
    async fn listed(&self, user: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let mut event = Event::load("history-list-messages").by(user, false);
        for (name, value) in query {
            event = event.query(name, Some(value));
        }
        let response = self.handle(event).await;
        (response.status().as_u16(), json_of(&response))
    }

    /// The thread relation of the `m.room.message` the fake sent last.
    fn last_thread(&self) -> ruma::events::relation::Thread {
        let Some(Call::Send { content, .. }) = self.matrix.sends().last().cloned() else {
            panic!("nothing sent")
        };
        let parsed: ruma::events::room::message::RoomMessageEventContent =
            serde_json::from_value(content.clone()).unwrap();
        match parsed.relates_to {
            Some(ruma::events::room::message::Relation::Thread(thread)) => thread,
            _ => panic!("not in a thread: {content}"),
        }
    }
}

fn bodies(page: &Value) -> Vec<Value> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect()
}

#[tokio::test]
async fn thread_messages_are_m_thread_with_the_fallback_to_the_latest_and_listed_alone() {
    let bridge = Bridge::with_conversation().await;
    let (_, root) = bridge
        .posted("alice", json!({"body": "Who brings food?"}))
        .await;
    let root_id = root["id"].as_str().unwrap();
    assert_eq!(bridge.send("bob", "not in the thread").await.status(), 201);
    let (status, first) = bridge
        .posted("bob", json!({"body": "I do", "thread_id": root_id}))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["thread_id"], root_id);
    let thread = bridge.last_thread();
    assert_eq!(thread.event_id.as_str(), root["event_id"].as_str().unwrap());
    assert!(thread.is_falling_back);
    assert_eq!(
        thread.in_reply_to.unwrap().event_id.as_str(),
        root["event_id"].as_str().unwrap(),
        "the thread's latest event is its root at first"
    );
    let (_, second) = bridge
        .posted("alice", json!({"body": "thanks", "thread_id": root_id}))
        .await;
    let thread = bridge.last_thread();
    assert_eq!(
        thread.in_reply_to.unwrap().event_id.as_str(),
        first["event_id"].as_str().unwrap(),
        "then the thread's latest message"
    );
    // A real reply within the thread.
    let (_, _third) = bridge
        .posted(
            "alice",
            json!({"body": "to bob", "thread_id": root_id, "reply_to": first["id"]}),
        )
        .await;
    let thread = bridge.last_thread();
    assert!(!thread.is_falling_back);
    assert_eq!(
        thread.in_reply_to.unwrap().event_id.as_str(),
        first["event_id"].as_str().unwrap()
    );

    // The thread alone, newest first, with the same cursor.
    let (status, page) = bridge.listed("bob", &[("thread_id", root_id)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        bodies(&page),
        [json!("to bob"), json!("thanks"), json!("I do")]
    );
    let (_, page) = bridge
        .listed("bob", &[("thread_id", root_id), ("limit", "2")])
        .await;
    assert_eq!(bodies(&page), [json!("to bob"), json!("thanks")]);
    let next = page["next"].as_str().unwrap().to_owned();
    assert_eq!(next, second["id"].as_str().unwrap());
    let (_, rest) = bridge
        .listed(
            "bob",
            &[("thread_id", root_id), ("limit", "2"), ("before", &next)],
        )
        .await;
    assert_eq!(bodies(&rest), [json!("I do")]);
    assert!(rest["next"].is_null());

    // Unknown roots, malformed ids and strangers.
    let (status, _) = bridge
        .listed("bob", &[("thread_id", &MessageId::new().to_string())])
        .await;
    assert_eq!(status, 404);
    assert_eq!(bridge.listed("bob", &[("thread_id", "nope")]).await.0, 400);
    assert_eq!(bridge.listed("eve", &[("thread_id", root_id)]).await.0, 404);
}

#[tokio::test]
async fn thread_roots_must_be_messages_of_the_conversation_outside_threads() {
    let bridge = Bridge::with_conversation().await;
    let (_, root) = bridge.posted("alice", json!({"body": "root"})).await;
    let (_, reply) = bridge
        .posted("bob", json!({"body": "in it", "thread_id": root["id"]}))
        .await;
    let before = bridge.matrix.sends().len();
    let (status, error) = bridge
        .posted("bob", json!({"body": "nested", "thread_id": reply["id"]}))
        .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("itself in the thread")
    );
    let (status, error) = bridge
        .posted(
            "bob",
            json!({"body": "x", "thread_id": MessageId::new().to_string()}),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thread_id")
    );
    assert_eq!(
        bridge
            .posted("bob", json!({"body": "x", "thread_id": "nope"}))
            .await
            .0,
        400
    );
    // A root that never reached Matrix.
    bridge.matrix.fail_next_send(Failure::Refused);
    let (_, failed) = bridge.posted("alice", json!({"body": "refused"})).await;
    assert_eq!(failed["status"], "failed");
    let (status, _) = bridge
        .posted("bob", json!({"body": "x", "thread_id": failed["id"]}))
        .await;
    assert_eq!(status, 400);
    // A stranger learns nothing about the conversation's messages.
    let (status, _) = bridge
        .posted(
            "eve",
            json!({"body": "x", "thread_id": MessageId::new().to_string()}),
        )
        .await;
    assert_eq!(status, 404);
    // A message of another conversation is no root here.
    bridge.provision_other("grp-other", "alice").await;
    let other = Event::load("send-message-plain")
        .by("alice", false)
        .without_header("idempotency-key")
        .path_param("id", "grp-other")
        .body(json!({"body": "there"}));
    let other = json_of(&bridge.call(send::NAME, other.request()).await);
    let (status, _) = bridge
        .posted("alice", json!({"body": "x", "thread_id": other["id"]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        bridge.matrix.sends().len(),
        before + 2,
        "only the refused root and the other conversation's message"
    );
}

#[tokio::test]
async fn a_thread_message_waits_for_its_pending_root_and_edits_and_deletes_keep_the_thread() {
    let bridge = Bridge::with_conversation().await;
    bridge.matrix.fail_next_send(Failure::Down);
    let (status, root) = bridge.posted("alice", json!({"body": "root"})).await;
    assert_eq!(status, 202);
    let (status, reply) = bridge
        .posted("bob", json!({"body": "in it", "thread_id": root["id"]}))
        .await;
    assert_eq!(status, 202, "queued behind its root: {reply}");
    let jobs = bridge.queue.jobs();
    let response = bridge
        .retry()
        .await
        .call(bridge.retry_batch(&jobs, 2))
        .await;
    assert!(failed_ids(&response).is_empty());
    let root_event = bridge.stored(&jobs[0]).await.event_id.unwrap();
    let thread = bridge.last_thread();
    assert_eq!(thread.event_id, root_event);

    // An edit of the thread message keeps it in the thread.
    let reply_id: MessageId = reply["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        bridge
            .edit("bob", reply_id, "in it, edited", None)
            .await
            .status(),
        200
    );
    let root_id = root["id"].as_str().unwrap();
    let (_, page) = bridge.listed("alice", &[("thread_id", root_id)]).await;
    assert_eq!(bodies(&page), [json!("in it, edited")]);
    assert_eq!(page["messages"][0]["thread_id"], root_id);

    // Deleting the root leaves its replies.
    let root_id: MessageId = root_id.parse().unwrap();
    assert_eq!(bridge.delete("alice", root_id).await.status(), 204);
    let (_, page) = bridge
        .listed("alice", &[("thread_id", &root_id.to_string())])
        .await;
    assert_eq!(bodies(&page), [json!("in it, edited")]);
    assert_eq!(
        bridge.stored_message(reply_id).await.status,
        MessageStatus::Sent
    );
    assert_eq!(bridge.redactions().len(), 1, "the root's only");
    // A deleted root still takes replies (Matrix keeps the thread).
    let (status, _) = bridge
        .posted(
            "bob",
            json!({"body": "still here", "thread_id": root_id.to_string()}),
        )
        .await;
    assert_eq!(status, 201);
}

// ----------------------------------------------------------- provisioning

#[path = "handlers/provisioning.rs"]
mod provisioning;

#[path = "handlers/mentions.rs"]
mod mentions;

#[path = "handlers/reactions.rs"]
mod reactions;
