//! The `retry` Lambda function (see `bridge::handlers::retry`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::retry::function()).await
}
