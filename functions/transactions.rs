//! The `transactions` Lambda function (see `bridge::handlers::transactions`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::transactions::function()).await
}
