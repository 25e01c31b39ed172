//! The send path's cost, counted on the wire: DynamoDB requests through an
//! SDK interceptor, Matrix requests by the appservice client. The handler
//! runs in process on a real Lambda event (`events/send-message-plain.json`)
//! against the real table, queue and homeserver.

use bridge::config::MatrixConfig;
use bridge::handlers::send::{self, SendService};
use bridge::ids::PuppetNamer;
use bridge::matrix::AppserviceClient;
use bridge::metrics::Metrics;
use bridge::queue::SqsRetryQueue;
use bridge::store::DynamoStore;
use serde_json::{Value, json};

use crate::client::{Api, unique};
use crate::support::{counted_dynamo, sdk_config, stack_env, var};

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
        AppserviceClient::new(AppserviceClient::http_client().unwrap(), &config),
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
