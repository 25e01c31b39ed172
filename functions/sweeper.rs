//! The `sweeper` Lambda function (see `bridge::handlers::sweeper`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::sweeper::function()).await
}
