//! The `media` Lambda function (see `bridge::handlers::media`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::media::function()).await
}
