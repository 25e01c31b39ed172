//! The `provision` Lambda function: puppets, conversations and their rooms.
//! Routes: `PUT /v1/users/{user_id}`, `POST /v1/conversations`,
//! `GET /v1/conversations/{id}`.

use bridge::handlers::provision::Provisioner;
use bridge::ids::PuppetNamer;
use bridge::runtime::{self, Adapters, BoxError};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    runtime::init_telemetry();
    let adapters = Adapters::load().await;
    let config = adapters.matrix_config()?;
    let provisioner = Provisioner {
        store: adapters.store()?,
        matrix: adapters.matrix(&config)?,
        namer: PuppetNamer::from_config(&config),
    };
    runtime::run_api(|request| provisioner.handle(request)).await
}
