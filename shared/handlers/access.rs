//! What the functions that act in a conversation as a member's puppet
//! (`media`, `activity`) check first, and how they act in its room.
//!
//! The acting user must be a member of an active conversation: others get
//! `404` (a service token acting `as_user` for a non-member `403`), as for
//! sends. A puppet the homeserver finds outside the room (it left, or was
//! removed on the Matrix side) is joined again, once, as a send does.

use std::future::Future;

use ruma::{OwnedRoomId, OwnedUserId};

use super::outbound::join_room;
use crate::api::{ApiError, ApiRequest};
use crate::error::Error;
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::{Matrix, MatrixError};
use crate::model::{Conversation, ConversationStatus, Member};
use crate::store::Store;

/// A member of an active conversation, about to act in its room.
#[derive(Debug)]
pub struct Acting {
    pub user: AppUserId,
    pub puppet: OwnedUserId,
    pub member: Member,
    pub room_id: OwnedRoomId,
}

/// Checks that `user` may act in conversation `id` (see the module doc).
pub async fn member_of<S: Store>(
    store: &S,
    namer: &PuppetNamer,
    request: &ApiRequest,
    user: AppUserId,
    id: &ConversationId,
) -> Result<Acting, ApiError> {
    let puppet = namer.user_id(&user);
    let (conversation, member) = tokio::join!(store.conversation(id), store.member(id, &puppet));
    let conversation = conversation?
        .ok_or_else(|| ApiError::NotFound(format!("conversation '{id}' not found")))?;
    let member = member?.ok_or_else(|| request.caller.not_a_member(&user, id))?;
    ensure_active(&conversation)?;
    let room_id = conversation
        .room_id
        .ok_or_else(|| ApiError::internal(format!("the active conversation '{id}' has no room")))?;
    Ok(Acting {
        user,
        puppet,
        member,
        room_id,
    })
}

/// Does `act` as a member's puppet in its room. When the homeserver says
/// the puppet is not in the room, joins it again (and records that) and
/// does `act` once more.
pub async fn in_room<S, M, T, F, Fut>(
    store: &S,
    matrix: &M,
    id: &ConversationId,
    acting: &Acting,
    act: F,
) -> Result<T, Error>
where
    S: Store,
    M: Matrix,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, MatrixError>>,
{
    match act().await {
        Err(err) if err.is_forbidden() => {
            let (room_id, puppet) = (&acting.room_id, &acting.puppet);
            tracing::info!(%puppet, %room_id, "puppet is not in the room; joining it again");
            join_room(matrix, room_id, puppet).await?;
            if let Err(err) = store.mark_joined(id, puppet).await {
                tracing::warn!(error = %err, "could not record the join");
            }
            Ok(act().await?)
        }
        other => Ok(other?),
    }
}

/// `409` unless the conversation is active: archived, or still being
/// provisioned, it takes no messages.
pub(super) fn ensure_active(conversation: &Conversation) -> Result<(), ApiError> {
    let id = &conversation.id;
    match conversation.status {
        ConversationStatus::Active => Ok(()),
        ConversationStatus::Archived => Err(ApiError::Conflict(format!(
            "conversation '{id}' is archived"
        ))),
        ConversationStatus::Provisioning => Err(ApiError::Conflict(format!(
            "conversation '{id}' is still being provisioned"
        ))),
    }
}
