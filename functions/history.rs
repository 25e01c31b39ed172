//! The `history` Lambda function: `GET /v1/conversations/{id}/messages` and
//! `GET /v1/conversations/{id}/messages/{message_id}`. It reads the table
//! only, so it needs no Matrix token.

use bridge::runtime::{self, Adapters, InitError};

#[tokio::main]
async fn main() -> Result<(), InitError> {
    runtime::init_telemetry();
    let history = Adapters::from_env().history().await?;
    runtime::run_api(|request| history.handle(request)).await?;
    Ok(())
}
