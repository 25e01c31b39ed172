//! [`MemberStore`] on the in-memory state.

use ruma::UserId;

use super::{MemoryStore, member_key};
use crate::ids::{AppUserId, ConversationId};
use crate::model::{Member, Puppet};
use crate::store::{MemberStore, StoreError};

impl MemberStore for MemoryStore {
    async fn member(
        &self,
        id: &ConversationId,
        user: &UserId,
    ) -> Result<Option<Member>, StoreError> {
        Ok(self.state().members.get(&member_key(id, user)).cloned())
    }

    async fn mark_joined(&self, id: &ConversationId, user: &UserId) -> Result<(), StoreError> {
        let mut state = self.state();
        let member = state
            .members
            .get_mut(&member_key(id, user))
            .ok_or(StoreError::Rejected)?;
        member.joined = true;
        Ok(())
    }

    async fn puppets(&self, users: &[AppUserId]) -> Result<Vec<Puppet>, StoreError> {
        let state = self.state();
        Ok(users
            .iter()
            .filter_map(|user| state.puppets.get(user).cloned())
            .collect())
    }

    async fn put_puppet(&self, puppet: &Puppet) -> Result<(), StoreError> {
        self.state()
            .puppets
            .insert(puppet.user_id.clone(), puppet.clone());
        Ok(())
    }
}
