//! The tokens as deployed functions get them: from Secrets Manager (moto's,
//! spoken to by the real SDK), read once at init, and read again when the
//! homeserver refuses the `as_token` or a request brings another `hs_token`
//! (a rotation), never per request.

use std::collections::HashMap;
use std::time::Instant;

use bridge::function::Handler;
use bridge::handlers::registry;
use bridge::matrix::Matrix;
use bridge::ports::Ports;
use bridge::runtime::Adapters;
use serde_json::{Value, json};

use crate::client::unique;
use crate::support::{sdk_config, stack_env, var};

/// A new secret holding `value`; its ARN.
async fn secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    let created = client
        .create_secret()
        .name(unique("bridge-token"))
        .secret_string(value)
        .send()
        .await
        .unwrap();
    created.arn().unwrap().to_owned()
}

async fn rotate(client: &aws_sdk_secretsmanager::Client, arn: &str, value: &str) {
    client
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

/// The stack's settings with `token` given by the secret `arn` instead.
fn deployed_env(token: &str, arn: &str) -> HashMap<String, String> {
    let mut env = stack_env().clone();
    env.remove(token);
    env.insert(format!("{token}_SECRET_ARN"), arn.to_owned());
    env
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn the_as_token_is_read_once_and_again_when_the_homeserver_refuses_it() {
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config().await);
    // Not yet the registration's token: as if it was rotated since init.
    let arn = secret(&secrets, "the-token-before-rotation").await;
    let adapters = Adapters::with_env(deployed_env("MATRIX_AS_TOKEN", &arn));
    let started = Instant::now();
    let matrix = adapters.matrix().await.unwrap();
    println!(
        "init with the as_token from Secrets Manager (moto, loopback): {:?}",
        started.elapsed()
    );
    rotate(&secrets, &arn, &var("MATRIX_AS_TOKEN")).await;
    let prefix = var("BRIDGE_PUPPET_PREFIX");
    // Refused with M_UNKNOWN_TOKEN, read again, sent again: registered.
    let first = format!("{prefix}{}", unique("rotated"));
    matrix.register_puppet(&first).await.unwrap();
    let sent = matrix.requests_sent();
    assert_eq!(sent, 2, "one refusal, one retry");
    // Cached: a secret changed now is not read until the homeserver refuses.
    rotate(&secrets, &arn, "a-later-rotation-not-yet-registered").await;
    let second = format!("{prefix}{}", unique("cached"));
    matrix.register_puppet(&second).await.unwrap();
    assert_eq!(matrix.requests_sent(), sent + 1);
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn the_hs_token_is_read_again_when_a_request_brings_another() {
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config().await);
    let arn = secret(&secrets, "hs-token-before-rotation").await;
    let adapters = Adapters::with_env(deployed_env("MATRIX_HS_TOKEN", &arn));
    let transactions = registry::<Adapters>()
        .into_iter()
        .find(|function| function.name == "transactions")
        .unwrap();
    let Handler::Http(handler) = transactions.handler(&adapters).await.unwrap() else {
        panic!("transactions is an HTTP function");
    };
    let ping = |token: &str| {
        let mut event: Value =
            serde_json::from_str(include_str!("../../events/transactions-push.json")).unwrap();
        let path = "/_matrix/app/v1/ping";
        event["routeKey"] = json!("POST /_matrix/app/v1/ping");
        event["requestContext"]["routeKey"] = json!("POST /_matrix/app/v1/ping");
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        event["requestContext"]["http"]["method"] = json!("POST");
        event["pathParameters"] = json!({});
        event["body"] = json!("{}");
        let headers = event["headers"].as_object_mut().unwrap();
        headers.remove("content-length");
        headers.insert("authorization".into(), json!(format!("Bearer {token}")));
        lambda_http::request::from_str(&event.to_string()).unwrap()
    };
    assert_eq!(
        handler
            .call(ping("hs-token-before-rotation"))
            .await
            .status(),
        200
    );
    // Rotated: the homeserver now sends the new token, which the function
    // does not have yet; it reads the secret again and accepts it.
    rotate(&secrets, &arn, "hs-token-after-rotation").await;
    assert_eq!(
        handler.call(ping("hs-token-after-rotation")).await.status(),
        200
    );
    // The old one is refused now, and a wrong one is not read again and
    // again: still 403.
    for _ in 0..3 {
        assert_eq!(
            handler
                .call(ping("hs-token-before-rotation"))
                .await
                .status(),
            403
        );
    }
}
