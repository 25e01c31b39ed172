//! The in-memory fake of [`Store`], for unit tests of domain logic. It keeps
//! the same conditions as the DynamoDB adapter, checked by the shared suite.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Claim, SendContext, Store, StoreError};
use crate::ids::{AppUserId, ConversationId};
use crate::model::{
    self, Conversation, ConversationStatus, Delivery, IdempotencyRecord, Member, Message,
    MessageId, MessageStatus, Page, Puppet,
};

#[derive(Default)]
struct State {
    conversations: HashMap<ConversationId, Conversation>,
    members: BTreeMap<(ConversationId, String), Member>,
    messages: BTreeMap<(ConversationId, MessageId), Message>,
    puppets: HashMap<AppUserId, Puppet>,
    idempotency: HashMap<String, IdempotencyRecord>,
    rooms: HashMap<OwnedRoomId, ConversationId>,
    events: HashMap<OwnedEventId, (ConversationId, MessageId)>,
}

/// A [`Store`] in a mutex. Clones share their state, as clones of a
/// [`DynamoStore`](super::DynamoStore) share the table.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write:
        // every method checks all conditions before it changes anything.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Applies `outcome` to a message that is still pending, taking it out
    /// of the outbox if it was queued; whether it was pending.
    fn settle(&mut self, message: &Message, outcome: impl FnOnce(&mut Message)) -> bool {
        let id = &message.conversation_id;
        let Some(stored) = self
            .messages
            .get_mut(&(id.clone(), message.id))
            .filter(|stored| stored.status == MessageStatus::Pending)
        else {
            return false;
        };
        outcome(stored);
        if message.delivery == Delivery::Queued {
            if let Some(conversation) = self.conversations.get_mut(id) {
                conversation.outbox -= 1;
            }
        }
        true
    }
}

fn member_key(id: &ConversationId, user: &UserId) -> (ConversationId, String) {
    (id.clone(), user.to_string())
}

impl Store for MemoryStore {
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

    async fn message_by_event(
        &self,
        event_id: &EventId,
    ) -> Result<Option<(ConversationId, MessageId)>, StoreError> {
        Ok(self.state().events.get(event_id).cloned())
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

    async fn insert_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let id = &message.conversation_id;
        let conversation = state.conversations.get(id).ok_or(StoreError::Rejected)?;
        let member = state
            .members
            .get(&member_key(id, &message.sender.matrix_user_id))
            .ok_or(StoreError::Rejected)?;
        let allowed = conversation.status == ConversationStatus::Active
            && match message.delivery {
                Delivery::Direct => member.joined && conversation.outbox == 0,
                Delivery::Queued => true,
            }
            && idempotency.is_none_or(|record| !state.idempotency.contains_key(&record.scope))
            && !state.messages.contains_key(&(id.clone(), message.id));
        if !allowed {
            return Err(StoreError::Rejected);
        }
        if message.delivery == Delivery::Queued {
            if let Some(conversation) = state.conversations.get_mut(id) {
                conversation.outbox += 1;
            }
        }
        if let Some(record) = idempotency {
            state
                .idempotency
                .insert(record.scope.clone(), record.clone());
        }
        state
            .messages
            .insert((id.clone(), message.id), message.clone());
        Ok(())
    }

    async fn send_context(
        &self,
        id: &ConversationId,
        user: &UserId,
        idempotency_scope: Option<&str>,
    ) -> Result<SendContext, StoreError> {
        let state = self.state();
        Ok(SendContext {
            conversation: state.conversations.get(id).cloned(),
            member: state.members.get(&member_key(id, user)).cloned(),
            idempotency: idempotency_scope.and_then(|scope| state.idempotency.get(scope).cloned()),
        })
    }

    async fn mark_sent(&self, message: &Message, event_id: &EventId) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.settle(message, |stored| {
            stored.status = MessageStatus::Sent;
            stored.event_id = Some(event_id.to_owned());
        }) {
            state.events.insert(
                event_id.to_owned(),
                (message.conversation_id.clone(), message.id),
            );
        }
        Ok(())
    }

    async fn mark_failed(&self, message: &Message, reason: &str) -> Result<(), StoreError> {
        self.state().settle(message, |stored| {
            stored.status = MessageStatus::Failed;
            stored.failure = Some(reason.to_owned());
        });
        Ok(())
    }

    async fn mark_queued(&self, message: &Message) -> Result<(), StoreError> {
        let mut state = self.state();
        let id = &message.conversation_id;
        let stored = state
            .messages
            .get_mut(&(id.clone(), message.id))
            .filter(|stored| {
                stored.status == MessageStatus::Pending && stored.delivery == Delivery::Direct
            })
            .ok_or(StoreError::Rejected)?;
        stored.delivery = Delivery::Queued;
        if let Some(conversation) = state.conversations.get_mut(id) {
            conversation.outbox += 1;
        }
        Ok(())
    }

    async fn message(
        &self,
        id: &ConversationId,
        message: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        Ok(self.state().messages.get(&(id.clone(), message)).cloned())
    }

    async fn messages(
        &self,
        id: &ConversationId,
        limit: usize,
        before: Option<MessageId>,
    ) -> Result<Page, StoreError> {
        let state = self.state();
        let mut older = state
            .messages
            .range((id.clone(), MessageId::MIN)..)
            .take_while(|((conv, _), _)| conv == id)
            .filter(|((_, message_id), _)| before.is_none_or(|before| *message_id < before))
            .map(|(_, message)| message.clone())
            .collect::<Vec<_>>();
        older.reverse();
        let more = older.len() > limit;
        older.truncate(limit);
        let next = more.then(|| older.last().map(|m| m.id)).flatten();
        Ok(Page {
            messages: older,
            next,
        })
    }
}
