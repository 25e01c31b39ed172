//! What every function's `main` does once per container: logging, metrics,
//! configuration, AWS clients, the HTTP client, and the Lambda runtime loop.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response, service_fn};

use crate::config::{
    ConfigError, Env, MatrixConfig, ProcessEnv, RetryQueueConfig, TableConfig, puppet_namer,
    retry_max_attempts,
};
use crate::handlers::history::History;
use crate::handlers::provision::Provisioner;
use crate::handlers::retry::RetryService;
use crate::handlers::send::SendService;
use crate::ids::PuppetNamer;
use crate::matrix::AppserviceClient;
use crate::queue::SqsRetryQueue;
use crate::store::DynamoStore;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// JSON logs (the runtime's subscriber honours the function's `LogFormat`
/// and level settings) and EMF metrics.
pub fn init_telemetry() {
    lambda_http::tracing::init_default_subscriber();
    crate::metrics::enable();
}

/// The AWS SDK configuration, loaded once ("expensive"); clients are cheap
/// to derive from it. `AWS_ENDPOINT_URL` points it at a local emulator.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// The adapters a function may need, built from one configuration load.
pub struct Adapters {
    sdk: aws_config::SdkConfig,
    env: Box<dyn Env + Send + Sync>,
}

impl Adapters {
    pub async fn load() -> Self {
        Self {
            sdk: aws_config().await,
            env: Box::new(ProcessEnv),
        }
    }

    pub fn store(&self) -> Result<DynamoStore, ConfigError> {
        let table = TableConfig::from_env(self.env.as_ref())?;
        Ok(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            table.table_name,
        ))
    }

    pub fn retry_queue(&self) -> Result<SqsRetryQueue, ConfigError> {
        let queue = RetryQueueConfig::from_env(self.env.as_ref())?;
        Ok(SqsRetryQueue::new(
            aws_sdk_sqs::Client::new(&self.sdk),
            queue.queue_url,
        ))
    }

    pub fn matrix_config(&self) -> Result<MatrixConfig, ConfigError> {
        MatrixConfig::from_env(self.env.as_ref())
    }

    pub fn matrix(&self, config: &MatrixConfig) -> Result<AppserviceClient, BoxError> {
        Ok(AppserviceClient::new(
            AppserviceClient::http_client()?,
            config,
        ))
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    /// The `provision` function's state.
    pub fn provisioner(&self) -> Result<Provisioner<DynamoStore, AppserviceClient>, BoxError> {
        let config = self.matrix_config()?;
        Ok(Provisioner {
            store: self.store()?,
            matrix: self.matrix(&config)?,
            namer: PuppetNamer::from_config(&config),
        })
    }

    /// The `send` function's state.
    pub fn send_service(
        &self,
    ) -> Result<SendService<DynamoStore, AppserviceClient, SqsRetryQueue>, BoxError> {
        let config = self.matrix_config()?;
        Ok(SendService::new(
            self.store()?,
            self.matrix(&config)?,
            self.retry_queue()?,
            PuppetNamer::from_config(&config),
        ))
    }

    /// The `history` function's state: the table only, no Matrix token.
    pub fn history(&self) -> Result<History<DynamoStore>, BoxError> {
        Ok(History {
            store: self.store()?,
            namer: puppet_namer(self.env.as_ref())?,
        })
    }

    /// The `retry` function's state.
    pub fn retry_service(&self) -> Result<RetryService<DynamoStore, AppserviceClient>, BoxError> {
        let config = self.matrix_config()?;
        Ok(RetryService::new(
            self.store()?,
            self.matrix(&config)?,
            retry_max_attempts(self.env.as_ref())?,
        ))
    }
}

/// Runs an API function: `handle` answers every request, errors included.
pub async fn run_api<F, Fut>(handle: F) -> Result<(), BoxError>
where
    F: Fn(Request) -> Fut + Send + Sync,
    Fut: Future<Output = Response<Body>> + Send,
{
    lambda_http::run(service_fn(|request| {
        let response = handle(request);
        async move { Ok::<_, Infallible>(response.await) }
    }))
    .await
}
