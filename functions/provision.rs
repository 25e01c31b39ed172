//! The `provision` Lambda function: puppets, conversations and their rooms.
//! Routes: `PUT /v1/users/{user_id}`, `POST /v1/conversations`,
//! `GET /v1/conversations/{id}`.

use bridge::runtime::{self, Adapters, InitError};

#[tokio::main]
async fn main() -> Result<(), InitError> {
    runtime::init_telemetry();
    let provisioner = Adapters::from_env().provisioner().await?;
    runtime::run_api(|request| provisioner.handle(request)).await?;
    Ok(())
}
