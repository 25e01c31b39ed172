//! A conversation's room, made once: `createRoom` claims the
//! conversation's alias (in the appservice's exclusive namespace), so a
//! second creation, after an attempt that failed or crashed between making
//! the room and recording it, is refused with `M_ROOM_IN_USE` and the alias
//! leads to the room made first. And puppets joining a room just made.

use ruma::api::error::ErrorKind;
use ruma::{OwnedRoomId, RoomAliasId, RoomId};
use serde_json::json;

use crate::error::Error;
use crate::matrix::{Matrix, RoomSpec};
use crate::model::{Member, Puppet};

/// Creates the room `spec` describes under `alias`, or finds the one an
/// earlier attempt made; says whether it was made now.
pub(super) async fn create_once<M: Matrix>(
    matrix: &M,
    spec: &RoomSpec,
    alias: &RoomAliasId,
) -> Result<(OwnedRoomId, bool), Error> {
    match matrix.create_room(spec).await {
        Ok(room) => Ok((room, true)),
        Err(err) if matches!(err.kind(), Some(ErrorKind::RoomInUse)) => {
            let room = matrix.resolve_alias(alias).await?.ok_or_else(|| {
                Error::Inconsistent(format!("alias {alias} is taken but names no room"))
            })?;
            tracing::info!(%room, %alias, "the room was made by an earlier attempt; using it");
            Ok((room, false))
        }
        Err(err) => Err(err.into()),
    }
}

/// Joins an invited puppet to a new room and, when its per-conversation
/// name differs from its global one, sets it as its member event (with its
/// avatar, as the join had it).
pub(super) async fn join_with_name<M: Matrix>(
    matrix: &M,
    room: &RoomId,
    member: &Member,
    puppet: Option<&Puppet>,
) -> Result<(), Error> {
    let user = &member.matrix_user_id;
    matrix.join(room, user).await?;
    let global = puppet.and_then(|puppet| puppet.display_name.as_deref());
    if let Some(name) = member
        .display_name
        .as_deref()
        .filter(|name| Some(*name) != global)
    {
        let mut content = json!({"membership": "join", "displayname": name});
        if let Some(avatar) = puppet.and_then(|puppet| puppet.avatar_url.as_deref()) {
            content["avatar_url"] = json!(avatar);
        }
        matrix
            .put_state(room, user, "m.room.member", user.as_str(), &content)
            .await?;
    }
    Ok(())
}
