//! A `lambda_runtime` hello-world: the yardstick `make bench` measures the
//! functions against (same profile, same run, same loopback Runtime API).
//! It answers every event with an API Gateway style `200`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn hello(_: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(json!({"statusCode": 200, "body": "hello"}))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(hello)).await
}
