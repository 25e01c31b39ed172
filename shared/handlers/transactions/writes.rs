//! A transaction's effects written to the table, all at once: the new
//! messages and member changes in batches, each changed message as a
//! conditional update (read again and redone when it changed meanwhile),
//! each confirmed delivery as `mark_sent`; then Matrix users' reactions
//! recorded, and those redacted taken back.

use futures::future::try_join_all;

use super::effects::{Effects, Update};
use crate::error::Error;
use crate::store::{Outbox, Store, StoreError};

/// How often a message that keeps changing is read again.
const ATTEMPTS: usize = 3;

pub async fn write<S: Store>(store: &S, effects: &Effects) -> Result<(), Error> {
    let stored = async {
        if effects.new_messages.is_empty() && effects.members.is_empty() {
            Ok(())
        } else {
            store
                .store_inbound(&effects.new_messages, &effects.members)
                .await
        }
    };
    let updated = try_join_all(effects.updates.iter().map(|update| apply(store, update)));
    let confirmed = try_join_all(
        effects
            .echoes
            .iter()
            .map(|(message, event_id)| store.mark_sent(message, event_id)),
    );
    tokio::try_join!(stored, updated, confirmed)?;
    // A reaction recorded already (a transaction processed again) is no
    // error, nor is one taken back already.
    settled(
        effects
            .reactions_added
            .iter()
            .map(|r| store.add_reaction(r)),
    )
    .await?;
    settled(
        effects
            .reactions_removed
            .iter()
            .map(|r| store.remove_reaction(r)),
    )
    .await?;
    Ok(())
}

/// Conditional writes, all at once; a condition failing means the write
/// was done already.
async fn settled<F>(writes: impl Iterator<Item = F>) -> Result<(), StoreError>
where
    F: std::future::Future<Output = Result<(), StoreError>>,
{
    try_join_all(writes.map(|write| async {
        match write.await {
            Ok(()) | Err(StoreError::Rejected) => Ok(()),
            Err(err) => Err(err),
        }
    }))
    .await?;
    Ok(())
}

/// Applies an update's changes to the message as stored.
async fn apply<S: Store>(store: &S, update: &Update) -> Result<(), StoreError> {
    let mut read = update.read.clone();
    for _ in 0..ATTEMPTS {
        let mut changed = read.clone();
        for change in &update.changes {
            change.apply(&mut changed);
        }
        if changed == read {
            return Ok(());
        }
        // A queued change the redaction made pointless leaves the outbox.
        let left_queue = read
            .pending_change
            .as_ref()
            .is_some_and(|change| change.delivery == crate::model::Delivery::Queued)
            && changed.pending_change.is_none();
        let outbox = if left_queue {
            Outbox::Leave
        } else {
            Outbox::Keep
        };
        match store.update_message(&read, &changed, outbox, None).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Rejected) => {
                read = match store.message(&read.conversation_id, read.id).await? {
                    Some(now) => now,
                    None => return Ok(()),
                };
            }
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::Unavailable(
        "a message kept changing while a transaction was written".into(),
    ))
}
