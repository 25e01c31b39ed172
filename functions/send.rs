//! The `send` Lambda function: `POST /v1/conversations/{id}/messages`.

use bridge::handlers::send::SendService;
use bridge::ids::PuppetNamer;
use bridge::runtime::{self, Adapters, BoxError};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    runtime::init_telemetry();
    let adapters = Adapters::load().await;
    let config = adapters.matrix_config()?;
    let service = SendService::new(
        adapters.store()?,
        adapters.matrix(&config)?,
        adapters.retry_queue()?,
        PuppetNamer::from_config(&config),
    );
    runtime::run_api(|request| service.handle(request)).await
}
