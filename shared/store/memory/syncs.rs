//! [`SyncStore`] on the in-memory state.

use time::OffsetDateTime;

use super::{MemoryStore, State, member_key};
use crate::ids::ConversationId;
use crate::model::{
    Conversation, ConversationStatus, Delivery, MessageId, PendingSync, SyncSubject,
};
use crate::store::{MemberWrite, Outbox, StoreError, SyncContext, SyncStore};

impl State {
    /// Whether the subject's pending sync is still `replaces`.
    fn sync_is(&self, sync: &PendingSync, replaces: Option<MessageId>) -> bool {
        let key = (sync.conversation_id.clone(), sync.subject.clone());
        self.syncs.get(&key).map(|pending| pending.id) == replaces
    }

    fn write_member(&mut self, id: &ConversationId, member: MemberWrite<'_>) {
        match member {
            MemberWrite::Put(member) => {
                self.members
                    .insert(member_key(id, &member.matrix_user_id), member.clone());
            }
            MemberWrite::Remove(user) => {
                self.members.remove(&member_key(id, user));
            }
        }
    }

    fn put_sync(&mut self, sync: &PendingSync) {
        self.syncs.insert(
            (sync.conversation_id.clone(), sync.subject.clone()),
            sync.clone(),
        );
    }
}

/// The outbox change `outbox` asks of a conversation with `count` waiting,
/// or `None` if it does not allow it.
fn outbox_delta(outbox: Outbox, count: i64) -> Option<i64> {
    match outbox {
        Outbox::EnterIfEmpty if count > 0 => None,
        Outbox::Keep => Some(0),
        Outbox::Enter | Outbox::EnterIfEmpty => Some(1),
        Outbox::Leave => Some(-1),
    }
}

impl SyncStore for MemoryStore {
    async fn sync_context(
        &self,
        id: &ConversationId,
        subject: &SyncSubject,
    ) -> Result<SyncContext, StoreError> {
        let state = self.state();
        let member = match subject {
            SyncSubject::Member { matrix_user_id, .. } => {
                state.members.get(&member_key(id, matrix_user_id)).cloned()
            }
            SyncSubject::Room => None,
        };
        Ok(SyncContext {
            conversation: state.conversations.get(id).cloned(),
            member,
            sync: state.syncs.get(&(id.clone(), subject.clone())).cloned(),
        })
    }

    async fn change_member(
        &self,
        member: MemberWrite<'_>,
        sync: &PendingSync,
        replaces: Option<MessageId>,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let id = &sync.conversation_id;
        let delta = state
            .conversations
            .get(id)
            .filter(|conversation| conversation.status == ConversationStatus::Active)
            .and_then(|conversation| outbox_delta(outbox, conversation.outbox));
        let Some(delta) = delta.filter(|_| state.sync_is(sync, replaces)) else {
            return Err(StoreError::Rejected);
        };
        if let Some(conversation) = state.conversations.get_mut(id) {
            conversation.outbox += delta;
        }
        state.write_member(id, member);
        state.put_sync(sync);
        Ok(())
    }

    async fn change_room(
        &self,
        read: &Conversation,
        next: &Conversation,
        sync: &PendingSync,
        replaces: Option<MessageId>,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let unchanged = state.conversations.get(&read.id).is_some_and(|stored| {
            stored.status == ConversationStatus::Active && stored.outbox == read.outbox
        });
        let delta = outbox_delta(outbox, read.outbox);
        let Some(delta) = delta.filter(|_| unchanged && state.sync_is(sync, replaces)) else {
            return Err(StoreError::Rejected);
        };
        let next = Conversation {
            outbox: read.outbox + delta,
            ..next.clone()
        };
        state.conversations.insert(read.id.clone(), next);
        state.put_sync(sync);
        Ok(())
    }

    async fn settle_sync(&self, sync: &PendingSync) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.sync_is(sync, Some(sync.id)) {
            return Err(StoreError::Rejected);
        }
        let id = &sync.conversation_id;
        state.syncs.remove(&(id.clone(), sync.subject.clone()));
        // A pending sync is counted in the outbox, direct or queued.
        if let Some(conversation) = state.conversations.get_mut(id) {
            conversation.outbox -= 1;
        }
        Ok(())
    }

    async fn queue_sync(&self, sync: &PendingSync) -> Result<(), StoreError> {
        let mut state = self.state();
        let id = &sync.conversation_id;
        let pending = state
            .syncs
            .get_mut(&(id.clone(), sync.subject.clone()))
            .filter(|pending| pending.id == sync.id && pending.delivery == Delivery::Direct)
            .ok_or(StoreError::Rejected)?;
        // Counted in the outbox already, while in flight.
        pending.delivery = Delivery::Queued;
        Ok(())
    }

    async fn stale_syncs(
        &self,
        older_than: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingSync>, StoreError> {
        let state = self.state();
        let mut stale: Vec<PendingSync> = state
            .syncs
            .values()
            .filter(|sync| sync.since < older_than)
            .cloned()
            .collect();
        stale.sort_by_key(|sync| sync.since);
        stale.truncate(limit);
        Ok(stale)
    }

    async fn restore_member(
        &self,
        id: &ConversationId,
        member: MemberWrite<'_>,
    ) -> Result<(), StoreError> {
        self.state().write_member(id, member);
        Ok(())
    }
}
