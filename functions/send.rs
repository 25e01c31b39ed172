//! The `send` Lambda function (see `bridge::handlers::send`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::send::function()).await
}
