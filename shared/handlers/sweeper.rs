//! The `sweeper` function, on a schedule: nothing accepted stays pending
//! for good.
//!
//! An operation (a send, an edit, a delete, a change of a room or a member)
//! can be left pending without a retry job: its request died between
//! storing it and settling it, the queue refused its job, or its job
//! dead-lettered. The sweeper finds the operations pending longer than
//! `stale_after` (the store's pending index) and hands them to the retry
//! function again, the longest pending first: it marks a direct one queued
//! and enqueues a job. A job that is still on its way is harmless to
//! repeat: the retry function checks what is stored, and the homeserver
//! answers a repeated transaction with the first event. An operation pending
//! longer than `max_age` fails, with a reason the application can read (a
//! room or member change is dropped, so the outbox moves on, and logged).

use serde::Serialize;
use time::OffsetDateTime;

use super::changes::settle_change;
use crate::config::SweepSettings;
use crate::error::Error;
use crate::function::{BoxFuture, Function, Handler, ScheduledFunction};
use crate::metrics::{Counter, Metrics};
use crate::model::{Delivery, Message, PendingOperation, PendingSync};
use crate::ports::{BoxError, InitError, Ports};
use crate::queue::{RetryJob, RetryQueue};
use crate::store::{Outbox, Store, StoreError};

pub const NAME: &str = "sweeper";

/// How many stale operations one run looks at; the next run takes the rest.
const BATCH: usize = 200;

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::scheduled(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Scheduled(Box::new(Sweeper::new(
        ports.sweep_settings()?,
        ports.store().await?,
        ports.queue().await?,
        ports.metrics(NAME),
    ))))
}

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sweep {
    /// Stale operations found.
    pub found: usize,
    /// Handed to the retry function again.
    pub requeued: usize,
    /// Past their deadline: failed.
    pub failed: usize,
}

/// The sweeper's state, built once per container.
pub struct Sweeper<S, Q> {
    settings: SweepSettings,
    store: S,
    queue: Q,
    metrics: Metrics,
}

impl<S: Store + 'static, Q: RetryQueue + 'static> ScheduledFunction for Sweeper<S, Q> {
    fn call(&self) -> BoxFuture<'_, Result<serde_json::Value, BoxError>> {
        Box::pin(async move {
            let sweep = self.sweep(OffsetDateTime::now_utc()).await?;
            Ok(serde_json::to_value(sweep)?)
        })
    }
}

impl<S: Store, Q: RetryQueue> Sweeper<S, Q> {
    pub fn new(settings: SweepSettings, store: S, queue: Q, metrics: Metrics) -> Self {
        Self {
            settings,
            store,
            queue,
            metrics,
        }
    }

    /// Sweeps as of `now`.
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<Sweep, Error> {
        let older_than = now - self.settings.stale_after;
        let messages = self.store.stale_pending(older_than, BATCH).await?;
        let syncs = self.store.stale_syncs(older_than, BATCH).await?;
        // The longest pending first, whatever its kind, so the jobs of one
        // conversation are queued in the order its operations were accepted.
        let mut stale: Vec<PendingOperation> = messages
            .into_iter()
            .map(|message| PendingOperation::Message(Box::new(message)))
            .chain(syncs.into_iter().map(PendingOperation::Sync))
            .collect();
        stale.sort_by_key(PendingOperation::since);
        let mut sweep = Sweep {
            found: stale.len(),
            ..Sweep::default()
        };
        // Queued together at the end, in the operations' order.
        let mut jobs = Vec::new();
        for operation in stale {
            let expired = operation
                .since()
                .is_some_and(|since| now - since > self.settings.max_age);
            let outcome = match (&operation, expired) {
                (PendingOperation::Message(message), true) => {
                    self.fail(message).await.map(|()| &mut sweep.failed)
                }
                (PendingOperation::Message(message), false) => {
                    self.requeue(message).await.map(|()| &mut sweep.requeued)
                }
                (PendingOperation::Sync(pending), true) => {
                    self.drop_sync(pending).await.map(|()| &mut sweep.failed)
                }
                (PendingOperation::Sync(pending), false) => self
                    .requeue_sync(pending)
                    .await
                    .map(|()| &mut sweep.requeued),
            };
            match outcome {
                Ok(count) => {
                    *count += 1;
                    if !expired {
                        jobs.push(RetryJob::delivering(&operation));
                    }
                }
                // Settled or changed meanwhile: nothing to do.
                Err(Error::Store(StoreError::Rejected)) => {}
                Err(err) => return Err(err),
            }
        }
        self.queue.enqueue_all(&jobs).await?;
        if sweep.found > 0 {
            tracing::warn!(?sweep, "swept stale pending operations");
            for _ in 0..sweep.requeued {
                self.metrics.count(Counter::OperationsRequeued);
            }
        }
        Ok(sweep)
    }

    /// Marks a message's direct operation queued (it stays in the outbox),
    /// for the job the sweep queues. A direct one is in doubt: its request
    /// died on the way, perhaps after Matrix had it.
    async fn requeue(&self, message: &Message) -> Result<(), Error> {
        let mut queued = message.clone();
        if let Some(change) = &mut queued.pending_change {
            if change.delivery == Delivery::Direct {
                change.delivery = Delivery::Queued;
                change.in_doubt = true;
                self.store
                    .update_message(message, &queued, Outbox::Keep, None)
                    .await?;
            }
        } else if message.delivery == Delivery::Direct {
            queued.in_doubt = true;
            self.store.mark_queued(&queued).await?;
        }
        Ok(())
    }

    /// Marks a direct sync queued (it stays in the outbox), for the job the
    /// sweep queues.
    async fn requeue_sync(&self, pending: &PendingSync) -> Result<(), Error> {
        if pending.delivery == Delivery::Direct {
            self.store.queue_sync(pending).await?;
        }
        Ok(())
    }

    /// Drops a sync past its deadline, so the conversation's outbox moves
    /// on; the table keeps the change, which a later change of the same
    /// room or member brings to Matrix.
    async fn drop_sync(&self, pending: &PendingSync) -> Result<(), Error> {
        tracing::warn!(
            conversation = %pending.conversation_id,
            subject = ?pending.subject,
            "a room or member change not delivered within {} hours; dropped",
            self.settings.max_age.whole_hours()
        );
        self.store.settle_sync(pending).await?;
        self.metrics.count(Counter::MessagesFailed);
        Ok(())
    }

    /// Fails an operation past its deadline, with the reason.
    async fn fail(&self, message: &Message) -> Result<(), Error> {
        let hours = self.settings.max_age.whole_hours();
        let reason = format!("not delivered within {hours} hours; the homeserver was unavailable");
        if message.pending_change.is_some() {
            settle_change(
                &self.store,
                message,
                Some(format!("the change was not delivered: {reason}")),
            )
            .await?;
        } else {
            self.store.mark_failed(message, &reason).await?;
        }
        self.metrics.count(Counter::MessagesFailed);
        Ok(())
    }
}
