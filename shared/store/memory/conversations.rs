//! [`ConversationStore`] on the in-memory state.

use ruma::RoomId;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{MemoryStore, member_key};
use crate::ids::ConversationId;
use crate::model::{self, Conversation, ConversationStatus, Member};
use crate::store::{Claim, ConversationStore, StoreError};

impl ConversationStore for MemoryStore {
    async fn claim_conversation(
        &self,
        draft: &Conversation,
        until: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let mut state = self.state();
        let token = Uuid::new_v4();
        let claim = model::Claim { token, until };
        match state.conversations.get_mut(&draft.id) {
            None => {
                let conversation = Conversation {
                    status: ConversationStatus::Provisioning,
                    claim: Some(claim),
                    ..draft.clone()
                };
                state
                    .conversations
                    .insert(draft.id.clone(), conversation.clone());
                Ok(Claim::Granted {
                    token,
                    conversation,
                })
            }
            Some(existing) if existing.status != ConversationStatus::Provisioning => {
                Ok(Claim::Exists(existing.clone()))
            }
            Some(existing) => {
                let expired = existing
                    .claim
                    .as_ref()
                    .is_none_or(|held| held.until <= OffsetDateTime::now_utc());
                if !expired {
                    return Ok(Claim::Busy(existing.clone()));
                }
                existing.claim = Some(claim);
                Ok(Claim::Granted {
                    token,
                    conversation: existing.clone(),
                })
            }
        }
    }

    async fn record_room(
        &self,
        id: &ConversationId,
        claim: Uuid,
        room_id: &RoomId,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let conversation = state
            .conversations
            .get_mut(id)
            .ok_or(StoreError::Rejected)?;
        if conversation.claim.as_ref().map(|c| c.token) != Some(claim) {
            return Err(StoreError::Rejected);
        }
        conversation.room_id = Some(room_id.to_owned());
        Ok(())
    }

    async fn release_claim(&self, id: &ConversationId, claim: Uuid) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(held) = state
            .conversations
            .get_mut(id)
            .and_then(|c| c.claim.as_mut())
            .filter(|held| held.token == claim)
        {
            held.until = OffsetDateTime::UNIX_EPOCH;
        }
        Ok(())
    }

    async fn activate_conversation(
        &self,
        conversation: &Conversation,
        claim: Uuid,
        members: &[Member],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for member in members {
            state.members.insert(
                member_key(&member.conversation_id, &member.matrix_user_id),
                member.clone(),
            );
        }
        let stored = state
            .conversations
            .get(&conversation.id)
            .ok_or(StoreError::Rejected)?;
        let room_id = conversation.room_id.clone().ok_or(StoreError::Rejected)?;
        if stored.claim.as_ref().map(|c| c.token) != Some(claim) {
            return Err(StoreError::Rejected);
        }
        let active = Conversation {
            status: ConversationStatus::Active,
            claim: None,
            ..conversation.clone()
        };
        state.conversations.insert(conversation.id.clone(), active);
        state.rooms.insert(room_id, conversation.id.clone());
        Ok(())
    }

    async fn conversation_by_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<ConversationId>, StoreError> {
        Ok(self.state().rooms.get(room_id).cloned())
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        Ok(self.state().conversations.get(id).cloned())
    }

    async fn conversation_with_members(
        &self,
        id: &ConversationId,
    ) -> Result<Option<(Conversation, Vec<Member>)>, StoreError> {
        let state = self.state();
        Ok(state.conversations.get(id).map(|conversation| {
            let members = state
                .members
                .range((id.clone(), String::new())..)
                .take_while(|((conv, _), _)| conv == id)
                .map(|(_, member)| member.clone())
                .collect();
            (conversation.clone(), members)
        }))
    }
}
