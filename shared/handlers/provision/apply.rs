//! A change of a conversation or of a member on its way to Matrix, the way
//! a message change goes (`handlers::changes::route`): written with its
//! [`PendingSync`] in one transaction and counted into the conversation's
//! outbox until it settles, then delivered directly while nothing else is
//! unsettled there, else by the retry function, in order after what waits
//! there. A homeserver that cannot take it hands it to the retry function;
//! a refusal drops it and is the caller's to undo. The sweeper finds one
//! left pending (a request that died, a lost job) like a message.

use time::OffsetDateTime;

use super::service::{Applied, Provisioning};
use super::sync;
use crate::error::Error;
use crate::handlers::changes::route;
use crate::matrix::Matrix;
use crate::model::{Conversation, Delivery, Member, MessageId, PendingSync, SyncSubject};
use crate::queue::{RetryJob, RetryQueue};
use crate::store::{MemberWrite, Store, StoreError, SyncContext};

/// What a change writes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Change<'a> {
    /// A member's record, and whether the application asked for it back
    /// after a Matrix moderator removed it ([`PendingSync::readmit`]).
    Member {
        write: MemberWrite<'a>,
        readmit: bool,
    },
    /// The conversation as read, and as it is to be.
    Room {
        read: &'a Conversation,
        next: &'a Conversation,
    },
}

impl<S: Store, M: Matrix, Q: RetryQueue> Provisioning<S, M, Q> {
    /// Writes `change` of `subject` against `context` (as read before) and
    /// delivers it. `Err(Store(Rejected))` when something changed since
    /// `context` was read: read again and retry.
    pub(super) async fn apply(
        &self,
        context: &SyncContext,
        subject: SyncSubject,
        change: Change<'_>,
    ) -> Result<Applied, Error> {
        let conversation = context
            .conversation
            .as_ref()
            .ok_or(Error::Store(StoreError::Rejected))?;
        // A pending sync of the subject is replaced: it is counted in the
        // outbox already, and its job (or one queued now, if it was in
        // flight) delivers what the table says then.
        let replaced = context.sync.as_ref().map(|pending| pending.delivery);
        let (delivery, outbox) = route(replaced, conversation.outbox <= 0);
        let already_queued = replaced == Some(Delivery::Queued);
        // A pending readmission stays asked for until the member is removed.
        let readmit = match change {
            Change::Member {
                write: MemberWrite::Put(_),
                readmit,
            } => readmit || context.sync.as_ref().is_some_and(|pending| pending.readmit),
            Change::Member { .. } | Change::Room { .. } => false,
        };
        let sync = PendingSync {
            conversation_id: conversation.id.clone(),
            subject,
            id: MessageId::new(),
            delivery,
            // In the replaced sync's place.
            since: context
                .sync
                .as_ref()
                .map_or_else(OffsetDateTime::now_utc, |pending| pending.since),
            readmit,
        };
        let replaces = context.sync.as_ref().map(|pending| pending.id);
        let after = match change {
            Change::Member { write, .. } => {
                self.store
                    .change_member(write, &sync, replaces, outbox)
                    .await?;
                let member: Option<Member> = match write {
                    MemberWrite::Put(member) => Some(member.clone()),
                    MemberWrite::Remove(_) => None,
                };
                SyncContext {
                    conversation: Some(conversation.clone()),
                    member,
                    sync: Some(sync.clone()),
                }
            }
            Change::Room { read, next } => {
                self.store
                    .change_room(read, next, &sync, replaces, outbox)
                    .await?;
                SyncContext {
                    conversation: Some(next.clone()),
                    member: None,
                    sync: Some(sync.clone()),
                }
            }
        };
        match (delivery, already_queued) {
            // Its job, queued before, delivers what the table says then.
            (Delivery::Queued, true) => return Ok(Applied::Queued),
            (Delivery::Queued, false) => {
                self.queue.enqueue(&RetryJob::sync(&sync)).await?;
                return Ok(Applied::Queued);
            }
            (Delivery::Direct, _) => {}
        }
        match sync::run(&self.store, &self.matrix, &self.metrics, &sync, Some(after)).await {
            Ok(()) => Ok(Applied::Done),
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, conversation = %sync.conversation_id, "homeserver unavailable; the change waits in the outbox");
                match self.store.queue_sync(&sync).await {
                    Ok(()) => self.queue.enqueue(&RetryJob::sync(&sync)).await?,
                    // Replaced meanwhile: the newer change is delivered by its own request.
                    Err(StoreError::Rejected) => {}
                    Err(other) => return Err(other.into()),
                }
                Ok(Applied::Queued)
            }
            Err(err) => {
                tracing::warn!(error = %err, conversation = %sync.conversation_id, "the homeserver refused a change");
                sync::give_up(&self.store, &sync).await?;
                Err(err)
            }
        }
    }
}
