//! The DynamoDB adapter of the store port: one table, `pk`/`sk` string keys
//! (laid out in [`keys`](super::keys)), records (de)serialized with
//! `serde_dynamo`, invariants in condition expressions, and multi-item
//! changes in `TransactWriteItems`.
//!
//! [`table`] is the layer over the SDK; each capability is implemented in
//! its own module on top of it. Round trips: a direct send is one
//! transaction to insert and one to mark it sent; every lookup is one
//! `GetItem`, `BatchGetItem` or `Query`; batches larger than one request
//! takes are sent at once.

mod conversations;
mod idempotency;
mod media;
mod members;
mod messages;
mod syncs;
mod table;
mod transactions;

use aws_sdk_dynamodb::Client;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::{StoreError, keys};
use table::Table;

/// The store port on a DynamoDB table. Clones share the client.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    table: Table,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table.into()),
        }
    }

    /// Up to `limit` records of one partition of the pending index
    /// (`keys::PENDING` or `keys::PENDING_SYNCS`) pending since before
    /// `older_than`, the longest pending first.
    async fn stale<T: DeserializeOwned>(
        &self,
        partition: &str,
        older_than: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        self.table
            .query_index_below(
                keys::PENDING_INDEX,
                (keys::PENDING_KEY, partition),
                (keys::PENDING_SINCE, &keys::pending_since(older_than)),
                limit,
            )
            .await?
            .into_iter()
            .map(table::record)
            .collect()
    }
}
