//! The cost of a send, an edit, a delete and a member change, counted on
//! the wire: DynamoDB requests through an SDK interceptor, Matrix requests
//! by the appservice client. The handlers run in process on real Lambda
//! events (`events/`) against a real table, queue and homeserver.
//!
//! Each test works on a table of its own, so nothing the other tests leave
//! in the shared table or do to it meanwhile can move the counts. (Before
//! `tools/bridge-dev/moto/moto_server.py`, moto restored a whole-table copy
//! to undo a cancelled transaction and answered races with 500s the SDK
//! retried; a fresh table is still the simplest isolation.)

use std::time::Duration;

use bridge::config::{MatrixConfig, Secret};
use bridge::handlers::send::{self, SendService};
use bridge::ids::PuppetNamer;
use bridge::inbound::SqsInboundQueue;
use bridge::matrix::AppserviceClient;
use bridge::metrics::Metrics;
use bridge::queue::SqsRetryQueue;
use bridge::secrets::CachedSecret;
use bridge::store::DynamoStore;
use serde_json::{Value, json};

use bridge::function::{Handler, QueueFunction};
use bridge::handlers::provision::{self, Provisioning};
use bridge::handlers::registry;
use bridge::ports::{InitError, Ports};
pub use support_ports::Counted;

use crate::client::unique;
use crate::support::{
    RoundTrips, counted_dynamo, fresh_fifo_queue, fresh_table, sdk_config, stack_env, var,
};

/// The deployed adapters on the stack, with their requests counted.
mod support_ports {
    use super::*;

    pub struct Counted {
        pub store: DynamoStore,
        pub matrix: AppserviceClient,
        pub queue: SqsRetryQueue,
        pub inbound: SqsInboundQueue,
        pub namer: PuppetNamer,
        pub trips: RoundTrips,
    }

    impl Counted {
        /// The adapters, on a fresh table.
        pub async fn new() -> Self {
            let sdk = sdk_config().await;
            let (dynamo, trips) = counted_dynamo(&sdk);
            let table = fresh_table(&sdk).await;
            let config = MatrixConfig::from_env(stack_env()).unwrap();
            Self {
                store: DynamoStore::new(dynamo, table),
                matrix: AppserviceClient::local(AppserviceClient::http_client().unwrap(), &config)
                    .unwrap(),
                queue: SqsRetryQueue::new(
                    aws_sdk_sqs::Client::new(&sdk),
                    var("BRIDGE_RETRY_QUEUE_URL"),
                ),
                inbound: SqsInboundQueue::new(
                    aws_sdk_sqs::Client::new(&sdk),
                    var("BRIDGE_INBOUND_QUEUE_URL"),
                ),
                namer: PuppetNamer::new(config.puppet_prefix.clone(), &config.server_name),
                trips,
            }
        }

        /// A Matrix client for a homeserver where nothing listens (the
        /// discard port): every request is refused before it reaches one.
        pub fn refusing_matrix() -> AppserviceClient {
            let mut config = MatrixConfig::from_env(stack_env()).unwrap();
            config.homeserver_url = "http://127.0.0.1:9".into();
            AppserviceClient::local(AppserviceClient::http_client().unwrap(), &config).unwrap()
        }

        /// The function `name` of the registry, on these adapters, as a
        /// queue consumer.
        pub async fn queue_function(&self, name: &str) -> Box<dyn QueueFunction> {
            let function = registry::<Counted>()
                .into_iter()
                .find(|f| f.name == name)
                .unwrap();
            match function.handler(self).await.unwrap() {
                Handler::Queue(handler) => handler,
                _ => panic!("{name} is not a queue consumer"),
            }
        }

        /// DynamoDB round trips and Matrix requests so far.
        pub fn count(&self) -> (usize, u64) {
            (self.trips.count(), self.matrix.requests_sent())
        }

        /// The provisioning service on these adapters.
        pub async fn provisioning(
            &self,
        ) -> Provisioning<DynamoStore, AppserviceClient, SqsRetryQueue> {
            provision::from_ports(self, Metrics::off(provision::NAME))
                .await
                .unwrap()
        }

        /// Provisions a conversation (`body` as `POST /v1/conversations`
        /// takes it) on this table.
        pub async fn provision(&self, body: Value) {
            let input = serde_json::from_value(body).unwrap();
            self.provisioning()
                .await
                .create_conversation(input)
                .await
                .unwrap();
        }

        /// The send function on these adapters, cold.
        pub fn send_service(&self) -> SendService<DynamoStore, AppserviceClient, SqsRetryQueue> {
            SendService::new(
                self.store.clone(),
                self.matrix.clone(),
                self.queue.clone(),
                self.namer.clone(),
                Metrics::off(send::NAME),
            )
        }
    }

    impl Ports for Counted {
        type Store = DynamoStore;
        type Matrix = AppserviceClient;
        type Queue = SqsRetryQueue;
        type Inbound = SqsInboundQueue;

        async fn store(&self) -> Result<DynamoStore, InitError> {
            Ok(self.store.clone())
        }

        async fn matrix(&self) -> Result<AppserviceClient, InitError> {
            Ok(self.matrix.clone())
        }

        async fn queue(&self) -> Result<SqsRetryQueue, InitError> {
            Ok(self.queue.clone())
        }

        async fn inbound(&self) -> Result<SqsInboundQueue, InitError> {
            Ok(self.inbound.clone())
        }

        async fn hs_token(&self) -> Result<CachedSecret, InitError> {
            Ok(CachedSecret::fixed(Secret::new(var("MATRIX_HS_TOKEN"))))
        }

        fn namer(&self) -> Result<PuppetNamer, InitError> {
            Ok(self.namer.clone())
        }

        fn metrics(&self, function: &'static str) -> Metrics {
            Metrics::off(function)
        }
    }
}

/// The sample event `name`, aimed at `message` of `conversation` as `user`.
fn message_event(
    name: &str,
    conversation: &str,
    message: &str,
    user: &str,
) -> lambda_http::Request {
    let text = match name {
        "edit-message" => include_str!("../../events/edit-message.json"),
        "delete-message" => include_str!("../../events/delete-message.json"),
        other => panic!("no event {other}"),
    };
    let mut event: Value = serde_json::from_str(text).unwrap();
    let path = format!("/v1/conversations/{conversation}/messages/{message}");
    event["rawPath"] = json!(path);
    event["pathParameters"] = json!({"id": conversation, "message_id": message});
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(user);
    event["headers"]["idempotency-key"] = json!(unique("key"));
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn an_edit_and_a_delete_cost_four_table_round_trips_and_one_matrix_request() {
    let alice = unique("alice");
    let conversation = unique("trips");
    let ports = Counted::new().await;
    ports.provision(json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;
    let sent = ports
        .send_service()
        .handle(send_event(
            &conversation,
            &alice,
            "to be edited, then deleted",
        ))
        .await;
    assert_eq!(sent.status(), 201, "{:?}", sent.body());
    let sent: Value = serde_json::from_slice(sent.body().as_ref()).unwrap();
    let message = sent["id"].as_str().unwrap();

    let mut functions = registry::<Counted>().into_iter();
    let mut http = |name: &str| {
        let function = functions.find(|f| f.name == name).unwrap();
        let ports = &ports;
        async move {
            match function.handler(ports).await.unwrap() {
                Handler::Http(handler) => handler,
                _ => unreachable!(),
            }
        }
    };
    let edit = http("edit").await;
    let delete = http("delete").await;

    let before = ports.count();
    let edited = edit
        .call(message_event(
            "edit-message",
            &conversation,
            message,
            &alice,
        ))
        .await;
    assert_eq!(edited.status(), 200, "{:?}", edited.body());
    let after_edit = ports.count();
    assert_eq!(
        (after_edit.0 - before.0, after_edit.1 - before.1),
        (4, 1),
        "edit: read (two at once), store the change, send, settle it"
    );
    let deleted = delete
        .call(message_event(
            "delete-message",
            &conversation,
            message,
            &alice,
        ))
        .await;
    assert_eq!(deleted.status(), 204, "{:?}", deleted.body());
    let after_delete = ports.count();
    assert_eq!(
        (after_delete.0 - after_edit.0, after_delete.1 - after_edit.1),
        (4, 1),
        "delete: read (two at once), store the change, redact, settle it"
    );
}

/// The sample send event, aimed at `conversation` as `user`.
pub fn send_event(conversation: &str, user: &str, body: &str) -> lambda_http::Request {
    send_event_with(conversation, user, false, &json!({ "body": body }))
}

/// The sample send event, aimed at `conversation` by `user` (with a
/// service token when `admin`), with this JSON body.
pub fn send_event_with(
    conversation: &str,
    user: &str,
    admin: bool,
    body: &Value,
) -> lambda_http::Request {
    let mut event: Value =
        serde_json::from_str(include_str!("../../events/send-message-plain.json")).unwrap();
    let path = format!("/v1/conversations/{conversation}/messages");
    event["rawPath"] = json!(path);
    event["pathParameters"]["id"] = json!(conversation);
    event["requestContext"]["http"]["path"] = json!(path);
    let claims = &mut event["requestContext"]["authorizer"]["jwt"]["claims"];
    claims["sub"] = json!(user);
    claims["scope"] = json!(if admin { "bridge.admin" } else { "bridge.user" });
    event["headers"]["idempotency-key"] = json!(unique("key"));
    event["body"] = json!(body.to_string());
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_warm_send_costs_two_table_round_trips_and_one_matrix_request() {
    let alice = unique("alice");
    let conversation = unique("trips");
    let ports = Counted::new().await;
    ports.provision(json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;
    let service = ports.send_service();

    let before = ports.count();
    let cold = service
        .handle(send_event(
            &conversation,
            &alice,
            "first, on a cold container",
        ))
        .await;
    assert_eq!(cold.status(), 201, "{:?}", cold.body());
    let after_cold = ports.count();
    assert_eq!(
        (after_cold.0 - before.0, after_cold.1 - before.1),
        (3, 1),
        "cold: the room id is read once, then cached"
    );

    let warm = service
        .handle(send_event(&conversation, &alice, "second, warm"))
        .await;
    assert_eq!(warm.status(), 201, "{:?}", warm.body());
    let after_warm = ports.count();
    assert_eq!(
        after_warm.0 - after_cold.0,
        2,
        "warm send: insert + mark sent"
    );
    assert_eq!(
        after_warm.1 - after_cold.1,
        1,
        "warm send: one Matrix request"
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn member_changes_cost_three_to_five_table_round_trips_and_their_matrix_requests() {
    use bridge::handlers::provision::{
        Applied,
        plan::{MemberRef, PutMember, PutUser},
    };
    use bridge::ids::{AppUserId, ConversationId};
    use bridge::model::Role;

    let (alice, bob, conversation) = (unique("alice"), unique("bob"), unique("trips"));
    let ports = Counted::new().await;
    ports.provision(json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;
    let service = ports.provisioning().await;
    // Bob's puppet exists already (as after the cutover's users phase).
    let profile: PutUser = serde_json::from_value(json!({"display_name": "Bob"})).unwrap();
    service
        .put_user(AppUserId::parse(bob.as_str()).unwrap(), profile)
        .await
        .unwrap();

    let id = ConversationId::parse(conversation.as_str()).unwrap();
    let who = MemberRef::App(AppUserId::parse(bob.as_str()).unwrap());
    let put = |role| PutMember {
        role,
        display_name: None,
        rejoin: false,
    };

    let before = ports.count();
    let (_, applied) = service
        .put_member(&id, &who, put(Role::Moderator))
        .await
        .unwrap();
    assert_eq!(applied, Applied::Done);
    let joined = ports.count();
    assert_eq!(
        (joined.0 - before.0, joined.1 - before.1),
        (5, 5),
        "join: read, store the change, puppet known?, mark joined, settle; \
         read membership, invite, join, read power levels, write them"
    );
    service
        .put_member(&id, &who, put(Role::Owner))
        .await
        .unwrap();
    let promoted = ports.count();
    assert_eq!(
        (promoted.0 - joined.0, promoted.1 - joined.1),
        (3, 3),
        "role: read, store the change, settle; read membership, read and write power levels"
    );
    service
        .put_member(&id, &who, put(Role::Owner))
        .await
        .unwrap();
    let same = ports.count();
    assert_eq!(
        (same.0 - promoted.0, same.1 - promoted.1),
        (1, 0),
        "the same again: one read"
    );
    service
        .put_member(&id, &who, put(Role::Member))
        .await
        .unwrap();
    service.remove_member(&id, &who).await.unwrap();
    let removed = ports.count();
    let demoted_by = same.0 + 4; // the demotion reads the members, to keep an owner
    assert_eq!(
        (removed.0 - demoted_by, removed.1 - same.1 - 3),
        (3, 3),
        "removal: read, store the change, settle; read membership, leave, read power levels"
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_retry_job_costs_one_matrix_request_unless_an_attempt_is_in_doubt() {
    let alice = unique("alice");
    let conversation = unique("trips");
    let mut ports = Counted::new().await;
    // A queue of its own: its jobs are this test's alone.
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = fresh_fifo_queue(&sqs, &unique("trips")).await;
    ports.queue = SqsRetryQueue::new(sqs.clone(), queue.clone());
    ports.provision(json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;
    let homeserver = std::mem::replace(&mut ports.matrix, Counted::refusing_matrix());
    // Sends while nothing listens, and a retry function that meets the same.
    let refused_retry = ports.queue_function("retry").await;
    let send = ports.send_service();
    let queue_one = async |body: &str| {
        let queued = send.handle(send_event(&conversation, &alice, body)).await;
        assert_eq!(queued.status(), 202, "{:?}", queued.body());
        let jobs = bridge_dev::retry_poller::receive_batch(&sqs, &queue, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1);
        bridge_dev::retry_poller::sqs_event(&jobs)
    };
    let first = queue_one("refused before it reached the homeserver").await;
    ports.matrix = homeserver;
    let retry = ports.queue_function("retry").await;

    let before = ports.count();
    assert!(
        retry
            .call(first.clone())
            .await
            .batch_item_failures
            .is_empty()
    );
    let after = ports.count();
    // Done: off the queue, as the event source mapping does.
    sqs.delete_message()
        .queue_url(&queue)
        .set_receipt_handle(first.records[0].receipt_handle.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (5, 1),
        "a cold retry job, nothing in doubt: what waits ahead, the message, \
         its attempt recorded, the room (then cached), mark sent; the send alone"
    );

    // Its first retry records the attempt, then is refused: the next
    // looks whether it landed before sending.
    let second = queue_one("in doubt after a retry").await;
    assert_eq!(
        refused_retry
            .call(second.clone())
            .await
            .batch_item_failures
            .len(),
        1
    );
    let before = ports.count();
    assert!(retry.call(second).await.batch_item_failures.is_empty());
    let after = ports.count();
    assert_eq!(
        after.0 - before.0,
        3,
        "what waits ahead, the message, mark sent"
    );
    assert!(
        after.1 - before.1 >= 2,
        "the look (a /messages page or more), then the send: {}",
        after.1 - before.1
    );
    sqs.delete_queue().queue_url(&queue).send().await.unwrap();
}
