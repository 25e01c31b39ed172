//! Sending a stored message into its room: what the send function does on
//! the spot and the retry function does later, in one place.

use ruma::events::relation::Reply;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};

use crate::error::Error;
use crate::matrix::{MESSAGE_ID_KEY, Matrix, MatrixError};
use crate::model::Message;
use crate::store::Store;

/// The largest event content we send; Matrix caps a whole event at 64 KiB.
pub const MAX_CONTENT: usize = 60 * 1024;

/// The transaction id of a message's send: derived from its id, so every
/// attempt is the same request to the homeserver.
pub fn send_txn_id(message: &Message) -> String {
    message.id.txn_id("send")
}

/// The `m.room.message` content for a message, with its id under
/// [`MESSAGE_ID_KEY`] and its reply relation; refused if Matrix would refuse its size.
pub fn event_content(
    message: &Message,
    reply_to_event: Option<&ruma::EventId>,
) -> Result<serde_json::Value, Error> {
    let mut content = match &message.html {
        Some(html) => RoomMessageEventContent::text_html(message.body.clone(), html.clone()),
        None => RoomMessageEventContent::text_plain(message.body.clone()),
    };
    content.relates_to =
        reply_to_event.map(|event_id| Relation::Reply(Reply::with_event_id(event_id.to_owned())));
    // Serialising plain strings and ids cannot fail; if it ever did, the
    // message could not be sent either.
    let mut content = serde_json::to_value(content)
        .map_err(|err| Error::Inconsistent(format!("message content: {err}")))?;
    content[MESSAGE_ID_KEY] = serde_json::Value::String(message.id.to_string());
    let size = serde_json::to_vec(&content).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_CONTENT {
        return Err(Error::EventTooLarge {
            size,
            max: MAX_CONTENT,
        });
    }
    Ok(content)
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
