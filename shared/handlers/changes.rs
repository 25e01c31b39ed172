//! A message's pending change (an edit or a delete) on its way to Matrix:
//! what the edit and delete functions do on the spot and the retry function
//! does later, in one place.
//!
//! A change is stored on the message before Matrix is called. It goes
//! directly while the conversation's outbox is empty, else (or when the
//! homeserver cannot take it) it joins the outbox and the retry function
//! delivers it, in order after what was queued before. A later change of the
//! same message replaces a queued one, so Matrix gets the latest edit once,
//! or only the redaction.

use ruma::{RoomId, UserId};

use crate::error::Error;
use crate::handlers::outbound::own_content;
use crate::ids::PuppetNamer;
use crate::matrix::Matrix;
use crate::matrix::content::replacement;
use crate::metrics::Metrics;
use crate::model::{ChangeKind, Delivery, Message, PendingChange};
use crate::ports::{InitError, Ports};
use crate::queue::{RetryJob, RetryQueue};
use crate::store::{Outbox, Store, StoreError};

/// The state of a function that changes messages (edit, delete), built
/// once per container.
pub struct Changer<S, M, Q> {
    pub store: S,
    pub matrix: M,
    pub queue: Q,
    pub namer: PuppetNamer,
    pub metrics: Metrics,
}

impl<S, M, Q> Changer<S, M, Q> {
    /// The state of the function `name`.
    pub async fn build<P>(ports: &P, name: &'static str) -> Result<Self, InitError>
    where
        P: Ports<Store = S, Matrix = M, Queue = Q>,
    {
        Ok(Self {
            store: ports.store().await?,
            matrix: ports.matrix().await?,
            queue: ports.queue().await?,
            namer: ports.namer()?,
            metrics: ports.metrics(name),
        })
    }
}

/// What became of a change the API accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Matrix has it (or nothing needed to reach Matrix).
    Done(Message),
    /// It waits in the outbox for the retry function.
    Queued(Message),
}

/// Who redacts `message`: the bot for a moderator's delete (`by_bot`),
/// else its sender's puppet.
pub fn redactor<'a, M: Matrix>(matrix: &'a M, message: &'a Message, by_bot: bool) -> &'a UserId {
    if by_bot {
        matrix.bot()
    } else {
        &message.sender.matrix_user_id
    }
}

/// Sends `message`'s pending change: an `m.replace` of its event with its
/// current text, as its sender; or a redaction, by its sender or the bot.
/// The transaction id is the change's, so a repeat is harmless.
pub async fn send_change<M: Matrix>(
    matrix: &M,
    room: &RoomId,
    message: &Message,
) -> Result<(), Error> {
    let Some(change) = &message.pending_change else {
        return Ok(());
    };
    let event_id = message.event_id.as_ref().ok_or_else(|| {
        Error::Inconsistent(format!("message {} changed before it was sent", message.id))
    })?;
    let txn_id = message.change_txn_id();
    match &change.kind {
        ChangeKind::Edit => {
            // The message's whole new content: its text, or its file with
            // the new caption.
            let content =
                replacement(event_id, own_content(message), &message.id, message.changes)?;
            let sender = &message.sender.matrix_user_id;
            matrix.send_message(room, sender, &txn_id, &content).await?;
        }
        ChangeKind::Delete { reason, by_bot } => {
            let redactor = redactor(matrix, message, *by_bot);
            matrix
                .redact(room, redactor, event_id, &txn_id, reason.as_deref())
                .await?;
        }
    }
    Ok(())
}

/// Records that `read`'s pending change is over: it reached Matrix, or
/// failed for good with `failure`. It leaves the outbox. `Rejected` when
/// the message changed since it was read.
pub async fn settle_change<S: Store>(
    store: &S,
    read: &Message,
    failure: Option<String>,
) -> Result<Message, StoreError> {
    let outbox = if read.pending_change.is_some() {
        Outbox::Leave
    } else {
        Outbox::Keep
    };
    let mut settled = read.clone();
    settled.pending_change = None;
    if failure.is_some() {
        settled.failure = failure;
    }
    store.update_message(read, &settled, outbox, None).await?;
    settled.revision += 1;
    Ok(settled)
}

/// Hands `read`'s direct pending change over to the retry function (it
/// stays counted in the outbox) and queues a job for it. `in_doubt`: the
/// direct attempt may have landed.
pub async fn queue_change<S: Store, Q: RetryQueue>(
    store: &S,
    queue: &Q,
    read: &Message,
    in_doubt: bool,
) -> Result<Message, Error> {
    let mut queued = read.clone();
    if let Some(change) = &mut queued.pending_change {
        change.delivery = Delivery::Queued;
        change.in_doubt = in_doubt;
    }
    store
        .update_message(read, &queued, Outbox::Keep, None)
        .await?;
    queued.revision += 1;
    queue
        .enqueue(&RetryJob::change(
            queued.conversation_id.clone(),
            queued.id,
            queued.changes,
        ))
        .await?;
    Ok(queued)
}

/// How a change goes to Matrix, and how it moves the conversation's outbox,
/// given the delivery of the pending change of the same subject that it
/// replaces, if any. A replaced change is counted in the outbox already:
/// the new one takes its place there, queued, and the retry function
/// delivers the latest. Else it goes directly while the outbox is empty
/// (counted in it while in flight), and joins the outbox otherwise.
/// Message changes and provisioning changes (`provision::apply`) decide
/// alike.
pub fn route(replaced: Option<Delivery>, outbox_empty: bool) -> (Delivery, Outbox) {
    match replaced {
        Some(_) => (Delivery::Queued, Outbox::Keep),
        None if outbox_empty => (Delivery::Direct, Outbox::EnterIfEmpty),
        None => (Delivery::Queued, Outbox::Enter),
    }
}

/// Stores `changed` (the message `read` with a new change of kind `kind`
/// applied) and delivers the change: directly when nothing waits before it,
/// else through the outbox. `idempotency` is the request's key, used once.
/// `Err(Store(Rejected))` when the message or the outbox changed since they
/// were read: read again and retry.
pub async fn apply_change<S: Store, M: Matrix, Q: RetryQueue>(
    ports: (&S, &M, &Q),
    room: &RoomId,
    read: &Message,
    mut changed: Message,
    kind: ChangeKind,
    outbox_empty: bool,
    idempotency: Option<&crate::model::IdempotencyRecord>,
) -> Result<Accepted, Error> {
    let (store, matrix, queue) = ports;
    changed.changes = read.changes + 1;
    // A pending change is replaced: it is counted in the outbox already,
    // and its delivery (its request, or its job) delivers the latest one.
    let replaced = read.pending_change.as_ref().map(|change| change.delivery);
    let (delivery, outbox) = route(replaced, outbox_empty);
    let already_queued = replaced == Some(Delivery::Queued);
    changed.pending_change = Some(PendingChange {
        kind,
        delivery,
        // In the replaced change's place.
        since: read.pending_since(),
        in_doubt: false,
    });
    store
        .update_message(read, &changed, outbox, idempotency)
        .await?;
    changed.revision = read.revision + 1;
    match (delivery, already_queued) {
        (Delivery::Queued, true) => return Ok(Accepted::Queued(changed)),
        (Delivery::Queued, false) => {
            queue
                .enqueue(&RetryJob::change(
                    changed.conversation_id.clone(),
                    changed.id,
                    changed.changes,
                ))
                .await?;
            return Ok(Accepted::Queued(changed));
        }
        (Delivery::Direct, _) => {}
    }
    deliver_direct((store, matrix, queue), room, changed).await
}

/// Delivers `changed`'s stored direct pending change now; when the
/// homeserver cannot take it, hands it to the retry function.
pub async fn deliver_direct<S: Store, M: Matrix, Q: RetryQueue>(
    ports: (&S, &M, &Q),
    room: &RoomId,
    changed: Message,
) -> Result<Accepted, Error> {
    let (store, matrix, queue) = ports;
    match send_change(matrix, room, &changed).await {
        Ok(()) => Ok(Accepted::Done(settle_or_leave(store, &changed, None).await)),
        Err(err) if err.is_transient() => {
            tracing::warn!(error = %err, message_id = %changed.id, "homeserver unavailable; queueing the change");
            Ok(Accepted::Queued(
                queue_change(store, queue, &changed, err.may_have_landed()).await?,
            ))
        }
        Err(err) => {
            tracing::warn!(error = %err, message_id = %changed.id, "homeserver refused the change");
            let failure = format!("the change was not delivered: {}", err.reason());
            Ok(Accepted::Done(
                settle_or_leave(store, &changed, Some(failure)).await,
            ))
        }
    }
}

/// Settles a direct change; if that write fails, the change stays pending
/// on the message (delivered all the same), which the next change or the
/// sweeper clears, and the caller still gets its answer.
async fn settle_or_leave<S: Store>(store: &S, read: &Message, failure: Option<String>) -> Message {
    match settle_change(store, read, failure.clone()).await {
        Ok(settled) => settled,
        Err(err) => {
            tracing::error!(error = %err, message_id = %read.id, "change delivered but not settled");
            let mut shown = read.clone();
            shown.failure = failure.or(shown.failure);
            shown
        }
    }
}
