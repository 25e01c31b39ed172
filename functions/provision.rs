//! The `provision` Lambda function: puppets, conversations and their rooms.
//! Routes: `PUT /v1/users/{user_id}`, `POST /v1/conversations`,
//! `GET /v1/conversations/{id}`.

use bridge::runtime::{self, Adapters, BoxError};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    runtime::init_telemetry();
    let provisioner = Adapters::load().await.provisioner()?;
    runtime::run_api(|request| provisioner.handle(request)).await
}
