//! The message capability: messages of a conversation, their way through the
//! outbox, and the lookups that lead to them.
//!
//! Idempotency records have no capability of their own: nothing reads or
//! writes one alone. A record is written only inside
//! [`MessageStore::insert_message`]'s transaction (so a key is used once, by
//! the message it was used for) and read only by
//! [`MessageStore::send_context`], in the same read as what else can make an
//! insert refuse.

use std::future::Future;

use ruma::{EventId, UserId};
use time::OffsetDateTime;

use super::StoreError;
use crate::ids::ConversationId;
use crate::model::{
    Conversation, IdempotencyRecord, Member, Message, MessageId, Page, PendingOperation,
};

/// What the send path needs to know when its fast conditional write fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendContext {
    pub conversation: Option<Conversation>,
    pub member: Option<Member>,
    pub idempotency: Option<IdempotencyRecord>,
}

/// How a message update moves its conversation's outbox: the count of
/// operations (sends, edits, deletes) accepted and not yet settled, whether
/// in flight to Matrix or queued for the retry function. Nothing goes to
/// Matrix directly while it is not empty, so nothing overtakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbox {
    /// Leaves it as it is.
    Keep,
    /// The update goes to Matrix directly: it joins the outbox (+1), only
    /// while the outbox is empty.
    EnterIfEmpty,
    /// The update waits in the outbox (+1).
    Enter,
    /// The update leaves the outbox (-1): it was delivered, failed, or
    /// cancelled.
    Leave,
}

/// Messages, the outbox and idempotency records.
pub trait MessageStore: Send + Sync {
    /// Stores a new message, with its idempotency record if any, in one
    /// transaction, and counts it into the outbox. A
    /// [`Delivery::Direct`](crate::model::Delivery) message requires a
    /// joined sender, an active conversation and an empty outbox; a queued
    /// one requires a member and an active conversation. `Rejected` when a
    /// condition fails or the key was used before.
    fn insert_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Everything that can make [`MessageStore::insert_message`] refuse, in one read.
    fn send_context(
        &self,
        id: &ConversationId,
        user: &UserId,
        idempotency_scope: Option<&str>,
    ) -> impl Future<Output = Result<SendContext, StoreError>> + Send;

    /// Marks a pending message sent as `event_id` (leaving the outbox) and
    /// records the event -> message lookup, if it is still pending with the
    /// content that was sent (`message`'s revision). `Ok(false)` when it is
    /// not, and it is left alone: sent already, or edited or deleted while
    /// on its way (see `handlers::outbound::reconcile`).
    fn mark_sent(
        &self,
        message: &Message,
        event_id: &EventId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks a pending message as failed for good, with the reason (leaving
    /// the outbox). `Ok(false)`, doing nothing, if it is no longer pending.
    fn mark_failed(
        &self,
        message: &Message,
        reason: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces the message `read` with `message` (an edit, a delete, a
    /// change delivered), if the stored one is still as read: the same
    /// revision, status and delivery. The stored revision is bumped. Moves
    /// the conversation's outbox as `outbox` says, and uses `idempotency`'s
    /// key once, in the same transaction. `Rejected` when anything changed
    /// in between, the outbox is not empty when required, or the key was
    /// used before.
    fn update_message(
        &self,
        read: &Message,
        message: &Message,
        outbox: Outbox,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Hands a pending direct message over to the retry function (it stays
    /// counted in the outbox), with `message`'s
    /// [`in_doubt`](crate::model::Message::in_doubt).
    fn mark_queued(&self, message: &Message)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    fn message(
        &self,
        id: &ConversationId,
        message: MessageId,
    ) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;

    /// Up to `limit` messages whose send or change has been pending since
    /// before `older_than`, the longest pending first: what the sweeper
    /// hands (back) to the retry function.
    fn stale_pending(
        &self,
        older_than: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Message>, StoreError>> + Send;

    /// Up to `limit` operations of a conversation's outbox (sends and
    /// changes of its messages, syncs of its room and members) pending since
    /// before `before`, the longest pending first: what waits ahead of a
    /// retry job queued at `before`. Read from an index, so an operation
    /// settled a moment ago may still be listed: check it before acting.
    fn outbox(
        &self,
        id: &ConversationId,
        before: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PendingOperation>, StoreError>> + Send;

    /// Up to `limit` messages older than `before` (all, without it), newest first.
    fn messages(
        &self,
        id: &ConversationId,
        limit: usize,
        before: Option<MessageId>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Up to `limit` messages of the thread of `root` (not the root
    /// itself) older than `before` (all, without it), newest first.
    fn thread(
        &self,
        id: &ConversationId,
        root: MessageId,
        limit: usize,
        before: Option<MessageId>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// The message an event delivered.
    fn message_by_event(
        &self,
        event_id: &EventId,
    ) -> impl Future<Output = Result<Option<(ConversationId, MessageId)>, StoreError>> + Send;
}
