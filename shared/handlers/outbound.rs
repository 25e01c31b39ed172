//! Sending a stored message into its room: what the send function does on
//! the spot and the retry function does later, in one place.

use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};

use crate::error::Error;
use crate::matrix::content::{media_content, text_content};
use crate::matrix::{Matrix, MatrixError};
use crate::model::Message;
use crate::store::Store;

/// The transaction id of a message's send: derived from its id, so every
/// attempt is the same request to the homeserver.
pub fn send_txn_id(message: &Message) -> String {
    message.id.txn_id("send")
}

/// The `m.room.message` content for a message, with its reply relation: a
/// file's (its body the caption) when it has an attachment, else text.
pub fn event_content(
    message: &Message,
    reply_to_event: Option<&ruma::EventId>,
) -> Result<serde_json::Value, Error> {
    if let Some(file) = message.attachments.first() {
        return media_content(
            &file.info,
            &file.content_uri,
            &file.filename,
            Some(&message.body),
            message.html.as_deref(),
            reply_to_event,
            &message.id,
        );
    }
    text_content(
        &message.body,
        message.html.as_deref(),
        reply_to_event,
        &message.id,
    )
}

/// The content of a stored message, looking up the event it replies to.
pub async fn stored_content<S: Store>(
    store: &S,
    message: &Message,
) -> Result<serde_json::Value, Error> {
    let reply_event = match message.reply_to {
        Some(reply_to) => store
            .message(&message.conversation_id, reply_to)
            .await?
            .and_then(|target| target.event_id),
        None => None,
    };
    event_content(message, reply_event.as_deref())
}

/// Puts a puppet in a room: joins it, and where the room will not let it
/// (it left, or was removed, and the room is invite-only) has the bot invite
/// it first.
pub async fn join_room<M: Matrix>(
    matrix: &M,
    room_id: &RoomId,
    user: &UserId,
) -> Result<(), MatrixError> {
    match matrix.join(room_id, user).await {
        Err(err) if err.is_forbidden() => {
            tracing::info!(%user, %room_id, "puppet may not join; inviting it again");
            matrix.invite(room_id, user).await?;
            matrix.join(room_id, user).await
        }
        other => other,
    }
}

/// Sends a message as its sender's puppet. A puppet that is not in the room
/// (left, or was removed on the Matrix side) is joined again, once.
pub async fn send_as_sender<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    room_id: &OwnedRoomId,
    message: &Message,
    content: &serde_json::Value,
) -> Result<OwnedEventId, MatrixError> {
    let sender = &message.sender.matrix_user_id;
    let txn_id = send_txn_id(message);
    match matrix.send_message(room_id, sender, &txn_id, content).await {
        Err(err) if err.is_forbidden() => {
            tracing::info!(%sender, %room_id, "puppet is not in the room; joining it again");
            join_room(matrix, room_id, sender).await?;
            if let Err(err) = store.mark_joined(&message.conversation_id, sender).await {
                tracing::warn!(error = %err, "could not record the join");
            }
            matrix.send_message(room_id, sender, &txn_id, content).await
        }
        other => other,
    }
}
