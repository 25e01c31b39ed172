//! The `send` Lambda function: `POST /v1/conversations/{id}/messages`.

use bridge::runtime::{self, Adapters, InitError};

#[tokio::main]
async fn main() -> Result<(), InitError> {
    runtime::init_telemetry();
    let service = Adapters::from_env().send_service().await?;
    runtime::run_api(|request| service.handle(request)).await?;
    Ok(())
}
