//! What a function's `main` does once per container: logging, the deployed
//! adapters configured from the environment ([`Adapters`]), the connections
//! its handler will use opened at init ([`Adapters::warm_up`]), and the
//! Lambda runtime loop for the function's trigger ([`run`]).

use std::convert::Infallible;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use lambda_http::service_fn;
use lambda_runtime::LambdaEvent;

use crate::config::{
    Env, InboundQueueConfig, MatrixConfig, ProcessEnv, RetryBackoff, RetryQueueConfig,
    SecretSetting, SweepSettings, TableConfig, fetch_policy, hs_token_setting, puppet_namer,
};
use crate::fetch::Fetcher;
use crate::function::{Function, Handler};
use crate::ids::PuppetNamer;
use crate::inbound::SqsInboundQueue;
use crate::matrix::AppserviceClient;
use crate::metrics::Metrics;
use crate::ports::Ports;
pub use crate::ports::{BoxError, InitError};
use crate::queue::SqsRetryQueue;
use crate::secrets::{CachedSecret, SecretsManagerSecret};
use crate::store::DynamoStore;

/// JSON logs (the runtime's subscriber honours the function's `LogFormat`
/// and level settings).
pub fn init_telemetry() {
    lambda_http::tracing::init_default_subscriber();
}

/// The AWS SDK configuration, loaded once ("expensive"); clients are cheap
/// to derive from it. `AWS_ENDPOINT_URL` points it at a local emulator.
/// Its HTTP client is the functions' one stack ([`crate::aws_http`]).
pub async fn aws_config() -> Result<aws_config::SdkConfig, reqwest::Error> {
    Ok(crate::aws_http::loader()?.load().await)
}

/// The deployed adapters, configured from the environment. The AWS SDK
/// configuration is loaded once, when first needed, after the settings of
/// what needs it were checked. The table's and the homeserver's clients are
/// built once, and shared by every handler of the container (their
/// connection pools with them), so that [`Adapters::warm_up`] opens the
/// connections the handler then uses.
pub struct Adapters {
    env: Box<dyn Env + Send + Sync>,
    sdk: tokio::sync::OnceCell<aws_config::SdkConfig>,
    store: tokio::sync::OnceCell<DynamoStore>,
    matrix: tokio::sync::OnceCell<AppserviceClient>,
    /// The function these adapters serve, whose metrics the Matrix client
    /// writes (`MatrixLatency`); none outside a function (tools, tests).
    function: Option<&'static str>,
}

/// How long init waits at most for the connections to open: a slow or
/// unreachable service must not hold the container back (the invocation
/// then connects, as it would have).
const WARM_UP_LIMIT: Duration = Duration::from_secs(2);

impl Adapters {
    /// Adapters reading the process environment.
    pub fn from_env() -> Self {
        Self::with_env(ProcessEnv)
    }

    pub fn with_env(env: impl Env + Send + Sync + 'static) -> Self {
        Self {
            env: Box::new(env),
            sdk: tokio::sync::OnceCell::new(),
            store: tokio::sync::OnceCell::new(),
            matrix: tokio::sync::OnceCell::new(),
            function: None,
        }
    }

    /// Opens, at init, the connections of the clients the handler was built
    /// with (the table, the homeserver; those it was not built with are left
    /// alone), at once, within [`WARM_UP_LIMIT`]: in Lambda the first TLS
    /// handshake is most of a cold start's first invocation, and init runs
    /// with more CPU than an invocation. A failure is only logged: the
    /// invocation connects as it would have. `BRIDGE_WARM_CONNECTIONS=0`
    /// turns it off (to measure the difference).
    pub async fn warm_up(&self) {
        if self.env.get("BRIDGE_WARM_CONNECTIONS").as_deref() == Some("0") {
            return;
        }
        let store = async {
            if let Some(store) = self.store.get()
                && let Err(err) = store.warm_up().await
            {
                tracing::warn!(error = %err, "the table's connection was not opened at init");
            }
        };
        let matrix = async {
            if let Some(matrix) = self.matrix.get()
                && let Err(err) = matrix.warm_up().await
            {
                tracing::warn!(error = %err, "the homeserver's connection was not opened at init");
            }
        };
        if tokio::time::timeout(WARM_UP_LIMIT, futures::future::join(store, matrix))
            .await
            .is_err()
        {
            tracing::warn!("the connections were not opened within the init's limit");
        }
    }

    /// The adapters of `function`: its Matrix calls are measured under its
    /// name.
    #[must_use]
    pub fn for_function(mut self, function: &'static str) -> Self {
        self.function = Some(function);
        self
    }

    async fn sdk(&self) -> Result<&aws_config::SdkConfig, reqwest::Error> {
        self.sdk.get_or_try_init(aws_config).await
    }

    /// A secret as its setting says: the value given (local use), or read
    /// from Secrets Manager now, once for the container.
    pub async fn secret(&self, setting: SecretSetting) -> Result<CachedSecret, InitError> {
        match setting {
            SecretSetting::Value(secret) => Ok(CachedSecret::fixed(secret)),
            SecretSetting::Stored { id, .. } => {
                let client = aws_sdk_secretsmanager::Client::new(self.sdk().await?);
                Ok(CachedSecret::fetched(SecretsManagerSecret::new(client, id)).await?)
            }
        }
    }

    /// An SQS client (for the local retry poller).
    pub async fn sqs(&self) -> Result<aws_sdk_sqs::Client, InitError> {
        Ok(aws_sdk_sqs::Client::new(self.sdk().await?))
    }
}

impl Ports for Adapters {
    type Store = DynamoStore;
    type Matrix = AppserviceClient;
    type Queue = SqsRetryQueue;
    type Inbound = SqsInboundQueue;

    async fn store(&self) -> Result<DynamoStore, InitError> {
        let store = self
            .store
            .get_or_try_init(|| async {
                let table = TableConfig::from_env(self.env.as_ref())?;
                Ok::<_, InitError>(DynamoStore::new(
                    aws_sdk_dynamodb::Client::new(self.sdk().await?),
                    table.table_name,
                ))
            })
            .await?;
        Ok(store.clone())
    }

    async fn matrix(&self) -> Result<AppserviceClient, InitError> {
        let client = self
            .matrix
            .get_or_try_init(|| async {
                let config = MatrixConfig::from_env(self.env.as_ref())?;
                let http = AppserviceClient::http_client()?;
                let as_token = self.secret(config.as_token.clone()).await?;
                let client = AppserviceClient::new(http, &config, as_token);
                Ok::<_, InitError>(match self.function {
                    Some(function) => client.with_metrics(self.metrics(function)),
                    None => client,
                })
            })
            .await?;
        Ok(client.clone())
    }

    async fn queue(&self) -> Result<SqsRetryQueue, InitError> {
        let queue = RetryQueueConfig::from_env(self.env.as_ref())?;
        Ok(SqsRetryQueue::new(self.sqs().await?, queue.queue_url))
    }

    async fn inbound(&self) -> Result<SqsInboundQueue, InitError> {
        let queue = InboundQueueConfig::from_env(self.env.as_ref())?;
        Ok(SqsInboundQueue::new(self.sqs().await?, queue.queue_url))
    }

    async fn hs_token(&self) -> Result<CachedSecret, InitError> {
        let setting = hs_token_setting(self.env.as_ref())?;
        self.secret(setting).await
    }

    fn namer(&self) -> Result<PuppetNamer, InitError> {
        Ok(puppet_namer(self.env.as_ref())?)
    }

    fn sweep_settings(&self) -> Result<SweepSettings, InitError> {
        Ok(SweepSettings::from_env(self.env.as_ref())?)
    }

    fn retry_backoff(&self) -> Result<RetryBackoff, InitError> {
        Ok(RetryBackoff::from_env(self.env.as_ref())?)
    }

    fn metrics(&self, function: &'static str) -> Metrics {
        Metrics::emf(function)
    }

    fn fetcher(&self) -> Result<Fetcher, InitError> {
        Ok(Fetcher::new(fetch_policy(self.env.as_ref())?)?)
    }
}

/// A function's whole `main`: telemetry, its handler built from the
/// environment, then the Lambda runtime loop for its trigger.
pub async fn run(function: Function<Adapters>) -> Result<(), InitError> {
    init_telemetry();
    let adapters = Adapters::from_env().for_function(function.name);
    let handler = function.handler(&adapters).await?;
    adapters.warm_up().await;
    match handler {
        Handler::Http(handler) => {
            lambda_http::run(service_fn(|request| {
                let response = handler.call(request);
                async move { Ok::<_, Infallible>(response.await) }
            }))
            .await?;
        }
        Handler::Scheduled(handler) => {
            lambda_runtime::run(lambda_runtime::service_fn(
                |_: LambdaEvent<serde_json::Value>| handler.call(),
            ))
            .await?;
        }
        Handler::Queue(handler) => {
            lambda_runtime::run(lambda_runtime::service_fn(
                |event: LambdaEvent<SqsEvent>| {
                    let response = handler.call(event.payload);
                    async move { Ok::<_, Infallible>(response.await) }
                },
            ))
            .await?;
        }
    }
    Ok(())
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
        let history = crate::handlers::registry::<Adapters>()
            .into_iter()
            .find(|function| function.name == "history")
            .expect("history is registered");
        let err = history
            .handler(&adapters)
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
