//! The reaction capability: each user's reactions to messages, and per
//! message and key how many there are, written together so a history page
//! reads the counts without reading every reaction.

use std::future::Future;

use ruma::{EventId, UserId};

use super::StoreError;
use crate::ids::ConversationId;
use crate::model::{MessageId, Reaction, ReactionCount};

/// Reactions to messages.
pub trait ReactionStore: Send + Sync {
    /// Records a reaction and counts it, in one transaction (with its
    /// event -> reaction lookup when it has its event). `Rejected` when its
    /// sender reacted to the message with that key already.
    fn add_reaction(
        &self,
        reaction: &Reaction,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `user`'s reaction to a message with `key`.
    fn reaction(
        &self,
        id: &ConversationId,
        message: MessageId,
        user: &UserId,
        key: &str,
    ) -> impl Future<Output = Result<Option<Reaction>, StoreError>> + Send;

    /// Records the event a reaction became, with the event -> reaction
    /// lookup. `Rejected` when that reaction is gone or has its event.
    fn mark_reaction_sent(
        &self,
        reaction: &Reaction,
        event_id: &EventId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a reaction (the one with `reaction.id`) and uncounts it, in
    /// one transaction. `Rejected` when it is not there.
    fn remove_reaction(
        &self,
        reaction: &Reaction,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The reaction an `m.reaction` event is.
    fn reaction_by_event(
        &self,
        event_id: &EventId,
    ) -> impl Future<Output = Result<Option<Reaction>, StoreError>> + Send;

    /// The reactions to the messages of a conversation from `first` to
    /// `last` (both included), counted per message and key (keys nobody
    /// reacts with any more left out), with whether `reader` reacted.
    fn reaction_counts(
        &self,
        id: &ConversationId,
        first: MessageId,
        last: MessageId,
        reader: Option<&UserId>,
    ) -> impl Future<Output = Result<Vec<(MessageId, ReactionCount)>, StoreError>> + Send;
}
