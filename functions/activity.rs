//! The `activity` Lambda function (see `bridge::handlers::activity`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::activity::function()).await
}
