//! Sending a stored message into its room: what the send function does on
//! the spot and the retry function does later, in one place.

use ruma::events::relation::Reply;
use ruma::events::room::member::MembershipState;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use time::OffsetDateTime;

use super::changes::settle_change;
use crate::error::Error;
use crate::matrix::Matrix;
use crate::matrix::content::{media_message, text_message, to_event};
use crate::model::{ChangeKind, Delivery, Message, MessageStatus, PendingChange, Removal};
use crate::store::{Outbox, Store, StoreError};

/// The transaction id of a message's send: derived from its id, so every
/// attempt is the same request to the homeserver.
pub fn send_txn_id(message: &Message) -> String {
    message.id.txn_id("send")
}

/// The `m.room.message` content for a message, with its reply relation.
pub fn event_content(
    message: &Message,
    reply_to_event: Option<&ruma::EventId>,
) -> Result<serde_json::Value, Error> {
    let mut content = own_content(message);
    content.relates_to =
        reply_to_event.map(|event_id| Relation::Reply(Reply::with_event_id(event_id.to_owned())));
    to_event(&content, &message.id)
}

/// A message's own content, without relations: its file, the body its
/// caption, when it has an attachment; else its text.
pub fn own_content(message: &Message) -> RoomMessageEventContent {
    let html = message.html.as_deref();
    match message.attachments.first() {
        Some(file) => media_message(
            &file.info,
            &file.content_uri,
            &file.filename,
            Some(&message.body),
            html,
        ),
        None => text_message(&message.body, html),
    }
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
/// (it left, or the bridge removed it, and the room is invite-only) has the
/// bot invite it first. A puppet a Matrix moderator kicked or banned is not
/// put back: that is [`Error::Removed`].
pub async fn join_room<M: Matrix>(
    matrix: &M,
    room_id: &RoomId,
    user: &UserId,
) -> Result<(), Error> {
    match matrix.join(room_id, user).await {
        Err(err) if err.is_forbidden() => {
            if let Some(removal) = removed_by_moderator(matrix, room_id, user).await? {
                tracing::info!(%user, %room_id, by = %removal.by, "puppet was removed by a moderator; not inviting it again");
                return Err(Error::Removed(removal));
            }
            tracing::info!(%user, %room_id, "puppet may not join; inviting it again");
            matrix.invite(room_id, user).await?;
            Ok(matrix.join(room_id, user).await?)
        }
        other => Ok(other?),
    }
}

/// How `user` lost its membership, if someone other than itself and the
/// bridge's bot took it (a kick or a ban), as the room's state says.
pub(crate) async fn removed_by_moderator<M: Matrix>(
    matrix: &M,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Option<Removal>, Error> {
    let Some(state) = matrix.membership(room_id, user).await? else {
        return Ok(None);
    };
    let by_moderator = state.sender != user && state.sender != matrix.bot();
    let removed = matches!(
        state.membership,
        MembershipState::Leave | MembershipState::Ban
    );
    Ok((by_moderator && removed).then(|| Removal {
        by: state.sender,
        banned: state.membership == MembershipState::Ban,
        reason: state.reason,
        at: OffsetDateTime::now_utc(),
    }))
}

/// Sends a message as its sender's puppet. A puppet that is not in the room
/// (it left, or the bridge removed it) is joined again, once; one a Matrix
/// moderator removed is not.
pub async fn send_as_sender<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    room_id: &OwnedRoomId,
    message: &Message,
    content: &serde_json::Value,
) -> Result<OwnedEventId, Error> {
    let sender = &message.sender.matrix_user_id;
    let txn_id = send_txn_id(message);
    match matrix.send_message(room_id, sender, &txn_id, content).await {
        Err(err) if err.is_forbidden() => {
            tracing::info!(%sender, %room_id, "puppet is not in the room; joining it again");
            join_room(matrix, room_id, sender).await?;
            if let Err(err) = store.mark_joined(&message.conversation_id, sender).await {
                tracing::warn!(error = %err, "could not record the join");
            }
            Ok(matrix
                .send_message(room_id, sender, &txn_id, content)
                .await?)
        }
        other => Ok(other?),
    }
}

/// Settles a send whose message changed while it was on its way to Matrix
/// (`mark_sent` or `mark_failed` left it alone). `landed` is the event the
/// send became, or `None` when the homeserver refused it for good (with
/// `failure`). An edit made meanwhile (in place, on the pending message)
/// becomes a pending edit of the event; a delete (a cancel) becomes the
/// redaction of the event, or, when nothing landed, is over. A pending
/// change returned is stored with `delivery`, for the caller to deliver;
/// `None` when nothing is left to do.
pub async fn reconcile<S: Store>(
    store: &S,
    sent: &Message,
    landed: Option<&EventId>,
    failure: &str,
    delivery: Delivery,
) -> Result<Option<Message>, StoreError> {
    for _ in 0..3 {
        let Some(current) = store.message(&sent.conversation_id, sent.id).await? else {
            return Ok(None);
        };
        let cancel = current.status == MessageStatus::Deleted
            && current.event_id.is_none()
            && matches!(
                current.pending_change,
                Some(PendingChange {
                    kind: ChangeKind::Delete { .. },
                    ..
                })
            );
        let mut next = current.clone();
        match (current.status, landed) {
            (MessageStatus::Pending, Some(event_id)) => {
                next.status = MessageStatus::Sent;
                next.event_id = Some(event_id.to_owned());
                next.changes = current.changes + 1;
                next.pending_change = Some(PendingChange {
                    kind: ChangeKind::Edit,
                    delivery,
                });
            }
            (MessageStatus::Pending, None) => {
                if store.mark_failed(&current, failure).await? {
                    return Ok(None);
                }
                continue;
            }
            (MessageStatus::Deleted, Some(event_id)) if cancel => {
                next.event_id = Some(event_id.to_owned());
                if let Some(change) = &mut next.pending_change {
                    change.delivery = delivery;
                }
            }
            (MessageStatus::Deleted, None) if cancel => {
                match settle_change(store, &current, None).await {
                    Ok(_) => return Ok(None),
                    Err(StoreError::Rejected) => continue,
                    Err(err) => return Err(err),
                }
            }
            _ => return Ok(None),
        }
        match store
            .update_message(&current, &next, Outbox::Keep, None)
            .await
        {
            Ok(()) => {
                next.revision = current.revision + 1;
                return Ok(Some(next));
            }
            Err(StoreError::Rejected) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::Rejected)
}
