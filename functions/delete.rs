//! The `delete` Lambda function (see `bridge::handlers::delete`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::delete::function()).await
}
