//! The `provision` Lambda function (see `bridge::handlers::provision`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::provision::function()).await
}
