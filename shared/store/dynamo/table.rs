//! The small layer between the capability modules and the DynamoDB client:
//! items to and from records (with `serde_dynamo`), one [`Write`] shape for
//! conditional puts, updates and checks, alone or in a transaction, reads by
//! key, batch and query, and the mapping of SDK errors onto [`StoreError`].

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, PutRequest, TransactWriteItem,
    Update, WriteRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;
use crate::store::keys::{Key, KeyRange, SortKeys};

pub type Item = HashMap<String, AttributeValue>;

type Names = HashMap<String, String>;
type Values = HashMap<String, AttributeValue>;

/// How often unprocessed batch items are tried again before giving up.
const BATCH_ATTEMPTS: u32 = 5;
/// The most keys one `BatchGetItem` takes.
const BATCH_GET_MAX: usize = 100;
/// The most items one `BatchWriteItem` takes.
const BATCH_WRITE_MAX: usize = 25;

/// The condition that an item has the key of the write.
const EXISTS: &str = "attribute_exists(pk)";
/// The condition that no item has the key of the write.
const NEW: &str = "attribute_not_exists(pk)";

/// A string attribute value.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute value.
pub fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key_item(key: Key) -> Item {
    HashMap::from([("pk".to_owned(), s(key.pk)), ("sk".to_owned(), s(key.sk))])
}

/// The key of an item read from the table.
pub fn key_of(item: &Item) -> Option<Key> {
    match (item.get("pk"), item.get("sk")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Some(Key {
            pk: pk.clone(),
            sk: sk.clone(),
        }),
        _ => None,
    }
}

/// `record` as the item stored under `key`.
pub fn item<T: Serialize>(key: Key, record: &T) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(record).map_err(|err| StoreError::Corrupt(err.into()))?;
    item.extend(key_item(key));
    Ok(item)
}

/// The record an item holds (its key attributes are ignored).
pub fn record<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|err| StoreError::Corrupt(err.into()))
}

/// `value` as one attribute, as it is stored inside a record.
pub fn value<T: Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(|err| StoreError::Corrupt(err.into()))
}

/// A write whose condition failed did nothing, and that is fine.
pub fn unless_rejected(result: Result<(), StoreError>) -> Result<(), StoreError> {
    match result {
        Err(StoreError::Rejected) => Ok(()),
        other => other,
    }
}

enum Action {
    Put(Item),
    Update { key: Key, expression: &'static str },
    Check(Key),
    Delete(Key),
}

/// One conditional write: a put, an update, a delete or (in a transaction) a check,
/// with its expressions' `#name` and `:value` placeholders. Expressions are
/// `'static`: they are code, and every value goes through a placeholder.
pub struct Write {
    action: Action,
    condition: Option<&'static str>,
    names: Names,
    values: Values,
}

impl Write {
    fn new(action: Action, condition: Option<&'static str>) -> Self {
        Self {
            action,
            condition,
            names: Names::new(),
            values: Values::new(),
        }
    }

    /// Writes `item`, replacing any item with its key.
    pub fn put(item: Item) -> Self {
        Self::new(Action::Put(item), None)
    }

    /// Applies the update `expression` to the item with `key`.
    pub fn update(key: Key, expression: &'static str) -> Self {
        Self::new(Action::Update { key, expression }, None)
    }

    /// Deletes the item with `key` (deleting none is no error).
    pub fn delete(key: Key) -> Self {
        Self::new(Action::Delete(key), None)
    }

    /// Checks `condition` on the item with `key`, without changing it; only
    /// meaningful in a transaction.
    pub fn check(key: Key, condition: &'static str) -> Self {
        Self::new(Action::Check(key), Some(condition))
    }

    /// Checks that an item has `key`; only meaningful in a transaction.
    pub fn check_exists(key: Key) -> Self {
        Self::check(key, EXISTS)
    }

    /// Only if `condition` holds.
    pub fn when(mut self, condition: &'static str) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Only if no item has this key yet.
    pub fn if_new(self) -> Self {
        self.when(NEW)
    }

    /// Only if an item has this key.
    pub fn if_exists(self) -> Self {
        self.when(EXISTS)
    }

    /// The attribute a `#name` placeholder stands for.
    pub fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names
            .insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    /// The value a `:value` placeholder stands for.
    pub fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    fn into_transact_item(self, table: &str) -> Result<TransactWriteItem, StoreError> {
        let condition = self.condition.map(str::to_owned);
        let (names, values) = placeholders(self.names, self.values);
        let item = TransactWriteItem::builder();
        Ok(match self.action {
            Action::Put(record) => item.put(build(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(record))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build(),
            )?),
            Action::Update { key, expression } => item.update(build(
                Update::builder()
                    .table_name(table)
                    .set_key(Some(key_item(key)))
                    .update_expression(expression)
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build(),
            )?),
            Action::Delete(key) => item.delete(build(
                Delete::builder()
                    .table_name(table)
                    .set_key(Some(key_item(key)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build(),
            )?),
            Action::Check(key) => item.condition_check(build(
                ConditionCheck::builder()
                    .table_name(table)
                    .set_key(Some(key_item(key)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build(),
            )?),
        }
        .build())
    }
}

/// The placeholders, each left out when empty (DynamoDB refuses empty maps).
fn placeholders(names: Names, values: Values) -> (Option<Names>, Option<Values>) {
    (
        (!names.is_empty()).then_some(names),
        (!values.is_empty()).then_some(values),
    )
}

/// The bridge's table: a client and the table's name.
#[derive(Clone, Debug)]
pub struct Table {
    client: Client,
    name: String,
}

impl Table {
    pub fn new(client: Client, name: String) -> Self {
        Self { client, name }
    }

    /// The record under `key`, read consistently.
    pub async fn get<T: DeserializeOwned>(&self, key: Key) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key_item(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        output.item.map(record).transpose()
    }

    /// The items under `keys` that exist, in any order, read consistently
    /// with `BatchGetItem` (no request for no keys; a key named twice is
    /// read once; more than one request takes are read at once). Unprocessed keys are tried again, with a
    /// backoff, a few times.
    pub async fn batch_get(&self, keys: Vec<Key>) -> Result<Vec<Item>, StoreError> {
        // DynamoDB refuses a batch that names a key twice.
        let mut seen = std::collections::HashSet::new();
        let keys = keys
            .into_iter()
            .filter(|key| seen.insert((key.pk.clone(), key.sk.clone())))
            .map(key_item)
            .collect::<Vec<_>>();
        let chunks = keys
            .chunks(BATCH_GET_MAX)
            .map(|chunk| self.batch_get_chunk(chunk));
        let found = futures::future::try_join_all(chunks).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn batch_get_chunk(&self, chunk: &[Item]) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(chunk.len());
        let mut pending = Some(build(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build(),
        )?);
        for attempt in 0.. {
            let Some(request) = pending.take() else { break };
            if attempt == BATCH_ATTEMPTS {
                return Err(StoreError::Unavailable(
                    "batch read kept being throttled".into(),
                ));
            }
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.name, request)
                .send()
                .await
                .map_err(classify)?;
            if let Some(mut responses) = output.responses {
                found.extend(responses.remove(&self.name).unwrap_or_default());
            }
            pending = output
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.name));
            if pending.is_some() {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Ok(found)
    }

    /// Writes `items` unconditionally with `BatchWriteItem` (not atomically;
    /// of two items with one key, the last; more than one request takes are
    /// written at once). Unprocessed items
    /// are tried again, with a backoff, a few times.
    pub async fn batch_put(&self, items: Vec<Item>) -> Result<(), StoreError> {
        // DynamoDB refuses a batch that names a key twice: the last one wins.
        let mut seen = std::collections::HashSet::new();
        let mut items: Vec<Item> = items
            .into_iter()
            .rev()
            .filter(|item| seen.insert(key_of(item).map(|key| (key.pk, key.sk))))
            .collect();
        items.reverse();
        let chunks = items
            .chunks(BATCH_WRITE_MAX)
            .map(|chunk| self.batch_put_chunk(chunk));
        futures::future::try_join_all(chunks).await?;
        Ok(())
    }

    async fn batch_put_chunk(&self, chunk: &[Item]) -> Result<(), StoreError> {
        let mut pending = chunk
            .iter()
            .map(|item| {
                let put = build(PutRequest::builder().set_item(Some(item.clone())).build())?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for attempt in 0.. {
            if pending.is_empty() {
                break;
            }
            if attempt == BATCH_ATTEMPTS {
                return Err(StoreError::Unavailable(
                    "batch write kept being throttled".into(),
                ));
            }
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.name, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(classify)?;
            pending = output
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.name))
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Ok(())
    }

    /// One write on its own: `PutItem`, `UpdateItem` or `DeleteItem` (a
    /// check alone is a transaction of one). `Rejected` when its condition fails.
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        let Write {
            action,
            condition,
            names,
            values,
        } = write;
        match action {
            Action::Put(item) => {
                let (names, values) = placeholders(names, values);
                self.client
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .set_condition_expression(condition.map(str::to_owned))
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await
                    .map_err(classify)?;
                Ok(())
            }
            Action::Update { key, expression } => {
                let (names, values) = placeholders(names, values);
                self.client
                    .update_item()
                    .table_name(&self.name)
                    .set_key(Some(key_item(key)))
                    .update_expression(expression)
                    .set_condition_expression(condition.map(str::to_owned))
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await
                    .map_err(classify)?;
                Ok(())
            }
            Action::Delete(key) => {
                let (names, values) = placeholders(names, values);
                self.client
                    .delete_item()
                    .table_name(&self.name)
                    .set_key(Some(key_item(key)))
                    .set_condition_expression(condition.map(str::to_owned))
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await
                    .map_err(classify)?;
                Ok(())
            }
            Action::Check(key) => {
                let check = Write {
                    action: Action::Check(key),
                    condition,
                    names,
                    values,
                };
                self.transact(vec![check]).await
            }
        }
    }

    /// All of `writes` or none, with `TransactWriteItems`. `Rejected` when
    /// the only reasons it was cancelled are failed conditions. A conflict
    /// with another transaction on the same items (concurrent sends to one
    /// conversation) is tried again after a jittered back-off.
    pub async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let items = writes
            .into_iter()
            .map(|write| write.into_transact_item(&self.name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match sent.map_err(classify_transaction) {
                Ok(_) => return Ok(()),
                Err(Cancelled::Conflict(_)) if started.elapsed() < CONFLICT_BUDGET => {
                    tokio::time::sleep(jittered(attempt)).await;
                    attempt += 1;
                }
                Err(Cancelled::Conflict(err) | Cancelled::Other(err)) => return Err(err),
            }
        }
    }

    /// Every item of `range`, in sort key order, read consistently, page
    /// after page.
    pub async fn query_all(&self, range: KeyRange) -> Result<Vec<Item>, StoreError> {
        pages(self.query(range).consistent_read(true), usize::MAX).await
    }

    /// Up to `limit` items of `range`, highest sort key first, read
    /// consistently, page after page: the table cuts a page at 1 MB.
    pub async fn query_last(&self, range: KeyRange, limit: usize) -> Result<Vec<Item>, StoreError> {
        let query = self
            .query(range)
            .scan_index_forward(false)
            .consistent_read(true);
        pages(query, limit).await
    }

    /// Up to `limit` items of the index `index` whose partition attribute
    /// has `partition`'s value and whose sort attribute is below `below`'s,
    /// lowest first (an index read is eventually consistent).
    pub async fn query_index_below(
        &self,
        index: &str,
        partition: (&str, &str),
        below: (&str, &str),
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.name)
            .index_name(index)
            .key_condition_expression("#pk = :pk AND #sk < :below")
            .expression_attribute_names("#pk", partition.0)
            .expression_attribute_names("#sk", below.0)
            .expression_attribute_values(":pk", s(partition.1))
            .expression_attribute_values(":below", s(below.1));
        pages(query, limit).await
    }

    fn query(&self, range: KeyRange) -> QueryFluentBuilder {
        let query = self
            .client
            .query()
            .table_name(&self.name)
            .expression_attribute_values(":pk", s(range.pk));
        match range.sk {
            SortKeys::Between(from, to) => query
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to)),
            SortKeys::Prefix(prefix) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :from)")
                .expression_attribute_values(":from", s(prefix)),
        }
    }
}

/// Up to `limit` items of `query`, page after page (a page ends at 1 MB).
async fn pages(query: QueryFluentBuilder, limit: usize) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    while items.len() < limit {
        let output = query
            .clone()
            .limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(classify)?;
        items.extend(output.items.unwrap_or_default());
        start = output.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    Ok(items)
}

/// The wait before trying unprocessed batch items again.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25 << attempt)
}

fn build<T>(result: Result<T, BuildError>) -> Result<T, StoreError> {
    result.map_err(|err| StoreError::Unavailable(Box::new(err)))
}

/// `Rejected` for a failed condition, `Unavailable` for anything else.
fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if err.code() == Some("ConditionalCheckFailedException") {
        StoreError::Rejected
    } else {
        StoreError::Unavailable(Box::new(err))
    }
}

/// How long a transaction that conflicted with others is tried again: 50
/// senders at once in one conversation conflict on its outbox, each send
/// twice (stored, then settled); a count of tries ran out under that load.
const CONFLICT_BUDGET: Duration = Duration::from_secs(8);

/// 20 ms doubling per attempt up to 640 ms, each wait a random point in it
/// ("full jitter"), so racing writers spread out.
fn jittered(attempt: u32) -> Duration {
    let ceiling = 20u64 << attempt.min(5);
    let random = (uuid::Uuid::new_v4().as_u128() % u128::from(ceiling)) as u64;
    Duration::from_millis(random.max(1))
}

/// Why a transaction failed: a conflict with a concurrent transaction on
/// the same items (worth trying again at once), or anything else.
enum Cancelled {
    Conflict(StoreError),
    Other(StoreError),
}

/// A cancelled transaction whose every reason is a failed condition is
/// `Rejected`; one cancelled by a conflict is a [`Cancelled::Conflict`]; a
/// throttle or anything else is `Unavailable`.
fn classify_transaction<R>(err: SdkError<TransactWriteItemsError, R>) -> Cancelled
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    {
        let reasons = cancelled.cancellation_reasons();
        let code = |reason: &aws_sdk_dynamodb::types::CancellationReason| {
            reason.code().unwrap_or("None").to_owned()
        };
        let only_conditions = !reasons.is_empty()
            && reasons
                .iter()
                .all(|reason| matches!(code(reason).as_str(), "None" | "ConditionalCheckFailed"));
        if only_conditions {
            return Cancelled::Other(StoreError::Rejected);
        }
        if reasons
            .iter()
            .any(|reason| code(reason) == "TransactionConflict")
        {
            return Cancelled::Conflict(StoreError::Unavailable(Box::new(err)));
        }
    }
    if matches!(
        err.as_service_error(),
        Some(TransactWriteItemsError::TransactionInProgressException(_))
    ) {
        return Cancelled::Conflict(StoreError::Unavailable(Box::new(err)));
    }
    Cancelled::Other(StoreError::Unavailable(Box::new(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            pk: "P#1".into(),
            sk: "S".into(),
        }
    }

    fn cancelled(codes: &[&str]) -> Cancelled {
        use aws_sdk_dynamodb::types::CancellationReason;
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        let mut exception = TransactionCanceledException::builder();
        for code in codes {
            exception =
                exception.cancellation_reasons(CancellationReason::builder().code(*code).build());
        }
        classify_transaction(SdkError::service_error(
            TransactWriteItemsError::TransactionCanceledException(exception.build()),
            (),
        ))
    }

    #[test]
    fn cancelled_transactions_are_told_apart() {
        assert!(matches!(
            cancelled(&["None", "ConditionalCheckFailed"]),
            Cancelled::Other(StoreError::Rejected)
        ));
        assert!(matches!(
            cancelled(&["None", "TransactionConflict"]),
            Cancelled::Conflict(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            cancelled(&["ThrottlingError", "None"]),
            Cancelled::Other(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn conflict_backoff_is_jittered_and_bounded() {
        let waits: Vec<Duration> = (0..50).map(|_| jittered(3)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_millis(1) && *w < Duration::from_millis(160))
        );
        assert!(waits.iter().any(|w| *w != waits[0]), "not all the same");
        assert!(jittered(30) < Duration::from_millis(20 << 5));
    }

    #[test]
    fn an_item_carries_its_key_over_the_record() {
        #[derive(Serialize)]
        struct Record {
            pk: &'static str,
            body: &'static str,
        }
        let item = item(
            key(),
            &Record {
                pk: "ignored",
                body: "b",
            },
        )
        .unwrap();
        assert_eq!(key_of(&item), Some(key()));
        assert_eq!(item.get("body"), Some(&s("b")));
    }

    #[test]
    fn writes_without_placeholders_send_no_empty_maps() {
        let check = Write::check_exists(key()).into_transact_item("t").unwrap();
        let check = check.condition_check().unwrap();
        assert_eq!(check.condition_expression(), EXISTS);
        assert!(check.expression_attribute_names().is_none());
        assert!(check.expression_attribute_values().is_none());

        let update = Write::update(key(), "SET #a = :a")
            .if_exists()
            .name("#a", "a")
            .value(":a", n(1))
            .into_transact_item("t")
            .unwrap();
        let update = update.update().unwrap();
        assert_eq!(update.condition_expression(), Some(EXISTS));
        assert_eq!(
            update.expression_attribute_names().map(HashMap::len),
            Some(1)
        );
        assert_eq!(
            update.expression_attribute_values().map(HashMap::len),
            Some(1)
        );
    }
}
