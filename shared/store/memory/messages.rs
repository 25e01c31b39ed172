//! [`MessageStore`] on the in-memory state.

use ruma::{EventId, UserId};
use time::OffsetDateTime;

use super::{MemoryStore, State, member_key};
use crate::ids::ConversationId;
use crate::model::{
    ConversationStatus, Delivery, IdempotencyRecord, Message, MessageId, MessageStatus, Page,
    PendingOperation,
};
use crate::store::{MessageStore, Outbox, SendContext, StoreError};

impl State {
    /// Stores `message` whole, keeping the pending index.
    fn put_message(&mut self, message: Message) {
        let key = (message.conversation_id.clone(), message.id);
        if message.is_pending() {
            let since = message
                .pending_since()
                .unwrap_or_else(OffsetDateTime::now_utc);
            self.pending_since.insert(key.clone(), since);
        } else {
            self.pending_since.remove(&key);
        }
        self.messages.insert(key, message);
    }

    /// Whether a key is remembered: recorded and not expired.
    fn remembers(&self, scope: &str) -> bool {
        self.idempotency
            .get(scope)
            .is_some_and(|record| record.is_live(time::OffsetDateTime::now_utc()))
    }

    /// Applies `outcome` to a message that is still pending, taking it out
    /// of the outbox; whether it was pending.
    fn settle(
        &mut self,
        message: &Message,
        same_revision: bool,
        outcome: impl FnOnce(&mut Message),
    ) -> bool {
        let id = &message.conversation_id;
        let Some(stored) = self
            .messages
            .get_mut(&(id.clone(), message.id))
            .filter(|stored| {
                stored.status == MessageStatus::Pending
                    && (!same_revision || stored.revision == message.revision)
            })
        else {
            return false;
        };
        outcome(stored);
        self.pending_since.remove(&(id.clone(), message.id));
        if let Some(conversation) = self.conversations.get_mut(id) {
            conversation.outbox -= 1;
        }
        true
    }
}

impl MessageStore for MemoryStore {
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
            .get(&member_key(id, &message.sender.matrix_user_id));
        if message.needs_member() && member.is_none() {
            return Err(StoreError::Rejected);
        }
        let joined = !message.needs_member() || member.is_some_and(|member| member.joined);
        let allowed = conversation.status == ConversationStatus::Active
            && match message.delivery {
                Delivery::Direct => joined && conversation.outbox <= 0,
                Delivery::Queued => true,
            }
            && idempotency.is_none_or(|record| !state.remembers(&record.scope))
            && !state.messages.contains_key(&(id.clone(), message.id));
        if !allowed {
            return Err(StoreError::Rejected);
        }
        if let Some(conversation) = state.conversations.get_mut(id) {
            conversation.outbox += 1;
        }
        if let Some(record) = idempotency {
            state
                .idempotency
                .insert(record.scope.clone(), record.clone());
        }
        state.put_message(message.clone());
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
            idempotency: idempotency_scope
                .filter(|scope| state.remembers(scope))
                .and_then(|scope| state.idempotency.get(scope).cloned()),
        })
    }

    async fn mark_sent(&self, message: &Message, event_id: &EventId) -> Result<bool, StoreError> {
        let mut state = self.state();
        let marked = state.settle(message, true, |stored| {
            stored.status = MessageStatus::Sent;
            stored.event_id = Some(event_id.to_owned());
        });
        if marked {
            state.events.insert(
                event_id.to_owned(),
                (message.conversation_id.clone(), message.id),
            );
        }
        Ok(marked)
    }

    async fn mark_failed(&self, message: &Message, reason: &str) -> Result<bool, StoreError> {
        Ok(self.state().settle(message, false, |stored| {
            stored.status = MessageStatus::Failed;
            stored.failure = Some(reason.to_owned());
        }))
    }

    async fn update_message(
        &self,
        read: &Message,
        message: &Message,
        outbox: Outbox,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let id = &message.conversation_id;
        let unchanged = state
            .messages
            .get(&(id.clone(), message.id))
            .is_some_and(|stored| {
                stored.revision == read.revision
                    && stored.status == read.status
                    && stored.delivery == read.delivery
            });
        let outbox_now = state.conversations.get(id).map(|c| c.outbox);
        let outbox_allows = match outbox {
            Outbox::EnterIfEmpty => outbox_now.is_none_or(|count| count <= 0),
            Outbox::Keep | Outbox::Enter | Outbox::Leave => outbox_now.is_some(),
        };
        let key_free = idempotency.is_none_or(|record| !state.remembers(&record.scope));
        if !(unchanged && outbox_allows && key_free) {
            return Err(StoreError::Rejected);
        }
        let delta = match outbox {
            Outbox::Enter | Outbox::EnterIfEmpty => 1,
            Outbox::Leave => -1,
            Outbox::Keep => 0,
        };
        if let Some(conversation) = state.conversations.get_mut(id) {
            conversation.outbox += delta;
        }
        if let Some(record) = idempotency {
            state
                .idempotency
                .insert(record.scope.clone(), record.clone());
        }
        let mut next = message.clone();
        next.revision = read.revision + 1;
        state.put_message(next);
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
        stored.in_doubt = message.in_doubt;
        Ok(())
    }

    async fn message(
        &self,
        id: &ConversationId,
        message: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        Ok(self.state().messages.get(&(id.clone(), message)).cloned())
    }

    async fn stale_pending(
        &self,
        older_than: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let state = self.state();
        let mut stale: Vec<_> = state
            .pending_since
            .iter()
            .filter(|(_, since)| **since < older_than)
            .collect();
        stale.sort_by_key(|(_, since)| **since);
        Ok(stale
            .into_iter()
            .take(limit)
            .filter_map(|(key, _)| state.messages.get(key).cloned())
            .collect())
    }

    async fn outbox(
        &self,
        id: &ConversationId,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingOperation>, StoreError> {
        let state = self.state();
        let messages = state
            .pending_since
            .iter()
            .filter(|((conversation, _), since)| conversation == id && **since < before)
            .filter_map(|(key, since)| {
                let message = state.messages.get(key)?.clone();
                Some((*since, PendingOperation::Message(Box::new(message))))
            });
        let syncs = state
            .syncs
            .values()
            .filter(|sync| &sync.conversation_id == id && sync.since < before)
            .map(|sync| (sync.since, PendingOperation::Sync(sync.clone())));
        let mut ahead: Vec<_> = messages.chain(syncs).collect();
        ahead.sort_by_key(|(since, _)| *since);
        Ok(ahead
            .into_iter()
            .take(limit)
            .map(|(_, operation)| operation)
            .collect())
    }

    async fn messages(
        &self,
        id: &ConversationId,
        limit: usize,
        before: Option<MessageId>,
    ) -> Result<Page, StoreError> {
        self.page(id, limit, before, |_| true)
    }

    async fn thread(
        &self,
        id: &ConversationId,
        root: MessageId,
        limit: usize,
        before: Option<MessageId>,
    ) -> Result<Page, StoreError> {
        self.page(id, limit, before, |message| message.thread_id == Some(root))
    }

    async fn message_by_event(
        &self,
        event_id: &EventId,
    ) -> Result<Option<(ConversationId, MessageId)>, StoreError> {
        Ok(self.state().events.get(event_id).cloned())
    }
}

impl MemoryStore {
    /// Up to `limit` of a conversation's messages older than `before` that
    /// `wanted` takes, newest first.
    fn page(
        &self,
        id: &ConversationId,
        limit: usize,
        before: Option<MessageId>,
        wanted: impl Fn(&Message) -> bool,
    ) -> Result<Page, StoreError> {
        let state = self.state();
        let mut older = state
            .messages
            .range((id.clone(), MessageId::MIN)..)
            .take_while(|((conv, _), _)| conv == id)
            .filter(|((_, message_id), _)| before.is_none_or(|before| *message_id < before))
            .filter(|(_, message)| wanted(message))
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
