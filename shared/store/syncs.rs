//! The sync capability: changes of a conversation (name, topic, avatar,
//! archive) or of a member (added, role, display name, removed) that Matrix
//! has not had yet.
//!
//! A change is written together with its [`PendingSync`], in one
//! transaction, before Matrix is called: like a message, it goes to Matrix
//! directly while the conversation's outbox is empty, or waits in the
//! outbox for the retry function. One sync is pending per subject at a
//! time; a later change replaces it (conditioned on the one it read), and
//! settling a sync is conditioned on its id, so a sync that was replaced
//! while it ran does not hide the newer change.

use std::future::Future;

use ruma::UserId;

use super::{Outbox, StoreError};
use crate::ids::ConversationId;
use crate::model::{Conversation, Member, MessageId, PendingSync, SyncSubject};

/// How a change writes a member's record.
#[derive(Clone, Copy, Debug)]
pub enum MemberWrite<'a> {
    /// The member as it is to be (added, or its role or name changed).
    Put(&'a Member),
    /// The member is removed.
    Remove(&'a UserId),
}

/// What a change or a sync of one subject works from, read at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncContext {
    pub conversation: Option<Conversation>,
    /// For a member subject: its record, if it is a member.
    pub member: Option<Member>,
    /// The subject's pending sync, if one is.
    pub sync: Option<PendingSync>,
}

/// Pending syncs of conversations and members.
pub trait SyncStore: Send + Sync {
    /// The conversation, the member (for a member subject) and the
    /// subject's pending sync, in one read.
    fn sync_context(
        &self,
        id: &ConversationId,
        subject: &SyncSubject,
    ) -> impl Future<Output = Result<SyncContext, StoreError>> + Send;

    /// Writes a member's change with its pending sync, in one transaction,
    /// if the conversation is active, the subject's pending sync is still
    /// `replaces` (`None`: there was none), and the outbox allows `outbox`
    /// (`RequireEmpty`: nothing waits in it; `Enter`: the sync joins it).
    /// `Rejected` otherwise.
    fn change_member(
        &self,
        member: MemberWrite<'_>,
        sync: &PendingSync,
        replaces: Option<MessageId>,
        outbox: Outbox,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the conversation `read` with `next` (its name, topic,
    /// avatar or status changed) and writes the room's pending sync, in one
    /// transaction, if the stored conversation is still active with the
    /// outbox as read, the room's pending sync is still `replaces`, and the
    /// outbox allows `outbox`. `Rejected` otherwise.
    fn change_room(
        &self,
        read: &Conversation,
        next: &Conversation,
        sync: &PendingSync,
        replaces: Option<MessageId>,
        outbox: Outbox,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The sync reached Matrix (or failed for good): it is deleted, leaving
    /// the outbox if it was queued. `Rejected` if a newer change replaced it.
    fn settle_sync(
        &self,
        sync: &PendingSync,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves a direct sync into the outbox (the homeserver could not take
    /// it), for the retry function. `Rejected` if a newer change replaced it.
    fn queue_sync(&self, sync: &PendingSync)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes a member's record as it was, without a sync: undoes a change
    /// the homeserver refused for good.
    fn restore_member(
        &self,
        id: &ConversationId,
        member: MemberWrite<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
