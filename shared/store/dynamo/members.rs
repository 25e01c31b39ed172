//! [`MemberStore`] on the table: members in their conversation's partition,
//! puppets each in their user's.

use aws_sdk_dynamodb::types::AttributeValue;
use ruma::UserId;
use time::OffsetDateTime;

use super::DynamoStore;
use super::table::{Write, item, n, record};
use crate::ids::{AppUserId, ConversationId};
use crate::model::{Member, Puppet};
use crate::store::keys;
use crate::store::{MemberStore, StoreError};

impl MemberStore for DynamoStore {
    async fn member(
        &self,
        id: &ConversationId,
        user: &UserId,
    ) -> Result<Option<Member>, StoreError> {
        self.table.get(keys::member(id, user)).await
    }

    async fn mark_joined(&self, id: &ConversationId, user: &UserId) -> Result<(), StoreError> {
        let join = Write::update(keys::member(id, user), "SET #joined = :yes")
            .if_exists()
            .name("#joined", "joined")
            .value(":yes", AttributeValue::Bool(true));
        self.table.write(join).await
    }

    async fn start_typing(
        &self,
        id: &ConversationId,
        user: &UserId,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let start = Write::update(keys::member(id, user), "SET #typing = :until")
            .when("attribute_exists(pk) AND (attribute_not_exists(#typing) OR #typing <= :now)")
            .name("#typing", "typing_until")
            .value(":until", n(millis(until)))
            .value(":now", n(millis(now)));
        opened(self.table.write(start).await)
    }

    async fn stop_typing(&self, id: &ConversationId, user: &UserId) -> Result<bool, StoreError> {
        let stop = Write::update(keys::member(id, user), "REMOVE #typing")
            .when("attribute_exists(#typing)")
            .name("#typing", "typing_until");
        opened(self.table.write(stop).await)
    }

    async fn puppets(&self, users: &[AppUserId]) -> Result<Vec<Puppet>, StoreError> {
        let keys = users.iter().map(keys::puppet).collect();
        self.table
            .batch_get(keys)
            .await?
            .into_iter()
            .map(record)
            .collect()
    }

    async fn put_puppet(&self, puppet: &Puppet) -> Result<(), StoreError> {
        let put = Write::put(item(keys::puppet(&puppet.user_id), puppet)?);
        self.table.write(put).await
    }
}

/// A time as the epoch milliseconds `Member::typing_until` is stored in.
fn millis(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Whether a conditional write happened: a failed condition is `false`.
fn opened(result: Result<(), StoreError>) -> Result<bool, StoreError> {
    match result {
        Ok(()) => Ok(true),
        Err(StoreError::Rejected) => Ok(false),
        Err(other) => Err(other),
    }
}
