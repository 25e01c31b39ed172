//! The member capability: who belongs to a conversation (whether their
//! puppet has joined its room, until when it was said to be typing), and the
//! puppets of application users.

use std::future::Future;

use ruma::UserId;
use time::OffsetDateTime;

use super::StoreError;
use crate::ids::{AppUserId, ConversationId};
use crate::model::{Member, Puppet};

/// Members of conversations and puppets of application users.
pub trait MemberStore: Send + Sync {
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

    /// Opens a member's typing window until `until`, unless one is still
    /// open at `now`: whether it was opened. Only the call that opens it
    /// tells the homeserver, so repeats within the window cost nothing, in
    /// any container. `false` for someone who is not a member.
    fn start_typing(
        &self,
        id: &ConversationId,
        user: &UserId,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Closes a member's typing window: whether one was set (open or not).
    fn stop_typing(
        &self,
        id: &ConversationId,
        user: &UserId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The puppets of these users that are known (in any order).
    fn puppets(
        &self,
        users: &[AppUserId],
    ) -> impl Future<Output = Result<Vec<Puppet>, StoreError>> + Send;

    fn put_puppet(&self, puppet: &Puppet) -> impl Future<Output = Result<(), StoreError>> + Send;
}
