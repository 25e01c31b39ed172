//! [`ReactionStore`] on the in-memory state: the counts are worked out
//! from the reactions themselves, which is what the table's counts must
//! always say.

use ruma::{EventId, UserId};

use super::MemoryStore;
use crate::ids::ConversationId;
use crate::model::{MessageId, Reaction, ReactionCount};
use crate::store::{ReactionStore, StoreError};

type Key = (ConversationId, String, MessageId, String);

fn key_of(reaction: &Reaction) -> Key {
    (
        reaction.conversation_id.clone(),
        reaction.sender.matrix_user_id.to_string(),
        reaction.message_id,
        reaction.key.clone(),
    )
}

impl ReactionStore for MemoryStore {
    async fn add_reaction(&self, reaction: &Reaction) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = key_of(reaction);
        if state.reactions.contains_key(&key) {
            return Err(StoreError::Rejected);
        }
        if let Some(event_id) = &reaction.event_id {
            state.reaction_events.insert(event_id.clone(), key.clone());
        }
        state.reactions.insert(key, reaction.clone());
        Ok(())
    }

    async fn reaction(
        &self,
        id: &ConversationId,
        message: MessageId,
        user: &UserId,
        key: &str,
    ) -> Result<Option<Reaction>, StoreError> {
        let key = (id.clone(), user.to_string(), message, key.to_owned());
        Ok(self.state().reactions.get(&key).cloned())
    }

    async fn mark_reaction_sent(
        &self,
        reaction: &Reaction,
        event_id: &EventId,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = key_of(reaction);
        match state.reactions.get_mut(&key) {
            Some(stored) if stored.id == reaction.id && stored.event_id.is_none() => {
                stored.event_id = Some(event_id.to_owned());
            }
            _ => return Err(StoreError::Rejected),
        }
        state.reaction_events.insert(event_id.to_owned(), key);
        Ok(())
    }

    async fn remove_reaction(&self, reaction: &Reaction) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = key_of(reaction);
        if state
            .reactions
            .get(&key)
            .is_none_or(|r| r.id != reaction.id)
        {
            return Err(StoreError::Rejected);
        }
        state.reactions.remove(&key);
        if let Some(event_id) = &reaction.event_id {
            state.reaction_events.remove(event_id);
        }
        Ok(())
    }

    async fn reaction_by_event(&self, event_id: &EventId) -> Result<Option<Reaction>, StoreError> {
        let state = self.state();
        Ok(state
            .reaction_events
            .get(event_id)
            .and_then(|key| state.reactions.get(key))
            .cloned())
    }

    async fn reaction_counts(
        &self,
        id: &ConversationId,
        first: MessageId,
        last: MessageId,
        reader: Option<&UserId>,
    ) -> Result<Vec<(MessageId, ReactionCount)>, StoreError> {
        let state = self.state();
        let mut counts: Vec<(MessageId, ReactionCount)> = Vec::new();
        let mut of_conversation: Vec<&Reaction> = state
            .reactions
            .values()
            .filter(|r| &r.conversation_id == id && (first..=last).contains(&r.message_id))
            .collect();
        of_conversation.sort_by(|a, b| (a.message_id, &a.key).cmp(&(b.message_id, &b.key)));
        for reaction in of_conversation {
            let me = reader.is_some_and(|reader| reaction.sender.matrix_user_id == reader);
            match counts.last_mut() {
                Some((message, count))
                    if *message == reaction.message_id && count.key == reaction.key =>
                {
                    count.count += 1;
                    count.me |= me;
                }
                _ => counts.push((
                    reaction.message_id,
                    ReactionCount {
                        key: reaction.key.clone(),
                        count: 1,
                        me,
                    },
                )),
            }
        }
        Ok(counts)
    }
}
