//! The `retry` function: delivers the operations accepted while the
//! homeserver could not take them (sends, edits and deletes of messages,
//! changes of rooms and members), from the FIFO retry queue.
//!
//! Jobs of one conversation arrive in order (`MessageGroupId`). When a job
//! cannot be delivered yet, it and every later job of its conversation in
//! the batch are reported as failures (a partial batch response), so SQS
//! hands them back later, in the same order. Until then they are hidden for
//! a back-off (`ChangeMessageVisibility`): exponential in the job's
//! receives, with jitter, never shorter than the homeserver's `Retry-After`
//! ([`RetryBackoff`]); only its first step when the connection was refused
//! (nothing listens: trying again costs the homeserver nothing, and the
//! backlog starts draining soon after it is back).
//!
//! Before its own operation, a job delivers what waits ahead of it in its
//! conversation's outbox without a job of its own (lost or dead-lettered),
//! and waits for an operation still in its request.
//! A refusal that retrying cannot fix, or an operation still undelivered
//! past its deadline (`BRIDGE_MAX_PENDING_AGE_SECONDS`, a day), marks
//! the message `failed` with the reason (a room or member change is
//! dropped, and logged), and the conversation moves on.
//!
//! Before sending again an operation whose earlier attempt is in doubt
//! (it may have landed with its answer lost, and the homeserver forgets
//! transaction ids when it restarts), it looks for the message (or, for an
//! edit, that edit by its number) among its sender's events in the room
//! since it was accepted (bounded by time, not by a count). Before each of
//! its own attempts it records the doubt, so that dying on the way leaves
//! it; an operation never in doubt is sent without the look. A message edited or
//! deleted while its send was on its way gets that change delivered after
//! it (`outbound::reconcile`).

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use ruma::OwnedRoomId;
use time::OffsetDateTime;

use super::cache::Settled;
use super::changes::{redactor, send_change, settle_change};
use super::outbound::{reconcile, send_as_sender, stored_content};
use super::provision::sync;
use super::react;
use crate::config::RetryBackoff;
use crate::error::Error;
use crate::function::{BoxFuture, Function, Handler, QueueFunction};
use crate::ids::ConversationId;
use crate::matrix::{Matrix, MatrixError, Sent};
use crate::metrics::{Counter, Metrics};
use crate::model::{ChangeKind, Delivery, Message, MessageStatus};
use crate::ports::{InitError, Ports};
use crate::queue::{Operation, RetryJob, RetryQueue};
use crate::store::{Outbox, Store, StoreError};

pub const NAME: &str = "retry";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::queue(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    let max_age = ports.sweep_settings()?.max_age;
    Ok(Handler::Queue(Box::new(RetryService::new(
        (
            ports.store().await?,
            ports.matrix().await?,
            ports.queue().await?,
        ),
        max_age,
        ports.retry_backoff()?,
        ports.metrics(NAME),
    ))))
}

/// What became of a job.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Delivered, failed for good, or nothing left to do: the job is done.
    Done,
    /// Not now: hand the job back for a later attempt, after the wait.
    Later(String, Wait),
}

/// How long a job handed back waits.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    /// The back-off, growing with the job's receives.
    Backoff,
    /// The back-off, and not less than the homeserver's `Retry-After`.
    RetryAfter(Duration),
    /// The request never reached the homeserver (its connection was
    /// refused): nothing listens, so trying again costs it nothing, and the
    /// job waits the first step of the back-off however many times it came
    /// back. Once the homeserver is back, the drain starts within that step.
    Unreached,
}

fn later(reason: impl Into<String>) -> Outcome {
    Outcome::Later(reason.into(), Wait::Backoff)
}

/// The retry function's state, built once per container.
pub struct RetryService<S, M, Q> {
    store: S,
    matrix: M,
    /// Where handed-back jobs are held for their back-off.
    queue: Q,
    /// How long an operation may stay undelivered before it fails: until
    /// then, a homeserver that cannot take it is waited for, however many
    /// attempts that takes (a job that dead-letters meanwhile is swept back).
    max_age: time::Duration,
    backoff: RetryBackoff,
    metrics: Metrics,
    /// Each conversation's room, once read: it never changes.
    rooms: Settled<ConversationId, OwnedRoomId>,
}

impl<S: Store + 'static, M: Matrix + 'static, Q: RetryQueue + 'static> QueueFunction
    for RetryService<S, M, Q>
{
    fn call(&self, event: SqsEvent) -> BoxFuture<'_, SqsBatchResponse> {
        Box::pin(self.handle(event))
    }
}

/// How many operations ahead of a job one look at the outbox takes.
const AHEAD: usize = 25;

/// When SQS took the job: the end of the millisecond of its
/// `SentTimestamp` (Unix milliseconds, truncated).
fn queued_at(record: &SqsMessage) -> Option<OffsetDateTime> {
    let millis: i128 = record.attributes.get("SentTimestamp")?.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos((millis + 1) * 1_000_000).ok()
}

/// A receive count: how many times SQS has handed this job out.
fn receives(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

impl<S: Store, M: Matrix, Q: RetryQueue> RetryService<S, M, Q> {
    pub fn new(
        (store, matrix, queue): (S, M, Q),
        max_age: time::Duration,
        backoff: RetryBackoff,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            matrix,
            queue,
            max_age,
            backoff,
            metrics,
            rooms: Settled::default(),
        }
    }

    /// Whether an operation accepted at `since` is past its deadline.
    fn expired(&self, since: Option<OffsetDateTime>) -> bool {
        since.is_some_and(|since| OffsetDateTime::now_utc() - since > self.max_age)
    }

    /// Processes a batch in order; the response names the jobs to retry,
    /// each hidden for its conversation's back-off meanwhile.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        // Conversation -> the back-off of its first job handed back.
        let mut held_back: HashMap<String, Duration> = HashMap::new();
        let mut failures = Vec::new();
        for record in event.records {
            let group = record
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_default();
            let (reason, delay) = match held_back.get(&group) {
                Some(delay) => (
                    "an earlier job of this conversation is waiting".to_owned(),
                    *delay,
                ),
                None => match self.process(&record).await {
                    Outcome::Done => continue,
                    Outcome::Later(reason, wait) => {
                        // Uniform in [0, 1): a random UUID's low 53 bits.
                        let bits = uuid::Uuid::new_v4().as_u128() as u64 & ((1 << 53) - 1);
                        let jitter = bits as f64 / (1u64 << 53) as f64;
                        let delay = match wait {
                            Wait::Backoff => self.backoff.delay(receives(&record), jitter, None),
                            Wait::RetryAfter(after) => {
                                self.backoff.delay(receives(&record), jitter, Some(after))
                            }
                            Wait::Unreached => self.backoff.delay(1, jitter, None),
                        };
                        (reason, delay)
                    }
                },
            };
            tracing::warn!(sqs_message_id = ?record.message_id, reason, delay_s = delay.as_secs(), "retry job handed back");
            self.metrics.count(Counter::RetriesHandedBack);
            held_back.insert(group, delay);
            if let Some(receipt) = &record.receipt_handle
                && let Err(err) = self.queue.hold(receipt, delay).await
            {
                // It comes back after the queue's visibility timeout instead.
                tracing::warn!(error = %err, "could not hold the job back");
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.unwrap_or_default();
            failures.push(failure);
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
            return later("malformed job");
        };
        let outcome = async {
            if let Some(queued_at) = queued_at(record)
                && let Some(wait) = self.deliver_ahead(&job, queued_at).await?
            {
                return Ok(wait);
            }
            self.run(&job, receives(record)).await
        };
        outcome
            .await
            .unwrap_or_else(|err| later(format!("the table is unavailable: {err}")))
    }

    /// Carries a job's operation out.
    async fn run(&self, job: &RetryJob, attempt: u32) -> Result<Outcome, StoreError> {
        match job.operation {
            Operation::Send => self.try_send(job, attempt).await,
            Operation::Change => self.try_change(job, attempt).await,
            Operation::Sync => self.try_sync(job, attempt).await,
            Operation::React | Operation::Unreact => self.try_reaction(job).await,
        }
    }

    /// Delivers, in order, what waits in the outbox of `job`'s
    /// conversation from before `job` was queued: an operation whose job
    /// was lost (its request died before queueing it, or the queue refused
    /// it) or dead-lettered has no job ahead of this one, and must not be
    /// overtaken. `Some` when `job` must wait: an operation ahead is still
    /// on its way directly (its request delivers or queues it), or cannot
    /// be delivered yet. Reactions are in no outbox.
    async fn deliver_ahead(
        &self,
        job: &RetryJob,
        queued_at: OffsetDateTime,
    ) -> Result<Option<Outcome>, StoreError> {
        if matches!(job.operation, Operation::React | Operation::Unreact) {
            return Ok(None);
        }
        let ahead = self
            .store
            .outbox(&job.conversation_id, queued_at, AHEAD)
            .await?;
        let more = ahead.len() == AHEAD;
        // Up to the job's own operation: what follows it waits behind it.
        for operation in ahead
            .iter()
            .take_while(|operation| !job.delivers(operation))
        {
            if operation.delivery() == Delivery::Direct {
                return Ok(Some(later(
                    "an earlier operation of this conversation is on its way",
                )));
            }
            let earlier = RetryJob::delivering(operation);
            tracing::info!(message_id = %earlier.message_id, operation = ?earlier.operation, "delivering an earlier operation of the outbox first");
            match self.run(&earlier, 1).await? {
                Outcome::Done => {}
                wait => return Ok(Some(wait)),
            }
        }
        // Longer than one look, without reaching the job's own operation:
        // the next receive goes on.
        let own = ahead.iter().any(|operation| job.delivers(operation));
        Ok((more && !own).then(|| later("more of this conversation's outbox waits ahead")))
    }

    /// Looks for `message`'s send (or, with `edit`, its pending edit, by
    /// its number) among its sender's events in the room since it was
    /// accepted: an earlier attempt may have landed.
    async fn landed(
        &self,
        room_id: &ruma::RoomId,
        message: &Message,
        edit: bool,
    ) -> Result<Option<ruma::OwnedEventId>, crate::matrix::MatrixError> {
        let id = message.id.to_string();
        let (sent, since) = if edit {
            let since = message.edited_at.unwrap_or(message.created_at);
            (Sent::Edit(&id, message.changes), since)
        } else {
            (Sent::Message(&id), message.created_at)
        };
        self.matrix
            .find_sent_event(room_id, &message.sender.matrix_user_id, sent, since)
            .await
    }

    /// Delivers `message`'s pending change (an edit or a redaction)
    /// unless an earlier attempt `in_doubt` landed it (its answer lost, and
    /// the homeserver may have forgotten the transaction id since: a
    /// second one would be a second event).
    async fn deliver_change(
        &self,
        room_id: &ruma::RoomId,
        message: &Message,
        in_doubt: bool,
    ) -> Result<(), Error> {
        if in_doubt {
            match self.change_landed(room_id, message).await {
                Ok(true) => return Ok(()),
                Err(err) if err.is_transient() => return Err(err.into()),
                // Not there (or not readable): send it.
                Ok(false) | Err(_) => {}
            }
        }
        send_change(&self.matrix, room_id, message).await
    }

    /// Whether `message`'s pending change is in Matrix already: its edit,
    /// by its number, among its sender's events; its event redacted.
    async fn change_landed(
        &self,
        room_id: &ruma::RoomId,
        message: &Message,
    ) -> Result<bool, MatrixError> {
        match (
            message.pending_change.as_ref().map(|change| &change.kind),
            &message.event_id,
        ) {
            (Some(ChangeKind::Edit), _) => Ok(self.landed(room_id, message, true).await?.is_some()),
            (Some(ChangeKind::Delete { by_bot, .. }), Some(event_id)) => {
                let reader = redactor(&self.matrix, message, *by_bot);
                self.matrix.is_redacted(room_id, reader, event_id).await
            }
            _ => Ok(false),
        }
    }

    /// The message of `job`; `None` (logged) when there is none.
    async fn job_message(&self, job: &RetryJob) -> Result<Option<Message>, StoreError> {
        let message = self
            .store
            .message(&job.conversation_id, job.message_id)
            .await?;
        if message.is_none() {
            tracing::warn!(message_id = %job.message_id, "retry job for a message that does not exist");
        }
        Ok(message)
    }

    /// Delivers a message's queued change (an edit or a delete). A newer
    /// change that replaced it while it was delivered is delivered too.
    async fn try_change(&self, job: &RetryJob, attempt: u32) -> Result<Outcome, StoreError> {
        for _ in 0..3 {
            let Some(message) = self.job_message(job).await? else {
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
            let room_id = self.room_of(job).await?;
            let mut message = message;
            let kind = message.pending_change.as_ref().map(|change| &change.kind);
            let cancel =
                message.event_id.is_none() && matches!(kind, Some(ChangeKind::Delete { .. }));
            // An edit or a redaction is looked for before it is sent
            // again, when an attempt may have landed; else that this one
            // may is recorded.
            let in_doubt = message
                .pending_change
                .as_ref()
                .is_some_and(|change| change.in_doubt);
            if !cancel && !in_doubt {
                match self.attempting(&message).await? {
                    Some(attempting) => message = attempting,
                    None => continue,
                }
            }
            let delivered = match &room_id {
                // A send cancelled while pending: redact it if it landed
                // after all, else there is nothing to do in Matrix.
                Some(room_id) if cancel && message.send_in_doubt() => {
                    match self.landed(room_id, &message, false).await {
                        Ok(Some(event_id)) => {
                            message.event_id = Some(event_id);
                            send_change(&self.matrix, room_id, &message).await
                        }
                        Ok(None) => Ok(()),
                        Err(err) => Err(err.into()),
                    }
                }
                Some(_) if cancel => Ok(()),
                Some(room_id) => self.deliver_change(room_id, &message, in_doubt).await,
                None => Err(Error::Inconsistent("the conversation has no room".into())),
            };
            let settled = match delivered {
                Ok(()) => {
                    self.metrics.count(Counter::ChangesDelivered);
                    settle_change(&self.store, &message, None).await
                }
                Err(err) if err.is_transient() && !self.expired(message.pending_since()) => {
                    return Ok(Outcome::Later(err.to_string(), wait(&err)));
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
        Ok(later("the message kept changing"))
    }

    /// Brings a room or a member in line with the table: the subject's
    /// pending sync if it waits in the outbox (a newer change may have
    /// replaced the one queued, and this job delivers it).
    async fn try_sync(&self, job: &RetryJob, attempt: u32) -> Result<Outcome, StoreError> {
        let Some(subject) = &job.subject else {
            tracing::error!(message_id = %job.message_id, "a sync job without a subject");
            return Ok(Outcome::Done);
        };
        let context = self
            .store
            .sync_context(&job.conversation_id, subject)
            .await?;
        let Some(pending) = context
            .sync
            .clone()
            .filter(|pending| pending.delivery == Delivery::Queued)
        else {
            return Ok(Outcome::Done);
        };
        match sync::run(
            &self.store,
            &self.matrix,
            &self.metrics,
            &pending,
            Some(context),
        )
        .await
        {
            Ok(()) => {
                self.metrics.count(Counter::ChangesDelivered);
                Ok(Outcome::Done)
            }
            // A Matrix moderator removed the member: it stays out (the
            // removal is recorded on it), and the change is done.
            Err(Error::Removed(removal)) => {
                tracing::info!(conversation = %job.conversation_id, by = %removal.by, "a member change left a moderator's removal in place");
                match sync::give_up(&self.store, &pending).await {
                    Err(Error::Store(err)) => Err(err),
                    _ => Ok(Outcome::Done),
                }
            }
            Err(err) if err.is_transient() && !self.expired(Some(pending.since)) => {
                Ok(Outcome::Later(err.to_string(), wait(&err)))
            }
            Err(err) => {
                let reason = final_reason(&err, attempt, self.max_age);
                tracing::warn!(error = %err, conversation = %job.conversation_id, reason, "a room or member change failed for good");
                self.metrics.count(Counter::MessagesFailed);
                match sync::give_up(&self.store, &pending).await {
                    Err(Error::Store(err)) => Err(err),
                    _ => Ok(Outcome::Done),
                }
            }
        }
    }

    async fn try_send(&self, job: &RetryJob, attempt: u32) -> Result<Outcome, StoreError> {
        for _ in 0..3 {
            let Some(message) = self.job_message(job).await? else {
                return Ok(Outcome::Done);
            };
            if message.status != MessageStatus::Pending {
                // Edited or deleted on its way: the change that follows.
                return match &message.pending_change {
                    Some(change) if change.delivery == Delivery::Queued => {
                        self.try_change(job, attempt).await
                    }
                    _ => Ok(Outcome::Done),
                };
            }
            let in_doubt = message.send_in_doubt();
            if in_doubt {
                return self.send_pending(job, attempt, message, true).await;
            }
            if let Some(attempting) = self.attempting(&message).await? {
                return self.send_pending(job, attempt, attempting, false).await;
            }
            // Changed since it was read: read it again.
        }
        Ok(later("the message kept changing"))
    }

    /// Records, before an attempt at what `read` has pending (its change,
    /// else its send), that the attempt may land with its answer lost:
    /// should this function die on its way, the next attempt looks first.
    /// The message as stored then; `None` when it changed since it was read.
    async fn attempting(&self, read: &Message) -> Result<Option<Message>, StoreError> {
        let mut attempting = read.clone();
        match &mut attempting.pending_change {
            Some(change) => change.in_doubt = true,
            None => attempting.in_doubt = true,
        }
        match self
            .store
            .update_message(read, &attempting, Outbox::Keep, None)
            .await
        {
            Ok(()) => {
                attempting.revision = read.revision + 1;
                Ok(Some(attempting))
            }
            Err(StoreError::Rejected) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Sends a pending message, first looking whether an earlier attempt
    /// landed when one is `in_doubt`.
    async fn send_pending(
        &self,
        job: &RetryJob,
        attempt: u32,
        message: Message,
        in_doubt: bool,
    ) -> Result<Outcome, StoreError> {
        let room_id = self.room_of(job).await?;
        let Some(room_id) = room_id else {
            self.settle_failed(&message, "the conversation has no room")
                .await?;
            return Ok(Outcome::Done);
        };
        let content = match stored_content(&self.store, &message).await {
            Ok(content) => content,
            // The table could not be read: not the message's fault.
            Err(err) if err.is_transient() => return Ok(later(err.to_string())),
            Err(err) => {
                tracing::warn!(error = %err, message_id = %message.id, "the message cannot be sent");
                self.settle_failed(&message, &err.reason()).await?;
                return Ok(Outcome::Done);
            }
        };
        // An earlier attempt may have landed with its answer lost, and the
        // homeserver forgets transaction ids when it restarts: look first.
        let found = if in_doubt {
            self.landed(&room_id, &message, false).await
        } else {
            Ok(None)
        };
        let sent = match found {
            // Edited in place since it was accepted: what landed may carry
            // an older text, so the edit follows it.
            Ok(Some(event_id)) if message.edited_at.is_some() => {
                return match reconcile(&self.store, &message, Some(&event_id), "", Delivery::Queued)
                    .await?
                {
                    Some(_) => self.try_change(job, attempt).await,
                    None => Ok(Outcome::Done),
                };
            }
            Ok(Some(event_id)) => Ok(event_id),
            Err(err) if err.is_transient() => Err(err.into()),
            // Not there (or not readable, say a puppet that left): send it.
            Ok(None) | Err(_) => {
                send_as_sender(&self.store, &self.matrix, &room_id, &message, &content).await
            }
        };
        match sent {
            Ok(event_id) => {
                self.metrics.count(Counter::MessagesSent);
                tracing::info!(message_id = %message.id, %event_id, attempt, "delivered on retry");
                if self.store.mark_sent(&message, &event_id).await? {
                    return Ok(Outcome::Done);
                }
                // Edited or deleted on its way: deliver that change now.
                match reconcile(&self.store, &message, Some(&event_id), "", Delivery::Queued)
                    .await?
                {
                    Some(_) => self.try_change(job, attempt).await,
                    None => Ok(Outcome::Done),
                }
            }
            Err(err) if err.is_transient() && !self.expired(message.pending_since()) => {
                Ok(Outcome::Later(err.to_string(), wait(&err)))
            }
            Err(err) => {
                let reason = final_reason(&err, attempt, self.max_age);
                tracing::warn!(error = %err, message_id = %message.id, "delivery failed");
                self.settle_failed(&message, &reason).await?;
                self.metrics.count(Counter::MessagesFailed);
                tracing::warn!(message_id = %message.id, reason, "delivery failed for good");
                Ok(Outcome::Done)
            }
        }
    }
}

impl<S: Store, M: Matrix, Q: RetryQueue> RetryService<S, M, Q> {
    /// The room of a job's conversation, if it has one.
    async fn room_of(&self, job: &RetryJob) -> Result<Option<OwnedRoomId>, StoreError> {
        if let Some(room_id) = self.rooms.get(&job.conversation_id) {
            return Ok(Some(room_id));
        }
        let room_id = self
            .store
            .conversation(&job.conversation_id)
            .await?
            .and_then(|c| c.room_id);
        if let Some(room_id) = &room_id {
            self.rooms.put(&job.conversation_id, room_id);
        }
        Ok(room_id)
    }

    /// Sends a reaction still recorded without its event (`React`), or
    /// takes a removed one out of Matrix (`Unreact`). A reaction refused
    /// for good is dropped (logged): a reaction is no message to fail.
    async fn try_reaction(&self, job: &RetryJob) -> Result<Outcome, StoreError> {
        let Some(reaction) = &job.reaction else {
            tracing::error!(message_id = %job.message_id, "a reaction job without its reaction");
            return Ok(Outcome::Done);
        };
        let room_id = self.room_of(job).await?;
        let message = self
            .store
            .message(&job.conversation_id, job.message_id)
            .await?;
        let (Some(room_id), Some(target)) = (room_id, message.and_then(|m| m.event_id)) else {
            return Ok(Outcome::Done);
        };
        let delivered = match job.operation {
            Operation::Unreact => {
                react::deliver::take_out(&self.matrix, &room_id, Some(&target), reaction).await
            }
            _ => {
                let current = self
                    .store
                    .reaction(
                        &reaction.conversation_id,
                        reaction.message_id,
                        &reaction.sender.matrix_user_id,
                        &reaction.key,
                    )
                    .await?;
                match current {
                    Some(current) if current.id == reaction.id && current.event_id.is_none() => {
                        react::deliver::send(
                            (&self.store, &self.matrix),
                            &room_id,
                            &target,
                            &current,
                        )
                        .await
                    }
                    // Sent already, or removed (its removal takes it out).
                    _ => return Ok(Outcome::Done),
                }
            }
        };
        match delivered {
            Ok(()) => {
                self.metrics.count(Counter::ReactionsSent);
                Ok(Outcome::Done)
            }
            Err(Error::Store(err)) => Err(err),
            Err(err) if err.is_transient() && !self.expired(Some(reaction.created_at)) => {
                Ok(Outcome::Later(err.to_string(), wait(&err)))
            }
            Err(err) => {
                tracing::warn!(error = %err, reaction = %reaction.id, "a reaction was not delivered; dropped");
                if job.operation == Operation::React {
                    match self.store.remove_reaction(reaction).await {
                        Ok(()) | Err(StoreError::Rejected) => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(Outcome::Done)
            }
        }
    }

    /// Fails a pending send for good; a message deleted meanwhile ends its
    /// cancel instead, one edited meanwhile fails as it is now.
    async fn settle_failed(&self, message: &Message, reason: &str) -> Result<(), StoreError> {
        if !self.store.mark_failed(message, reason).await? {
            reconcile(&self.store, message, None, reason, Delivery::Queued).await?;
        }
        Ok(())
    }
}

/// How long a job that failed with `err` waits: the homeserver's
/// `Retry-After` if it rate-limited and said; the first back-off step if
/// the request never reached it; else the back-off.
fn wait(err: &Error) -> Wait {
    match err {
        Error::Matrix(MatrixError::Unreachable {
            maybe_delivered: false,
            ..
        }) => Wait::Unreached,
        Error::Matrix(err) => err
            .rate_limit()
            .flatten()
            .map_or(Wait::Backoff, Wait::RetryAfter),
        _ => Wait::Backoff,
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
