//! [`TransactionStore`] on the in-memory state.

use ruma::{OwnedEventId, OwnedRoomId};

use super::{MemoryStore, member_key};
use crate::ids::ConversationId;
use crate::model::{Member, Message, MessageId, Role, TransactionRecord};
use crate::store::{MemberChange, StoreError, TransactionContext, TransactionStore};

impl TransactionStore for MemoryStore {
    async fn transaction_context(
        &self,
        txn_id: &str,
        fingerprint: &str,
        rooms: &[OwnedRoomId],
        events: &[OwnedEventId],
    ) -> Result<TransactionContext, StoreError> {
        let state = self.state();
        Ok(TransactionContext {
            record: state
                .transactions
                .get(&(txn_id.to_owned(), fingerprint.to_owned()))
                .cloned(),
            rooms: rooms
                .iter()
                .filter_map(|room| Some((room.clone(), state.rooms.get(room)?.clone())))
                .collect(),
            events: events
                .iter()
                .filter_map(|event| Some((event.clone(), state.events.get(event)?.clone())))
                .collect(),
        })
    }

    async fn messages_by_id(
        &self,
        keys: &[(ConversationId, MessageId)],
    ) -> Result<Vec<Message>, StoreError> {
        let state = self.state();
        Ok(keys
            .iter()
            .filter_map(|key| state.messages.get(key).cloned())
            .collect())
    }

    async fn store_inbound(
        &self,
        messages: &[Message],
        members: &[MemberChange],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for message in messages {
            let id = message.conversation_id.clone();
            if let Some(event_id) = &message.event_id {
                state
                    .events
                    .insert(event_id.clone(), (id.clone(), message.id));
            }
            state.messages.insert((id, message.id), message.clone());
        }
        for change in members {
            match change {
                MemberChange::Joined(member) => {
                    let key = member_key(&member.conversation_id, &member.matrix_user_id);
                    // A new record, as the table makes it: identity and role only.
                    let stored = state.members.entry(key).or_insert_with(|| Member {
                        user_id: None,
                        role: Role::Member,
                        display_name: None,
                        ..member.clone()
                    });
                    stored.joined = true;
                    stored.removed = None;
                    if member.display_name.is_some() {
                        stored.display_name.clone_from(&member.display_name);
                    }
                }
                MemberChange::Left {
                    conversation_id,
                    matrix_user_id,
                    removal,
                } => {
                    let key = member_key(conversation_id, matrix_user_id);
                    if let Some(stored) = state.members.get_mut(&key) {
                        stored.joined = false;
                        if removal.is_some() {
                            stored.removed.clone_from(removal);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn record_transaction(&self, record: &TransactionRecord) -> Result<(), StoreError> {
        self.state().transactions.insert(
            (record.txn_id.clone(), record.fingerprint.clone()),
            record.clone(),
        );
        Ok(())
    }
}
