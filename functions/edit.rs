//! The `edit` Lambda function (see `bridge::handlers::edit`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::edit::function()).await
}
