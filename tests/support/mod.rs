//! What the integration tests share: the local stack's environment
//! (`.local/stack.env`, written by `scripts/stack up`) and clients for it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The stack's `KEY=value` environment. Panics, saying what to do, when the
/// stack has not been started.
pub fn stack_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/stack.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "{}: {err}. Start the local stack first: scripts/stack up (make test does it)",
                path.display()
            )
        });
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect()
    })
}

pub fn var(name: &str) -> String {
    stack_env()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is missing from .local/stack.env"))
}

/// The AWS SDK configuration for the emulator, from the stack's settings.
pub async fn sdk_config() -> SdkConfig {
    sdk_at(&var("AWS_ENDPOINT_URL")).await
}

/// The same, for the emulator (or a proxy in front of it) at `endpoint`.
pub async fn sdk_at(endpoint: &str) -> SdkConfig {
    bridge::aws_http::loader()
        .expect("the SDK's HTTP client builds")
        .endpoint_url(endpoint)
        .region(Region::new(var("AWS_REGION")))
        .credentials_provider(Credentials::new(
            var("AWS_ACCESS_KEY_ID"),
            var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "stack",
        ))
        .load()
        .await
}

/// Counts the HTTP requests an AWS client sends (retries included).
#[derive(Clone, Debug, Default)]
pub struct RoundTrips(Arc<AtomicUsize>);

impl RoundTrips {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for RoundTrips {
    fn name(&self) -> &'static str {
        "RoundTrips"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A DynamoDB client whose requests are counted.
pub fn counted_dynamo(sdk: &SdkConfig) -> (aws_sdk_dynamodb::Client, RoundTrips) {
    let trips = RoundTrips::default();
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .interceptor(trips.clone())
        .build();
    (aws_sdk_dynamodb::Client::from_conf(config), trips)
}

/// A fresh FIFO queue `name`.fifo on the emulator; its URL.
pub async fn fresh_fifo_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create a queue on the emulator")
        .queue_url
        .expect("the new queue's URL")
}

/// A fresh table on the emulator, for tests that want one to themselves.
pub async fn fresh_table(sdk: &SdkConfig) -> String {
    let name = format!("test-{}", uuid::Uuid::new_v4().simple());
    bridge_dev::setup::create_table(&aws_sdk_dynamodb::Client::new(sdk), &name)
        .await
        .expect("create a table on the emulator");
    name
}
