//! Creates the table and queues of `template.yaml` on the local emulator,
//! through the real AWS SDK. Idempotent: what exists is left as it is.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use bridge::runtime::BoxError;

/// The queue URLs, as `KEY=value` lines for `.local/stack.env`.
pub struct Created {
    pub lines: Vec<String>,
}

pub async fn run(sdk: &aws_config::SdkConfig, table: &str) -> Result<Created, BoxError> {
    create_table(&aws_sdk_dynamodb::Client::new(sdk), table).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let retry_dlq = create_queue(&sqs, "bridge-retry-dlq.fifo", None).await?;
    let retry_dlq_arn = queue_arn(&sqs, &retry_dlq).await?;
    let redrive =
        serde_json::json!({"deadLetterTargetArn": retry_dlq_arn, "maxReceiveCount": 8}).to_string();
    let retry = create_queue(&sqs, "bridge-retry.fifo", Some(redrive)).await?;
    let inbound = create_queue(&sqs, "bridge-inbound.fifo", None).await?;
    Ok(Created {
        lines: vec![
            format!("BRIDGE_RETRY_QUEUE_URL={retry}"),
            format!("BRIDGE_RETRY_DLQ_URL={retry_dlq}"),
            format!("BRIDGE_INBOUND_QUEUE_URL={inbound}"),
        ],
    })
}

/// Creates the bridge's table (keys `pk`/`sk`, TTL on `expires_at`) unless it exists.
pub async fn create_table(dynamo: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), BoxError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let created = dynamo
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    }
    dynamo
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    redrive: Option<String>,
) -> Result<String, BoxError> {
    let mut request = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, "60");
    if let Some(policy) = redrive {
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    let output = request.send().await?;
    output
        .queue_url
        .ok_or_else(|| format!("no URL returned for queue {name}").into())
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, BoxError> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    output
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| format!("no ARN returned for queue {url}").into())
}
