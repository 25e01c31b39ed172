//! The cost of a send, an edit and a delete, counted on the wire: DynamoDB
//! requests through an SDK interceptor, Matrix requests by the appservice
//! client. The handlers run in process on real Lambda events (`events/`)
//! against the real table, queue and homeserver.

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

use bridge::function::Handler;
use bridge::handlers::registry;
use bridge::ports::{InitError, Ports};
use support_ports::Counted;

use crate::client::{Api, unique};
use crate::support::{RoundTrips, counted_dynamo, sdk_config, stack_env, var};

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
        pub async fn new() -> Self {
            let sdk = sdk_config().await;
            let (dynamo, trips) = counted_dynamo(&sdk);
            let config = MatrixConfig::from_env(stack_env()).unwrap();
            Self {
                store: DynamoStore::new(dynamo, var("BRIDGE_TABLE")),
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

        /// DynamoDB round trips and Matrix requests so far.
        pub fn count(&self) -> (usize, u64) {
            (self.trips.count(), self.matrix.requests_sent())
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
    let api = Api::new();
    let alice = unique("alice");
    let conversation = unique("trips");
    api.provision(&json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;
    let sent = api
        .json(
            "POST",
            &format!("/v1/conversations/{conversation}/messages"),
            &crate::client::token(&alice, false),
            &json!({"body": "to be edited, then deleted"}),
        )
        .await;
    assert_eq!(sent.status, 201);
    let message = sent.body["id"].as_str().unwrap();

    let ports = Counted::new().await;
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
    let mut event: Value =
        serde_json::from_str(include_str!("../../events/send-message-plain.json")).unwrap();
    let path = format!("/v1/conversations/{conversation}/messages");
    event["rawPath"] = json!(path);
    event["pathParameters"]["id"] = json!(conversation);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(user);
    event["headers"]["idempotency-key"] = json!(unique("key"));
    event["body"] = json!(json!({"body": body}).to_string());
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_warm_send_costs_two_table_round_trips_and_one_matrix_request() {
    let api = Api::new();
    let alice = unique("alice");
    let conversation = unique("trips");
    api.provision(&json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;

    let sdk = sdk_config().await;
    let (dynamo, trips) = counted_dynamo(&sdk);
    let config = MatrixConfig::from_env(stack_env()).unwrap();
    let service = SendService::new(
        DynamoStore::new(dynamo, var("BRIDGE_TABLE")),
        AppserviceClient::local(AppserviceClient::http_client().unwrap(), &config).unwrap(),
        SqsRetryQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            var("BRIDGE_RETRY_QUEUE_URL"),
        ),
        PuppetNamer::new(config.puppet_prefix.clone(), &config.server_name),
        Metrics::off(send::NAME),
    );

    let cold = service
        .handle(send_event(
            &conversation,
            &alice,
            "first, on a cold container",
        ))
        .await;
    assert_eq!(cold.status(), 201, "{:?}", cold.body());
    let (cold_trips, cold_requests) = (trips.count(), service.matrix().requests_sent());
    assert_eq!(
        (cold_trips, cold_requests),
        (3, 1),
        "cold: the room id is read once, then cached"
    );

    let warm = service
        .handle(send_event(&conversation, &alice, "second, warm"))
        .await;
    assert_eq!(warm.status(), 201, "{:?}", warm.body());
    assert_eq!(
        trips.count() - cold_trips,
        2,
        "warm send: insert + mark sent"
    );
    assert_eq!(
        service.matrix().requests_sent() - cold_requests,
        1,
        "warm send: one Matrix request"
    );
}
