//! What every function's `main` does once per container: logging, metrics,
//! configuration, AWS clients, the HTTP client, and the Lambda runtime loop.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response, service_fn};

use crate::config::{
    Env, MatrixConfig, ProcessEnv, RetryQueueConfig, TableConfig, puppet_namer, retry_max_attempts,
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

/// What stops a function at init. `main` reports its error with `Debug`, so
/// this prints as a sentence (with its causes), not as a struct dump.
pub struct InitError(BoxError);

impl<E: Into<BoxError>> From<E> for InitError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl std::fmt::Debug for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::api::ErrorChain(self.0.as_ref()))
    }
}

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

/// Builds each function's state from the environment. Every setting a
/// function needs is checked before anything touches the network, and the
/// AWS SDK configuration is loaded once, when first needed.
pub struct Adapters {
    env: Box<dyn Env + Send + Sync>,
    sdk: tokio::sync::OnceCell<aws_config::SdkConfig>,
}

impl Adapters {
    /// Adapters reading the process environment.
    pub fn from_env() -> Self {
        Self::with_env(ProcessEnv)
    }

    pub fn with_env(env: impl Env + Send + Sync + 'static) -> Self {
        Self {
            env: Box::new(env),
            sdk: tokio::sync::OnceCell::new(),
        }
    }

    async fn sdk(&self) -> &aws_config::SdkConfig {
        self.sdk.get_or_init(aws_config).await
    }

    fn matrix(config: &MatrixConfig) -> Result<AppserviceClient, InitError> {
        Ok(AppserviceClient::new(
            AppserviceClient::http_client()?,
            config,
        ))
    }

    async fn store(&self, table: TableConfig) -> DynamoStore {
        DynamoStore::new(
            aws_sdk_dynamodb::Client::new(self.sdk().await),
            table.table_name,
        )
    }

    /// An SQS client (for the local retry poller).
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(self.sdk().await)
    }

    /// The `provision` function's state.
    pub async fn provisioner(
        &self,
    ) -> Result<Provisioner<DynamoStore, AppserviceClient>, InitError> {
        let config = MatrixConfig::from_env(self.env.as_ref())?;
        let table = TableConfig::from_env(self.env.as_ref())?;
        Ok(Provisioner {
            store: self.store(table).await,
            matrix: Self::matrix(&config)?,
            namer: PuppetNamer::from_config(&config),
        })
    }

    /// The `send` function's state.
    pub async fn send_service(
        &self,
    ) -> Result<SendService<DynamoStore, AppserviceClient, SqsRetryQueue>, InitError> {
        let config = MatrixConfig::from_env(self.env.as_ref())?;
        let table = TableConfig::from_env(self.env.as_ref())?;
        let queue = RetryQueueConfig::from_env(self.env.as_ref())?;
        Ok(SendService::new(
            self.store(table).await,
            Self::matrix(&config)?,
            SqsRetryQueue::new(self.sqs().await, queue.queue_url),
            PuppetNamer::from_config(&config),
        ))
    }

    /// The `history` function's state: the table only, no Matrix token.
    pub async fn history(&self) -> Result<History<DynamoStore>, InitError> {
        let namer = puppet_namer(self.env.as_ref())?;
        let table = TableConfig::from_env(self.env.as_ref())?;
        Ok(History {
            store: self.store(table).await,
            namer,
        })
    }

    /// The `retry` function's state.
    pub async fn retry_service(
        &self,
    ) -> Result<RetryService<DynamoStore, AppserviceClient>, InitError> {
        let config = MatrixConfig::from_env(self.env.as_ref())?;
        let table = TableConfig::from_env(self.env.as_ref())?;
        let max_attempts = retry_max_attempts(self.env.as_ref())?;
        Ok(RetryService::new(
            self.store(table).await,
            Self::matrix(&config)?,
            max_attempts,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn init_errors_print_as_sentences() {
        let err = InitError::from(ConfigError::Missing("BRIDGE_TABLE"));
        assert_eq!(
            format!("{err:?}"),
            "environment variable BRIDGE_TABLE is required but not set"
        );
    }

    #[tokio::test]
    async fn settings_are_checked_before_anything_connects() {
        // No AWS settings at all: the SDK would go looking for a region and
        // credentials, but the missing table is reported first.
        let adapters = Adapters::with_env([("MATRIX_SERVER_NAME", "localhost")]);
        let err = adapters
            .history()
            .await
            .err()
            .expect("history needs a table");
        assert_eq!(
            format!("{err:?}"),
            "environment variable BRIDGE_TABLE is required but not set"
        );
        assert!(
            adapters.sdk.get().is_none(),
            "the SDK configuration was not loaded"
        );
    }
}
