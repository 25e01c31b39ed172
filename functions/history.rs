//! The `history` Lambda function (see `bridge::handlers::history`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::history::function()).await
}
