//! [`MemberStore`] on the table: members in their conversation's partition,
//! puppets each in their user's.

use aws_sdk_dynamodb::types::AttributeValue;
use ruma::UserId;

use super::DynamoStore;
use super::table::{Write, item, record};
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
