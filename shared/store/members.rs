//! The member capability: who belongs to a conversation (and whether their
//! puppet has joined its room), and the puppets of application users.

use std::future::Future;

use ruma::UserId;

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

    /// The puppets of these users that are known (in any order).
    fn puppets(
        &self,
        users: &[AppUserId],
    ) -> impl Future<Output = Result<Vec<Puppet>, StoreError>> + Send;

    fn put_puppet(&self, puppet: &Puppet) -> impl Future<Output = Result<(), StoreError>> + Send;
}
