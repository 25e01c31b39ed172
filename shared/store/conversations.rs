//! The conversation capability: claiming a conversation id for provisioning,
//! recording its room, activating it, and reading it back.

use std::future::Future;

use ruma::RoomId;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use crate::ids::ConversationId;
use crate::model::{Conversation, Member};

/// The outcome of trying to claim a conversation id for provisioning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This request holds the claim (new, or taken over from an expired one,
    /// in which case `conversation.room_id` may already be set).
    Granted {
        token: Uuid,
        conversation: Conversation,
    },
    /// Another request holds a live claim.
    Busy(Conversation),
    /// The conversation was provisioned already.
    Exists(Conversation),
}

/// Conversations and their provisioning.
pub trait ConversationStore: Send + Sync {
    /// Claims `draft.id` until `until`: creates the conversation in status
    /// `provisioning`, or takes over an expired claim.
    fn claim_conversation(
        &self,
        draft: &Conversation,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Records the room created under `claim`, before anything else is done
    /// with it, so a takeover reuses the room instead of making another.
    fn record_room(
        &self,
        id: &ConversationId,
        claim: Uuid,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives up a claim (after a failure), so a retry need not wait for it
    /// to expire. Does nothing if the claim is no longer held.
    fn release_claim(
        &self,
        id: &ConversationId,
        claim: Uuid,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the members and, if `claim` still holds, marks the conversation
    /// active (clearing the claim) with its room -> conversation lookup.
    fn activate_conversation(
        &self,
        conversation: &Conversation,
        claim: Uuid,
        members: &[Member],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The conversation a room mirrors.
    fn conversation_by_room(
        &self,
        room_id: &RoomId,
    ) -> impl Future<Output = Result<Option<ConversationId>, StoreError>> + Send;

    fn conversation(
        &self,
        id: &ConversationId,
    ) -> impl Future<Output = Result<Option<Conversation>, StoreError>> + Send;

    /// A conversation and its members, in one read.
    fn conversation_with_members(
        &self,
        id: &ConversationId,
    ) -> impl Future<Output = Result<Option<(Conversation, Vec<Member>)>, StoreError>> + Send;
}
