//! The retry queue port and its SQS FIFO adapter.
//!
//! A job names an operation on a message; the retry function re-reads the
//! message and carries the operation out. `MessageGroupId` is the
//! conversation, so jobs of one conversation are delivered in order and one
//! conversation's backlog does not hold up another's; the deduplication id is
//! the operation, so enqueueing the same job twice within SQS's five-minute
//! window is harmless.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fifo::{FifoMessage, send_batch};
use crate::ids::ConversationId;
use crate::model::{MessageId, PendingOperation, PendingSync, Reaction, SyncSubject};

/// What to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Send the message.
    Send,
    /// Deliver the message's pending change (an edit or a delete).
    Change,
    /// Bring the room or a member in Matrix in line with the table (a
    /// [`PendingSync`]); `message_id` is the sync's id.
    Sync,
    /// Send a reaction that is recorded and not in Matrix yet.
    React,
    /// Take a removed reaction out of Matrix: redact its event (sending it
    /// first, with its own transaction id, if it may not have landed).
    Unreact,
}

/// One delivery job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryJob {
    pub operation: Operation,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    /// For a change: the message's change count when it was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<u32>,
    /// For a sync: what it brings in line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SyncSubject>,
    /// For a reaction: which (for `unreact`, as it was when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<Reaction>,
}

impl RetryJob {
    pub fn send(conversation_id: ConversationId, message_id: MessageId) -> Self {
        Self {
            operation: Operation::Send,
            conversation_id,
            message_id,
            change: None,
            subject: None,
            reaction: None,
        }
    }

    /// Sending (`React`) or taking out (`Unreact`) a reaction.
    pub fn reaction(operation: Operation, reaction: &Reaction) -> Self {
        Self {
            operation,
            conversation_id: reaction.conversation_id.clone(),
            message_id: reaction.message_id,
            change: None,
            subject: None,
            reaction: Some(reaction.clone()),
        }
    }

    /// Delivering a pending sync.
    pub fn sync(sync: &PendingSync) -> Self {
        Self {
            operation: Operation::Sync,
            conversation_id: sync.conversation_id.clone(),
            message_id: sync.id,
            change: None,
            subject: Some(sync.subject.clone()),
            reaction: None,
        }
    }

    /// Delivering change number `change` of a message.
    pub fn change(conversation_id: ConversationId, message_id: MessageId, change: u32) -> Self {
        Self {
            operation: Operation::Change,
            conversation_id,
            message_id,
            change: Some(change),
            subject: None,
            reaction: None,
        }
    }

    /// Delivering an operation of the outbox: a message's send, or its
    /// pending change, or a sync.
    pub fn delivering(operation: &PendingOperation) -> Self {
        match operation {
            PendingOperation::Message(message) if message.pending_change.is_some() => {
                Self::change(message.conversation_id.clone(), message.id, message.changes)
            }
            PendingOperation::Message(message) => {
                Self::send(message.conversation_id.clone(), message.id)
            }
            PendingOperation::Sync(sync) => Self::sync(sync),
        }
    }

    /// Whether this job delivers `operation` (a sync job, whichever change
    /// of its subject is pending now).
    pub fn delivers(&self, operation: &PendingOperation) -> bool {
        match operation {
            PendingOperation::Message(message) => {
                matches!(self.operation, Operation::Send | Operation::Change)
                    && self.message_id == message.id
            }
            PendingOperation::Sync(sync) => {
                self.operation == Operation::Sync && self.subject.as_ref() == Some(&sync.subject)
            }
        }
    }

    fn deduplication_id(&self) -> String {
        match self.operation {
            Operation::Send => self.message_id.txn_id("send"),
            Operation::Change => self
                .message_id
                .txn_id(&format!("change{}", self.change.unwrap_or_default())),
            Operation::Sync => self.message_id.txn_id("sync"),
            Operation::React | Operation::Unreact => match &self.reaction {
                Some(reaction) if self.operation == Operation::React => reaction.send_txn_id(),
                Some(reaction) => reaction.redact_txn_id(),
                None => self.message_id.txn_id("reaction"),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the retry queue is unavailable")]
pub struct QueueError(#[source] Box<dyn std::error::Error + Send + Sync>);

pub trait RetryQueue: Send + Sync {
    fn enqueue(&self, job: &RetryJob) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Enqueues `jobs`, in order, as few requests as the queue allows. An
    /// error when any was not taken (those taken stay: a job delivers its
    /// operation once however often it is queued).
    fn enqueue_all(
        &self,
        jobs: &[RetryJob],
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        async move {
            for job in jobs {
                self.enqueue(job).await?;
            }
            Ok(())
        }
    }

    /// Hides a received job (by its receipt handle) for `delay` from now:
    /// the back-off of a job handed back (`ChangeMessageVisibility`).
    fn hold(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// [`RetryQueue`] on an SQS FIFO queue.
#[derive(Clone, Debug)]
pub struct SqsRetryQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRetryQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

impl RetryQueue for SqsRetryQueue {
    async fn enqueue(&self, job: &RetryJob) -> Result<(), QueueError> {
        let body = serde_json::to_string(job).map_err(|err| QueueError(err.into()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(job.conversation_id.as_str())
            .message_deduplication_id(job.deduplication_id())
            .send()
            .await
            .map_err(|err| QueueError(err.into()))?;
        Ok(())
    }

    /// Ten jobs a `SendMessageBatch`, in order.
    async fn enqueue_all(&self, jobs: &[RetryJob]) -> Result<(), QueueError> {
        for chunk in jobs.chunks(crate::fifo::BATCH) {
            let messages = chunk
                .iter()
                .map(|job| {
                    Ok(FifoMessage {
                        group: job.conversation_id.as_str().to_owned(),
                        deduplication_id: job.deduplication_id(),
                        body: serde_json::to_string(job).map_err(|err| QueueError(err.into()))?,
                    })
                })
                .collect::<Result<Vec<_>, QueueError>>()?;
            send_batch(&self.client, &self.queue_url, messages)
                .await
                .map_err(QueueError)?;
        }
        Ok(())
    }

    async fn hold(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        // SQS takes 0 to 43200 seconds.
        let seconds = delay.as_secs_f64().ceil().min(43_200.0) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|err| QueueError(err.into()))?;
        Ok(())
    }
}

/// An in-memory [`RetryQueue`] for unit tests; clones share their jobs.
#[derive(Clone, Debug, Default)]
pub struct MemoryQueue {
    /// Each job, with when it was enqueued.
    jobs: Arc<Mutex<Vec<(RetryJob, time::OffsetDateTime)>>>,
    holds: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl MemoryQueue {
    pub fn jobs(&self) -> Vec<RetryJob> {
        self.jobs
            .lock()
            .map(|jobs| jobs.iter().map(|(job, _)| job.clone()).collect())
            .unwrap_or_default()
    }

    /// When `job` was first enqueued (what SQS says as `SentTimestamp`).
    pub fn queued_at(&self, job: &RetryJob) -> Option<time::OffsetDateTime> {
        let jobs = self.jobs.lock().ok()?;
        jobs.iter()
            .find(|(queued, _)| queued == job)
            .map(|(_, at)| *at)
    }

    /// The jobs held back, by receipt handle, and for how long, in order.
    pub fn holds(&self) -> Vec<(String, Duration)> {
        self.holds
            .lock()
            .map(|holds| holds.clone())
            .unwrap_or_default()
    }
}

impl RetryQueue for MemoryQueue {
    async fn enqueue(&self, job: &RetryJob) -> Result<(), QueueError> {
        self.jobs
            .lock()
            .map_err(|_| QueueError("the queue lock is poisoned".into()))?
            .push((job.clone(), time::OffsetDateTime::now_utc()));
        Ok(())
    }

    async fn hold(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        self.holds
            .lock()
            .map_err(|_| QueueError("the queue lock is poisoned".into()))?
            .push((receipt_handle.to_owned(), delay));
        Ok(())
    }
}
