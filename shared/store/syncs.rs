//! The sync capability: changes of a conversation (name, topic, avatar,
//! archive) or of a member (added, role, display name, removed) that Matrix
//! has not had yet.
//!
//! A change is written together with its [`PendingSync`], in one
//! transaction, before Matrix is called, and counted into the
//! conversation's outbox like a message's operation: it goes to Matrix
//! directly while nothing else is unsettled there, or waits for the retry
//! function. One sync is pending per subject at a time; a later change
//! replaces it (conditioned on the one it read) and takes its place in the
//! outbox, and settling a sync is conditioned on its id, so a sync that was
//! replaced while it ran does not hide the newer change. A pending sync is
//! in the store's pending index, for the sweeper, until it settles.

use std::future::Future;

use ruma::UserId;
use time::OffsetDateTime;

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
    /// (`EnterIfEmpty`: a direct sync, nothing else unsettled; `Enter`: the
    /// sync waits in it; `Keep`: it replaces a pending sync, counted
    /// already). `Rejected` otherwise.
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

    /// The sync reached Matrix (or failed for good): it is deleted and
    /// leaves the outbox (where a pending sync always is). `Rejected` if a
    /// newer change replaced it.
    fn settle_sync(
        &self,
        sync: &PendingSync,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Hands a direct sync over to the retry function (the homeserver could
    /// not take it, or the sweeper found it stale); it stays counted in the
    /// outbox. `Rejected` if a newer change replaced it, or it is queued
    /// already.
    fn queue_sync(&self, sync: &PendingSync)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` syncs pending since before `older_than`, the longest
    /// pending first: what the sweeper hands (back) to the retry function.
    fn stale_syncs(
        &self,
        older_than: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PendingSync>, StoreError>> + Send;

    /// Writes a member's record as it was, without a sync: undoes a change
    /// the homeserver refused for good.
    fn restore_member(
        &self,
        id: &ConversationId,
        member: MemberWrite<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
