//! The store port: everything the bridge keeps, behind one trait.
//!
//! [`DynamoStore`] is the real adapter (one DynamoDB table, single-table
//! design); [`MemoryStore`] is the in-memory fake for unit tests. Both pass
//! the same suite in `tests/store.rs`, so the fake cannot drift.
//!
//! Conditional writes carry the invariants, not read-then-write code:
//! a conversation is claimed once, an idempotency key is used once, and a
//! message is sent directly only while the sender is a joined member of an
//! active conversation with nothing queued before it.

mod dynamo;
mod keys;
mod memory;

use std::future::Future;

use ruma::{EventId, RoomId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

pub use dynamo::DynamoStore;
pub use memory::MemoryStore;

use crate::ids::{AppUserId, ConversationId};
use crate::model::{Conversation, IdempotencyRecord, Member, Message, MessageId, Page, Puppet};

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition of a conditional write did not hold.
    #[error("a condition of the write did not hold")]
    Rejected,
    /// The table could not be reached, throttled, or a transaction conflicted.
    #[error("the table is unavailable")]
    Unavailable(#[source] Cause),
    /// A stored item could not be read back into its record.
    #[error("a stored item is malformed")]
    Corrupt(#[source] Cause),
}

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

/// What the send path needs to know when its fast conditional write fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendContext {
    pub conversation: Option<Conversation>,
    pub member: Option<Member>,
    pub idempotency: Option<IdempotencyRecord>,
}

/// The bridge's persistent state.
pub trait Store: Send + Sync {
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

    /// The message an event delivered.
    fn message_by_event(
        &self,
        event_id: &EventId,
    ) -> impl Future<Output = Result<Option<(ConversationId, MessageId)>, StoreError>> + Send;

    fn conversation(
        &self,
        id: &ConversationId,
    ) -> impl Future<Output = Result<Option<Conversation>, StoreError>> + Send;

    /// A conversation and its members, in one read.
    fn conversation_with_members(
        &self,
        id: &ConversationId,
    ) -> impl Future<Output = Result<Option<(Conversation, Vec<Member>)>, StoreError>> + Send;

    fn member(
        &self,
        id: &ConversationId,
        user: &UserId,
    ) -> impl Future<Output = Result<Option<Member>, StoreError>> + Send;

    /// Marks a member's puppet as joined to the room.
    fn mark_joined(
        &self,
        id: &ConversationId,
        user: &UserId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The puppets of these users that are known (in any order).
    fn puppets(
        &self,
        users: &[AppUserId],
    ) -> impl Future<Output = Result<Vec<Puppet>, StoreError>> + Send;

    fn put_puppet(&self, puppet: &Puppet) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new message, with its idempotency record if any, in one
    /// transaction. A [`Delivery::Direct`](crate::model::Delivery) message
    /// requires a joined sender, an active conversation and an empty outbox;
    /// a queued one requires a member and an active conversation, and counts
    /// itself into the outbox. `Rejected` when a condition fails or the key
    /// was used before.
    fn insert_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Everything that can make [`Store::insert_message`] refuse, in one read.
    fn send_context(
        &self,
        id: &ConversationId,
        user: &UserId,
        idempotency_scope: Option<&str>,
    ) -> impl Future<Output = Result<SendContext, StoreError>> + Send;

    /// Marks a pending message sent as `event_id` (leaving the outbox if it
    /// was queued) and records the event -> message lookup. Marking an
    /// already-sent message again is not an error.
    fn mark_sent(
        &self,
        message: &Message,
        event_id: &EventId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks a pending message as failed for good, with the reason (leaving
    /// the outbox if it was queued). Does nothing if it is no longer pending.
    fn mark_failed(
        &self,
        message: &Message,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves a pending direct message into the outbox, for the retry function.
    fn mark_queued(&self, message: &Message)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    fn message(
        &self,
        id: &ConversationId,
        message: MessageId,
    ) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;

    /// Up to `limit` messages older than `before` (all, without it), newest first.
    fn messages(
        &self,
        id: &ConversationId,
        limit: usize,
        before: Option<MessageId>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;
}
