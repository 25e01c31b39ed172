//! The `send` Lambda function: `POST /v1/conversations/{id}/messages`.

use bridge::runtime::{self, Adapters, BoxError};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    runtime::init_telemetry();
    let service = Adapters::load().await.send_service()?;
    runtime::run_api(|request| service.handle(request)).await
}
