//! Creates the table and queues of `template.yaml` on the local emulator,
//! through the real AWS SDK. Idempotent: an existing table is left as it is,
//! an existing queue gets the attributes declared here.
//!
//! [`TABLE`] and [`QUEUES`] say what `template.yaml` declares; a test compares
//! them with the template, so the local stack cannot drift from it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use bridge::runtime::BoxError;

/// The bridge's table (`BridgeTable` in `template.yaml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The partition key (a string attribute).
    pub hash_key: &'static str,
    /// The sort key (a string attribute).
    pub range_key: &'static str,
    /// On-demand capacity (`PAY_PER_REQUEST`).
    pub on_demand: bool,
    /// The attribute DynamoDB's TTL expires items by.
    pub ttl_attribute: &'static str,
    /// The global secondary indexes (name, hash key, range key; string
    /// keys, all attributes projected): the store's pending and outbox
    /// indexes.
    pub indexes: &'static [(&'static str, &'static str, &'static str)],
}

impl TableSpec {
    /// The attributes its keys and its indexes' keys name, each once.
    pub fn key_attributes(&self) -> Vec<&'static str> {
        let mut attributes = vec![self.hash_key, self.range_key];
        for (_, hash, range) in self.indexes {
            for attribute in [*hash, *range] {
                if !attributes.contains(&attribute) {
                    attributes.push(attribute);
                }
            }
        }
        attributes
    }
}

pub const TABLE: TableSpec = TableSpec {
    hash_key: "pk",
    range_key: "sk",
    on_demand: true,
    ttl_attribute: "expires_at",
    indexes: &[
        (
            bridge::store::PENDING_INDEX,
            bridge::store::PENDING_KEY,
            bridge::store::PENDING_SINCE,
        ),
        (
            bridge::store::OUTBOX_INDEX,
            bridge::store::OUTBOX_KEY,
            bridge::store::PENDING_SINCE,
        ),
    ],
};

/// A queue of `template.yaml`, with the attributes that matter locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Its logical id in `template.yaml`.
    pub logical_id: &'static str,
    /// Its name on the emulator (`.fifo` for a FIFO queue).
    pub name: &'static str,
    /// The `.local/stack.env` key of its URL.
    pub env_key: &'static str,
    pub fifo: bool,
    pub content_based_deduplication: Option<bool>,
    /// Seconds; SQS's default (30) when `None`.
    pub visibility_timeout: Option<u32>,
    /// Seconds; SQS's default (4 days) when `None`.
    pub message_retention_period: Option<u32>,
    pub redrive: Option<Redrive>,
}

/// Where a queue's messages go after too many receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redrive {
    /// The logical id of the dead-letter queue (one of [`QUEUES`]).
    pub dead_letter_queue: &'static str,
    pub max_receive_count: u32,
}

/// The template's `RetryMaxReceiveCount` parameter, at its default.
pub const RETRY_MAX_RECEIVE_COUNT: u32 = 100;

/// Fourteen days, the longest SQS keeps a message.
const FOURTEEN_DAYS: u32 = 14 * 24 * 60 * 60;

pub const QUEUES: &[QueueSpec] = &[
    QueueSpec {
        logical_id: "RetryQueue",
        name: "bridge-retry.fifo",
        env_key: "BRIDGE_RETRY_QUEUE_URL",
        fifo: true,
        content_based_deduplication: Some(false),
        visibility_timeout: Some(180),
        message_retention_period: Some(FOURTEEN_DAYS),
        redrive: Some(Redrive {
            dead_letter_queue: "RetryDeadLetterQueue",
            max_receive_count: RETRY_MAX_RECEIVE_COUNT,
        }),
    },
    QueueSpec {
        logical_id: "RetryDeadLetterQueue",
        name: "bridge-retry-dlq.fifo",
        env_key: "BRIDGE_RETRY_DLQ_URL",
        fifo: true,
        content_based_deduplication: None,
        visibility_timeout: None,
        message_retention_period: Some(FOURTEEN_DAYS),
        redrive: None,
    },
    QueueSpec {
        logical_id: "InboundQueue",
        name: "bridge-inbound.fifo",
        env_key: "BRIDGE_INBOUND_QUEUE_URL",
        fifo: true,
        content_based_deduplication: Some(false),
        visibility_timeout: None,
        message_retention_period: Some(FOURTEEN_DAYS),
        redrive: None,
    },
];

/// What [`run`] made: each queue's `.local/stack.env` key and URL, in the
/// order of [`QUEUES`].
#[derive(Debug, Default)]
pub struct Created {
    pub queue_urls: Vec<(String, String)>,
}

impl Created {
    /// `KEY=value` lines for `.local/stack.env`.
    pub fn lines(&self) -> Vec<String> {
        self.queue_urls
            .iter()
            .map(|(key, url)| format!("{key}={url}"))
            .collect()
    }
}

/// Creates `table` as [`TABLE`] and `queues`, dead-letter queues before the
/// queues that name them.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    table: &str,
    queues: &[QueueSpec],
) -> Result<Created, BoxError> {
    create_table(&aws_sdk_dynamodb::Client::new(sdk), table).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut made: HashMap<&str, (String, String)> = HashMap::new();
    for queue in creation_order(queues)? {
        let mut attributes = queue_attributes(queue);
        if let Some(redrive) = queue.redrive {
            let (_, dlq_arn) = made
                .get(redrive.dead_letter_queue)
                .ok_or_else(|| format!("{}: no queue {}", queue.name, redrive.dead_letter_queue))?;
            let policy = serde_json::json!({
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": redrive.max_receive_count,
            });
            attributes.push((QueueAttributeName::RedrivePolicy, policy.to_string()));
        }
        let url = create_queue(&sqs, queue.name, attributes).await?;
        let arn = queue_arn(&sqs, &url).await?;
        made.insert(queue.logical_id, (url, arn));
    }
    let queue_urls = queues
        .iter()
        .filter_map(|queue| {
            let (url, _) = made.get(queue.logical_id)?;
            Some((queue.env_key.to_owned(), url.clone()))
        })
        .collect();
    Ok(Created { queue_urls })
}

/// `queues` with every dead-letter queue before the queues that use it.
fn creation_order(queues: &[QueueSpec]) -> Result<Vec<&QueueSpec>, BoxError> {
    let mut ordered: Vec<&QueueSpec> = Vec::with_capacity(queues.len());
    while ordered.len() < queues.len() {
        let before = ordered.len();
        for queue in queues {
            let placed = |id: &str| ordered.iter().any(|q| q.logical_id == id);
            if !placed(queue.logical_id)
                && queue.redrive.is_none_or(|r| placed(r.dead_letter_queue))
            {
                ordered.push(queue);
            }
        }
        if ordered.len() == before {
            return Err("the queues' dead-letter queues are missing or form a cycle".into());
        }
    }
    Ok(ordered)
}

/// The attributes of `queue` but its redrive policy (which needs an ARN).
fn queue_attributes(queue: &QueueSpec) -> Vec<(QueueAttributeName, String)> {
    let mut attributes = Vec::new();
    if queue.fifo {
        attributes.push((QueueAttributeName::FifoQueue, "true".to_owned()));
    }
    if let Some(dedup) = queue.content_based_deduplication {
        attributes.push((
            QueueAttributeName::ContentBasedDeduplication,
            dedup.to_string(),
        ));
    }
    if let Some(seconds) = queue.visibility_timeout {
        attributes.push((QueueAttributeName::VisibilityTimeout, seconds.to_string()));
    }
    if let Some(seconds) = queue.message_retention_period {
        attributes.push((
            QueueAttributeName::MessageRetentionPeriod,
            seconds.to_string(),
        ));
    }
    attributes
}

/// Creates the bridge's table as [`TABLE`] says unless it exists.
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
    let billing = if TABLE.on_demand {
        BillingMode::PayPerRequest
    } else {
        BillingMode::Provisioned
    };
    let mut indexes = Vec::new();
    for (name, hash, range) in TABLE.indexes {
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(*name)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        );
    }
    let definitions = TABLE
        .key_attributes()
        .iter()
        .map(|name| attribute(name))
        .collect::<Result<Vec<_>, _>>()?;
    let created = dynamo
        .create_table()
        .table_name(table)
        .billing_mode(billing)
        .set_attribute_definitions(Some(definitions.clone()))
        .key_schema(key(TABLE.hash_key, KeyType::Hash)?)
        .key_schema(key(TABLE.range_key, KeyType::Range)?)
        .set_global_secondary_indexes(Some(indexes.clone()))
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            // A table from before an index was declared gets it added (one
            // index per update, as DynamoDB takes them).
            let described = dynamo.describe_table().table_name(table).send().await?;
            let existing: Vec<String> = described
                .table()
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i.index_name().map(str::to_owned))
                .collect();
            for index in indexes
                .iter()
                .filter(|index| !existing.iter().any(|name| name == index.index_name()))
            {
                dynamo
                    .update_table()
                    .table_name(table)
                    .set_attribute_definitions(Some(definitions.clone()))
                    .global_secondary_index_updates(
                        GlobalSecondaryIndexUpdate::builder()
                            .create(
                                CreateGlobalSecondaryIndexAction::builder()
                                    .index_name(index.index_name())
                                    .set_key_schema(Some(index.key_schema().to_vec()))
                                    .set_projection(index.projection().cloned())
                                    .build()?,
                            )
                            .build(),
                    )
                    .send()
                    .await?;
            }
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    }
    dynamo
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TABLE.ttl_attribute)
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

/// Creates the queue, or gives an existing one these attributes (a queue
/// made by an older setup may differ; SQS refuses to create it again).
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String, BoxError> {
    let mut request = sqs.create_queue().queue_name(name);
    for (attribute, value) in &attributes {
        request = request.attributes(attribute.clone(), value);
    }
    let url = match request.send().await {
        Ok(output) => output.queue_url,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_queue_name_exists()) =>
        {
            let url = sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await?
                .queue_url
                .ok_or_else(|| format!("no URL returned for queue {name}"))?;
            let mut update = sqs.set_queue_attributes().queue_url(&url);
            for (attribute, value) in attributes {
                // Fixed at creation; the name already says it.
                if attribute != QueueAttributeName::FifoQueue {
                    update = update.attributes(attribute, value);
                }
            }
            update.send().await?;
            Some(url)
        }
        Err(err) => return Err(err.into()),
    };
    url.ok_or_else(|| format!("no URL returned for queue {name}").into())
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

#[cfg(test)]
mod tests {
    use serde_norway::{Mapping, Value};

    use super::*;

    const TEMPLATE: &str = include_str!("../../../template.yaml");

    /// Queue properties the local stack leaves out: encryption and FIFO
    /// throughput settings change nothing on loopback.
    const NOT_EMULATED: &[&str] = &[
        "DeduplicationScope",
        "FifoThroughputLimit",
        "KmsMasterKeyId",
        "SqsManagedSseEnabled",
    ];

    const COMPARED: &[&str] = &[
        "FifoQueue",
        "ContentBasedDeduplication",
        "VisibilityTimeout",
        "MessageRetentionPeriod",
        "RedrivePolicy",
    ];

    fn template() -> Value {
        serde_norway::from_str(TEMPLATE).unwrap()
    }

    fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<(String, &'a Mapping)> {
        let resources = template["Resources"].as_mapping().unwrap();
        let mut found: Vec<(String, &Mapping)> = resources
            .iter()
            .filter(|(_, resource)| resource["Type"].as_str() == Some(kind))
            .map(|(id, resource)| {
                let properties = resource["Properties"].as_mapping().unwrap();
                (id.as_str().unwrap().to_owned(), properties)
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// A scalar, with `!Ref Parameter` resolved to the parameter's default.
    fn resolve<'a>(template: &'a Value, value: &'a Value) -> &'a Value {
        match value {
            Value::Tagged(tagged) if tagged.tag == "Ref" => {
                let parameter = tagged.value.as_str().unwrap();
                &template["Parameters"][parameter]["Default"]
            }
            other => other,
        }
    }

    fn number(template: &Value, value: &Value) -> u32 {
        match resolve(template, value) {
            Value::Number(n) => u32::try_from(n.as_u64().unwrap()).unwrap(),
            Value::String(s) => s.parse().unwrap(),
            other => panic!("not a number: {other:?}"),
        }
    }

    /// A table's or an index's `KeySchema`, as (attribute, key type) pairs.
    fn key_schema(resource: &Mapping) -> Vec<(&str, &str)> {
        resource["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap(),
                    k["KeyType"].as_str().unwrap(),
                )
            })
            .collect()
    }

    fn boolean(template: &Value, value: &Value) -> bool {
        match resolve(template, value) {
            Value::Bool(b) => *b,
            Value::String(s) => s.parse().unwrap(),
            other => panic!("not a boolean: {other:?}"),
        }
    }

    /// `!GetAtt Queue.Arn` -> `Queue`.
    fn arn_of(value: &Value) -> String {
        match value {
            Value::Tagged(tagged) if tagged.tag == "GetAtt" => {
                let target = tagged.value.as_str().unwrap();
                target.strip_suffix(".Arn").unwrap().to_owned()
            }
            other => panic!("a dead-letter target that is not !GetAtt X.Arn: {other:?}"),
        }
    }

    /// (logical id, fifo, content-based dedup, visibility, retention,
    /// (dead-letter queue, max receives)) of a queue.
    type Row = (
        String,
        bool,
        Option<bool>,
        Option<u32>,
        Option<u32>,
        Option<(String, u32)>,
    );

    fn row(queue: &QueueSpec) -> Row {
        (
            queue.logical_id.to_owned(),
            queue.fifo,
            queue.content_based_deduplication,
            queue.visibility_timeout,
            queue.message_retention_period,
            queue
                .redrive
                .map(|r| (r.dead_letter_queue.to_owned(), r.max_receive_count)),
        )
    }

    #[test]
    fn the_local_queues_are_the_templates() {
        let template = template();
        let mut theirs = Vec::new();
        for (id, properties) in resources_of_type(&template, "AWS::SQS::Queue") {
            for key in properties.keys() {
                let key = key.as_str().unwrap();
                assert!(
                    COMPARED.contains(&key) || NOT_EMULATED.contains(&key),
                    "{id}.{key} is new in template.yaml: add it to QUEUES (and compare it here) \
                     or to NOT_EMULATED"
                );
            }
            let get = |key: &str| properties.get(key);
            theirs.push((
                id,
                get("FifoQueue").is_some_and(|v| boolean(&template, v)),
                get("ContentBasedDeduplication").map(|v| boolean(&template, v)),
                get("VisibilityTimeout").map(|v| number(&template, v)),
                get("MessageRetentionPeriod").map(|v| number(&template, v)),
                get("RedrivePolicy").map(|policy| {
                    (
                        arn_of(&policy["deadLetterTargetArn"]),
                        number(&template, &policy["maxReceiveCount"]),
                    )
                }),
            ));
        }
        let mut ours: Vec<Row> = QUEUES.iter().map(row).collect();
        ours.sort();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn local_queue_names_and_keys_fit() {
        for queue in QUEUES {
            assert_eq!(queue.fifo, queue.name.ends_with(".fifo"), "{}", queue.name);
            assert!(queue.env_key.starts_with("BRIDGE_") && queue.env_key.ends_with("_URL"));
        }
        let order: Vec<&str> = creation_order(QUEUES)
            .unwrap()
            .iter()
            .map(|q| q.logical_id)
            .collect();
        assert_eq!(
            order,
            ["RetryDeadLetterQueue", "InboundQueue", "RetryQueue"]
        );
    }

    #[test]
    fn functions_get_the_queues_stack_env_names() {
        // The functions read the retry queue's URL from the same variable the
        // template sets and stack.env holds.
        let variables = &template()["Globals"]["Function"]["Environment"]["Variables"];
        let reference = &variables["BRIDGE_RETRY_QUEUE_URL"];
        let Value::Tagged(tagged) = reference else {
            panic!("BRIDGE_RETRY_QUEUE_URL is not a !Ref: {reference:?}");
        };
        let queue = QUEUES
            .iter()
            .find(|q| q.env_key == "BRIDGE_RETRY_QUEUE_URL")
            .unwrap();
        assert_eq!(tagged.value.as_str(), Some(queue.logical_id));
    }

    #[test]
    fn the_local_table_is_the_templates() {
        let template = template();
        let tables = resources_of_type(&template, "AWS::DynamoDB::Table");
        assert_eq!(tables.len(), 1, "one table");
        let (_, properties) = &tables[0];
        assert_eq!(
            key_schema(properties),
            [(TABLE.hash_key, "HASH"), (TABLE.range_key, "RANGE")]
        );
        let attributes: Vec<(&str, &str)> = properties["AttributeDefinitions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["AttributeName"].as_str().unwrap(),
                    a["AttributeType"].as_str().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(&str, &str)> = TABLE
            .key_attributes()
            .into_iter()
            .map(|attribute| (attribute, "S"))
            .collect();
        assert_eq!(attributes, expected);
        assert_eq!(
            properties["BillingMode"].as_str() == Some("PAY_PER_REQUEST"),
            TABLE.on_demand
        );
        let ttl = &properties["TimeToLiveSpecification"];
        assert_eq!(ttl["AttributeName"].as_str(), Some(TABLE.ttl_attribute));
        assert!(boolean(&template, &ttl["Enabled"]));
        let indexes = properties["GlobalSecondaryIndexes"].as_sequence().unwrap();
        assert_eq!(
            indexes.len(),
            TABLE.indexes.len(),
            "the indexes created locally"
        );
        for (index, (index_name, index_hash, index_range)) in indexes.iter().zip(TABLE.indexes) {
            assert_eq!(index["IndexName"].as_str(), Some(*index_name));
            assert_eq!(
                key_schema(index.as_mapping().unwrap()),
                [(*index_hash, "HASH"), (*index_range, "RANGE")]
            );
            assert_eq!(index["Projection"]["ProjectionType"].as_str(), Some("ALL"));
        }
        assert!(
            properties.get("LocalSecondaryIndexes").is_none(),
            "the template has local indexes now: create them locally too"
        );
    }
}
