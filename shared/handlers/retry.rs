//! The `retry` function: delivers the messages the send function accepted
//! while the homeserver could not take them, from the FIFO retry queue.
//!
//! Jobs of one conversation arrive in order (`MessageGroupId`). When a job
//! cannot be delivered yet, it and every later job of its conversation in
//! the batch are reported as failures (a partial batch response), so SQS
//! hands them back later, in the same order, after the visibility timeout.
//! A refusal that retrying cannot fix, or an operation still undelivered
//! past its deadline (`BRIDGE_MAX_PENDING_AGE_SECONDS`, a day), marks
//! the message `failed` with the reason, and the conversation moves on.
//!
//! Before sending again, it looks for the message in the room's latest
//! events: an earlier attempt may have landed with its answer lost, and the
//! homeserver only remembers transaction ids for a while.

use std::collections::HashSet;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use time::OffsetDateTime;

use super::changes::{send_change, settle_change};
use super::outbound::{send_as_sender, stored_content};
use crate::error::Error;
use crate::function::{BoxFuture, Function, Handler, QueueFunction};
use crate::matrix::Matrix;
use crate::metrics::{Counter, Metrics};
use crate::model::{Delivery, MessageStatus};
use crate::ports::{InitError, Ports};
use crate::queue::{Operation, RetryJob};
use crate::store::{Store, StoreError};

pub const NAME: &str = "retry";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::queue(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    let max_age = ports.sweep_settings()?.max_age;
    Ok(Handler::Queue(Box::new(RetryService::new(
        ports.store().await?,
        ports.matrix().await?,
        max_age,
        ports.metrics(NAME),
    ))))
}

/// What became of a job.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Delivered, failed for good, or nothing left to do: the job is done.
    Done,
    /// Not now: hand the job back for a later attempt.
    Later(String),
}

/// The retry function's state, built once per container.
pub struct RetryService<S, M> {
    store: S,
    matrix: M,
    /// How long an operation may stay undelivered before it fails: until
    /// then, a homeserver that cannot take it is waited for, however many
    /// attempts that takes (a job that dead-letters meanwhile is swept back).
    max_age: time::Duration,
    metrics: Metrics,
}

impl<S: Store + 'static, M: Matrix + 'static> QueueFunction for RetryService<S, M> {
    fn call(&self, event: SqsEvent) -> BoxFuture<'_, SqsBatchResponse> {
        Box::pin(self.handle(event))
    }
}

impl<S: Store, M: Matrix> RetryService<S, M> {
    pub fn new(store: S, matrix: M, max_age: time::Duration, metrics: Metrics) -> Self {
        Self {
            store,
            matrix,
            max_age,
            metrics,
        }
    }

    /// Whether an operation accepted at `since` is past its deadline.
    fn expired(&self, since: Option<OffsetDateTime>) -> bool {
        since.is_some_and(|since| OffsetDateTime::now_utc() - since > self.max_age)
    }

    /// Processes a batch in order; the response names the jobs to retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut held_back: HashSet<String> = HashSet::new();
        let mut failures = Vec::new();
        for record in event.records {
            let group = record
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_default();
            let outcome = if held_back.contains(&group) {
                Outcome::Later("an earlier job of this conversation is waiting".into())
            } else {
                self.process(&record).await
            };
            if let Outcome::Later(reason) = outcome {
                tracing::warn!(sqs_message_id = ?record.message_id, reason, "retry job handed back");
                self.metrics.count(Counter::RetriesHandedBack);
                held_back.insert(group);
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.unwrap_or_default();
                failures.push(failure);
            }
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        response
    }

    async fn process(&self, record: &SqsMessage) -> Outcome {
        let Some(job) = record
            .body
            .as_deref()
            .and_then(|body| serde_json::from_str::<RetryJob>(body).ok())
        else {
            // Never deliverable: after the last receive SQS moves it to the
            // dead-letter queue, whose alarm tells a person.
            tracing::error!(sqs_message_id = ?record.message_id, "malformed retry job");
            return Outcome::Later("malformed job".into());
        };
        let attempt = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse().ok())
            .unwrap_or(1);
        let outcome = match job.operation {
            Operation::Send => self.try_send(&job, attempt).await,
            Operation::Change => self.try_change(&job, attempt).await,
        };
        outcome.unwrap_or_else(|err| Outcome::Later(format!("the table is unavailable: {err}")))
    }

    /// Delivers a message's queued change (an edit or a delete). A newer
    /// change that replaced it while it was delivered is delivered too.
    async fn try_change(&self, job: &RetryJob, attempt: u32) -> Result<Outcome, StoreError> {
        for _ in 0..3 {
            let Some(message) = self
                .store
                .message(&job.conversation_id, job.message_id)
                .await?
            else {
                tracing::warn!(message_id = %job.message_id, "retry job for a message that does not exist");
                return Ok(Outcome::Done);
            };
            // Delivered already, or a direct change its own request delivers.
            if message
                .pending_change
                .as_ref()
                .is_none_or(|change| change.delivery != Delivery::Queued)
            {
                return Ok(Outcome::Done);
            }
            let room_id = self
                .store
                .conversation(&job.conversation_id)
                .await?
                .and_then(|c| c.room_id);
            let delivered = match room_id {
                Some(room_id) => send_change(&self.matrix, &room_id, &message).await,
                None => Err(Error::Inconsistent("the conversation has no room".into())),
            };
            let settled = match delivered {
                Ok(()) => {
                    self.metrics.count(Counter::ChangesDelivered);
                    settle_change(&self.store, &message, None).await
                }
                Err(err) if err.is_transient() && !self.expired(message.pending_since()) => {
                    return Ok(Outcome::Later(err.to_string()));
                }
                Err(err) => {
                    let reason = final_reason(&err, attempt, self.max_age);
                    tracing::warn!(error = %err, message_id = %message.id, "change failed for good");
                    self.metrics.count(Counter::MessagesFailed);
                    let failure = format!("the change was not delivered: {reason}");
                    settle_change(&self.store, &message, Some(failure)).await
                }
            };
            match settled {
                Ok(_) => return Ok(Outcome::Done),
                // Changed again meanwhile: deliver the newer change.
                Err(StoreError::Rejected) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(Outcome::Later("the message kept changing".into()))
    }

    async fn try_send(&self, job: &RetryJob, attempt: u32) -> Result<Outcome, StoreError> {
        let Some(message) = self
            .store
            .message(&job.conversation_id, job.message_id)
            .await?
        else {
            tracing::warn!(message_id = %job.message_id, "retry job for a message that does not exist");
            return Ok(Outcome::Done);
        };
        if message.status != MessageStatus::Pending {
            return Ok(Outcome::Done);
        }
        let room_id = self
            .store
            .conversation(&job.conversation_id)
            .await?
            .and_then(|c| c.room_id);
        let Some(room_id) = room_id else {
            self.store
                .mark_failed(&message, "the conversation has no room")
                .await?;
            return Ok(Outcome::Done);
        };
        let content = match stored_content(&self.store, &message).await {
            Ok(content) => content,
            // The table could not be read: not the message's fault.
            Err(err) if err.is_transient() => return Ok(Outcome::Later(err.to_string())),
            Err(err) => {
                tracing::warn!(error = %err, message_id = %message.id, "the message cannot be sent");
                self.store.mark_failed(&message, &err.reason()).await?;
                return Ok(Outcome::Done);
            }
        };
        // An earlier attempt may have landed with its answer lost, and the
        // homeserver forgets transaction ids after a while: look first.
        let found = self
            .matrix
            .find_sent_event(
                &room_id,
                &message.sender.matrix_user_id,
                &message.id.to_string(),
            )
            .await;
        let sent = match found {
            Ok(Some(event_id)) => Ok(event_id),
            Err(err) if err.is_transient() => Err(err.into()),
            // Not there (or not readable, say a puppet that left): send it.
            Ok(None) | Err(_) => {
                send_as_sender(&self.store, &self.matrix, &room_id, &message, &content).await
            }
        };
        match sent {
            Ok(event_id) => {
                self.store.mark_sent(&message, &event_id).await?;
                self.metrics.count(Counter::MessagesSent);
                tracing::info!(message_id = %message.id, %event_id, attempt, "delivered on retry");
                Ok(Outcome::Done)
            }
            Err(err) if err.is_transient() && !self.expired(message.pending_since()) => {
                Ok(Outcome::Later(err.to_string()))
            }
            Err(err) => {
                let reason = final_reason(&err, attempt, self.max_age);
                tracing::warn!(error = %err, message_id = %message.id, "delivery failed");
                self.store.mark_failed(&message, &reason).await?;
                self.metrics.count(Counter::MessagesFailed);
                tracing::warn!(message_id = %message.id, reason, "delivery failed for good");
                Ok(Outcome::Done)
            }
        }
    }
}

/// Why a delivery failed for good: the refusal, or transient failures for
/// longer than `max_age` (`attempt` attempts).
fn final_reason(err: &Error, attempt: u32, max_age: time::Duration) -> String {
    if err.is_transient() {
        format!(
            "not delivered within {} hours ({attempt} attempts): {}",
            max_age.whole_hours(),
            err.reason()
        )
    } else {
        err.reason()
    }
}
