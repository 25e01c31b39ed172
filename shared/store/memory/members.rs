//! [`MemberStore`] on the in-memory state.

use ruma::UserId;
use time::OffsetDateTime;

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

    async fn start_typing(
        &self,
        id: &ConversationId,
        user: &UserId,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(member) = state.members.get_mut(&member_key(id, user)) else {
            return Ok(false);
        };
        if member.typing_until.is_some_and(|open| open > now) {
            return Ok(false);
        }
        // The table keeps milliseconds.
        let millis = u32::from(until.millisecond()) * 1_000_000;
        member.typing_until = Some(until.replace_nanosecond(millis).unwrap_or(until));
        Ok(true)
    }

    async fn stop_typing(&self, id: &ConversationId, user: &UserId) -> Result<bool, StoreError> {
        let mut state = self.state();
        Ok(state
            .members
            .get_mut(&member_key(id, user))
            .and_then(|member| member.typing_until.take())
            .is_some())
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
