//! The `retry` Lambda function: delivers messages from the FIFO retry queue
//! (SQS event source mapping, `ReportBatchItemFailures`).

// The runtime's future around the handler nests deeper than the default limit.
#![recursion_limit = "256"]

use std::convert::Infallible;

use aws_lambda_events::sqs::SqsEvent;
use bridge::runtime::{self, Adapters, InitError};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), InitError> {
    runtime::init_telemetry();
    let service = Adapters::from_env().retry_service().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let service = &service;
        async move { Ok::<_, Infallible>(service.handle(event.payload).await) }
    }))
    .await?;
    Ok(())
}
