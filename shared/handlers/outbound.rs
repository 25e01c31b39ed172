//! Sending a stored message into its room: what the send function does on
//! the spot and the retry function does later, in one place.

use ruma::events::relation::{Reply, Thread};
use ruma::events::room::member::MembershipState;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use time::OffsetDateTime;

use super::changes::settle_change;
use crate::error::Error;
use crate::ids::ConversationId;
use crate::matrix::Matrix;
use crate::matrix::content::{media_message, notice_message, text_message, to_event};
use crate::model::{
    ChangeKind, Delivery, Mentions, Message, MessageId, MessageStatus, MsgType, PendingChange,
    Removal,
};
use crate::store::{Outbox, Store, StoreError};

/// The transaction id of a message's send: derived from its id, so every
/// attempt is the same request to the homeserver.
pub fn send_txn_id(message: &Message) -> String {
    message.id.txn_id("send")
}

/// The events a message's relations point at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Related {
    /// The event it replies to.
    pub reply_to: Option<OwnedEventId>,
    /// Its thread: the root's event, and the thread's latest event before
    /// it (the reply fallback's target).
    pub thread: Option<(OwnedEventId, OwnedEventId)>,
}

/// The `m.room.message` content for a message, with its relation: a
/// thread (`m.thread`, with the reply fallback to the thread's latest
/// event, or a real reply within the thread), or a reply.
pub fn event_content(message: &Message, related: &Related) -> Result<serde_json::Value, Error> {
    let mut content = own_content(message);
    content.relates_to = match (&related.thread, &related.reply_to) {
        (Some((root, _)), Some(reply)) => {
            Some(Relation::Thread(Thread::reply(root.clone(), reply.clone())))
        }
        (Some((root, latest)), None) => Some(Relation::Thread(Thread::plain(
            root.clone(),
            latest.clone(),
        ))),
        (None, Some(reply)) => Some(Relation::Reply(Reply::with_event_id(reply.clone()))),
        (None, None) => None,
    };
    to_event(&content, &message.id)
}

/// The events of a message's relations: the event of the message it
/// replies to (`reply_to`, when sent), and of its thread's `root` with the
/// thread's latest event. A root still pending is [`Error::Waiting`], one
/// that never reached Matrix [`Error::Unrelatable`].
pub async fn related<S: Store>(
    store: &S,
    message: &Message,
    reply_to: Option<&Message>,
    root: Option<&Message>,
) -> Result<Related, Error> {
    let thread = match root {
        Some(root) => {
            let Some(root_event) = root.event_id.clone() else {
                return Err(if root.status == MessageStatus::Pending {
                    Error::Waiting(format!("the thread's root '{}'", root.id))
                } else {
                    Error::Unrelatable("the thread's root never reached Matrix".into())
                });
            };
            let recent = store
                .thread(&message.conversation_id, root.id, LATEST_SCAN, None)
                .await?;
            let latest = recent
                .messages
                .into_iter()
                .filter(|other| other.id != message.id && other.id < message.id)
                .find_map(|other| other.event_id)
                .unwrap_or_else(|| root_event.clone());
            Some((root_event, latest))
        }
        None => None,
    };
    Ok(Related {
        reply_to: reply_to.and_then(|target| target.event_id.clone()),
        thread,
    })
}

/// How many of a thread's latest messages are looked at for the latest
/// one that reached Matrix (the reply fallback's target).
const LATEST_SCAN: usize = 10;

/// A message's own content, without relations: its file, the body its
/// caption, when it has an attachment; else its text; with its mentions
/// (`m.mentions`).
pub fn own_content(message: &Message) -> RoomMessageEventContent {
    let html = message.html.as_deref();
    let mut content = match message.attachments.first() {
        Some(file) => media_message(
            &file.info,
            &file.content_uri,
            &file.filename,
            Some(&message.body),
            html,
        ),
        None if message.msgtype == Some(MsgType::Notice) => notice_message(&message.body, html),
        None => text_message(&message.body, html),
    };
    content.mentions = message.mentions.as_ref().map(Mentions::to_matrix);
    content
}

/// The content of a stored message, looking up the events of its
/// relations.
pub async fn stored_content<S: Store>(
    store: &S,
    message: &Message,
) -> Result<serde_json::Value, Error> {
    let (reply_to, root) = related_messages(
        store,
        &message.conversation_id,
        message.reply_to,
        message.thread_id,
    )
    .await?;
    let related = related(store, message, reply_to.as_ref(), root.as_ref()).await?;
    event_content(message, &related)
}

/// The messages of conversation `id` that a message replies to and whose
/// thread it is in, read at once (`None` where not asked or not found).
pub async fn related_messages<S: Store>(
    store: &S,
    id: &ConversationId,
    reply_to: Option<MessageId>,
    thread_id: Option<MessageId>,
) -> Result<(Option<Message>, Option<Message>), StoreError> {
    let read = |message: Option<MessageId>| async move {
        match message {
            Some(message) => store.message(id, message).await,
            None => Ok(None),
        }
    };
    let (reply_to, root) = tokio::join!(read(reply_to), read(thread_id));
    Ok((reply_to?, root?))
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
                    // In the send's place.
                    since: current.pending_since(),
                    in_doubt: false,
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

#[cfg(test)]
mod tests {
    use ruma::events::room::message::{MessageType, Relation, RoomMessageEventContent};
    use ruma::{owned_event_id, owned_user_id};
    use time::OffsetDateTime;

    use super::*;
    use crate::model::{Delivery, Format, MessageStatus, Origin, Sender};

    fn message(msgtype: Option<MsgType>) -> Message {
        Message {
            id: MessageId::new(),
            conversation_id: ConversationId::parse("grp-1").unwrap(),
            sender: Sender {
                user_id: None,
                matrix_user_id: owned_user_id!("@app_alice:localhost"),
                display_name: None,
            },
            body: "me too".into(),
            format: Format::Plain,
            html: None,
            reply_to: None,
            thread_id: Some(MessageId::new()),
            attachments: Vec::new(),
            status: MessageStatus::Pending,
            delivery: Delivery::Direct,
            event_id: None,
            origin: Origin::App,
            created_at: OffsetDateTime::now_utc(),
            edited_at: None,
            deleted_at: None,
            failure: None,
            changes: 0,
            pending_change: None,
            in_doubt: false,
            revision: 0,
            msgtype,
            file: None,
            mentions: None,
        }
    }

    fn parsed(related: &Related, msgtype: Option<MsgType>) -> RoomMessageEventContent {
        let content = event_content(&message(msgtype), related).unwrap();
        serde_json::from_value(content).unwrap()
    }

    #[test]
    fn a_thread_message_is_an_m_thread_with_the_fallback_to_the_latest_event() {
        let related = Related {
            reply_to: None,
            thread: Some((owned_event_id!("$root"), owned_event_id!("$latest"))),
        };
        let Some(Relation::Thread(thread)) = parsed(&related, None).relates_to else {
            panic!("not in a thread")
        };
        assert_eq!(thread.event_id, "$root");
        assert!(thread.is_falling_back);
        assert_eq!(thread.in_reply_to.unwrap().event_id, "$latest");
    }

    #[test]
    fn a_reply_within_a_thread_is_a_real_reply_not_a_fallback() {
        let related = Related {
            reply_to: Some(owned_event_id!("$answered")),
            thread: Some((owned_event_id!("$root"), owned_event_id!("$latest"))),
        };
        let content = parsed(&related, Some(MsgType::Notice));
        assert!(matches!(content.msgtype, MessageType::Notice(_)));
        let Some(Relation::Thread(thread)) = content.relates_to else {
            panic!("not in a thread")
        };
        assert_eq!(thread.event_id, "$root");
        assert!(!thread.is_falling_back);
        assert_eq!(thread.in_reply_to.unwrap().event_id, "$answered");
    }

    #[test]
    fn a_reply_outside_threads_is_a_plain_reply() {
        let related = Related {
            reply_to: Some(owned_event_id!("$answered")),
            thread: None,
        };
        let Some(Relation::Reply(reply)) = parsed(&related, None).relates_to else {
            panic!("not a reply")
        };
        assert_eq!(reply.in_reply_to.event_id, "$answered");
        assert!(parsed(&Related::default(), None).relates_to.is_none());
    }
}
