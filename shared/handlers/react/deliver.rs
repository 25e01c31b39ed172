//! A reaction on its way into Matrix and out of it: what the react function
//! does on the spot and the retry function does later, in one place. Every
//! request carries a transaction id derived from the reaction's id, so a
//! repeat is the same request to the homeserver.

use ruma::{EventId, RoomId};

use crate::error::Error;
use crate::matrix::Matrix;
use crate::model::Reaction;
use crate::store::{Store, StoreError};

/// Sends `reaction` (recorded, with no event yet) as its sender, an
/// annotation of `target`, and records its event. A reaction removed
/// meanwhile is left to its removal's job, which takes it out again.
pub async fn send<S: Store, M: Matrix>(
    (store, matrix): (&S, &M),
    room: &RoomId,
    target: &EventId,
    reaction: &Reaction,
) -> Result<(), Error> {
    let event_id = matrix
        .send_reaction(
            room,
            &reaction.sender.matrix_user_id,
            &reaction.send_txn_id(),
            target,
            &reaction.key,
        )
        .await?;
    match store.mark_reaction_sent(reaction, &event_id).await {
        Ok(()) | Err(StoreError::Rejected) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Takes a removed reaction out of Matrix: redacts its event, as its
/// sender. Without an event recorded (its send may have landed with the
/// answer lost, or be on its way), it is sent first with its own
/// transaction id, which gives back the event that landed, if one did.
pub async fn take_out<M: Matrix>(
    matrix: &M,
    room: &RoomId,
    target: Option<&EventId>,
    reaction: &Reaction,
) -> Result<(), Error> {
    let sender = &reaction.sender.matrix_user_id;
    let event_id = match (&reaction.event_id, target) {
        (Some(event_id), _) => event_id.clone(),
        (None, Some(target)) => {
            matrix
                .send_reaction(room, sender, &reaction.send_txn_id(), target, &reaction.key)
                .await?
        }
        // The message's event is unknown: the reaction was never sent.
        (None, None) => return Ok(()),
    };
    matrix
        .redact(room, sender, &event_id, &reaction.redact_txn_id(), None)
        .await?;
    Ok(())
}
