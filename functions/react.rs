//! The `react` Lambda function (see `bridge::handlers::react`).

#[tokio::main]
async fn main() -> Result<(), bridge::runtime::InitError> {
    bridge::runtime::run(bridge::handlers::react::function()).await
}
