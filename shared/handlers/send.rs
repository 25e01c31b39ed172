//! The `send` function: a message from the application into its room.
//!
//! The message is stored (`pending`) before Matrix is called, in one
//! conditional transaction that also checks the sender's membership, the
//! conversation's state and the `Idempotency-Key`. Then it is sent as the
//! sender's puppet with a transaction id derived from the message id, and
//! marked `sent`. If the homeserver cannot take it, the message joins the
//! conversation's outbox and a retry job is queued: the caller gets `202`.
//! While the outbox is not empty, later messages queue behind it, so they
//! cannot overtake it.

use lambda_http::{Body, Response};
use ruma::{EventId, OwnedRoomId};
use serde::Deserialize;
use time::OffsetDateTime;

use super::access::ensure_active;
use super::attachments::{self, AttachmentRef};
use super::cache::Settled;
use super::changes::{deliver_direct, queue_change};
use super::mentions::{self, Mentioner, MentionsInput};
use super::outbound::{
    event_content, join_room, reconcile, related, related_messages, send_as_sender, stored_content,
};
use super::text;
use crate::api::caller::Caller;
use crate::api::views::MessageView;
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::error::Error;
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::Matrix;
use crate::metrics::{Counter, Metrics};
use crate::model::{
    Delivery, Format, IdempotencyRecord, Message, MessageId, MessageStatus, MsgType, Origin,
    Sender as MessageSender,
};
use crate::ports::{InitError, Ports};
use crate::queue::{RetryJob, RetryQueue};
use crate::store::{SendContext, Store, StoreError};

pub const NAME: &str = "send";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(SendService::new(
        ports.store().await?,
        ports.matrix().await?,
        ports.queue().await?,
        ports.namer()?,
        ports.metrics(NAME),
    ))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    /// With an attachment, its caption (which may be empty).
    #[serde(default)]
    body: String,
    #[serde(default)]
    format: Format,
    reply_to: Option<MessageId>,
    /// The root of the thread to send it in.
    thread_id: Option<MessageId>,
    #[serde(default)]
    attachments: Vec<AttachmentRef>,
    as_user: Option<AppUserId>,
    #[serde(default)]
    msgtype: SendType,
    /// Whom it mentions.
    mentions: Option<MentionsInput>,
}

/// What a send asks for: a text from a member, or a notice from the
/// bridge's bot (a service token's system message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SendType {
    #[default]
    Text,
    Notice,
}

/// Who a send acts as: the user whose puppet sends it (the caller, or a
/// service token's `as_user`), or for a notice the service caller itself,
/// the bot sending it. `403` for a notice from a user, or a service token
/// acting `as_user`.
fn acting_user(caller: &Caller, input: &SendMessage) -> Result<AppUserId, ApiError> {
    match input.msgtype {
        SendType::Text => caller.acting_user(input.as_user.clone()),
        SendType::Notice if !caller.admin => Err(ApiError::Forbidden(
            "only a service token may send notices".into(),
        )),
        SendType::Notice if input.as_user.is_some() => Err(ApiError::Forbidden(
            "a notice comes from the bridge's bot, not a user: leave out 'as_user'".into(),
        )),
        SendType::Notice if !input.attachments.is_empty() => Err(ApiError::InvalidRequest(
            "a notice carries no attachments".into(),
        )),
        SendType::Notice => Ok(caller.user_id.clone()),
    }
}

/// `400` unless `root` may start a thread: a message that is not itself in
/// a thread, and that reached Matrix or is on its way there.
fn check_root(root: &Message) -> Result<(), ApiError> {
    if let Some(thread) = root.thread_id {
        return Err(ApiError::InvalidRequest(format!(
            "thread_id: message '{}' is itself in the thread of '{thread}'; use that root",
            root.id
        )));
    }
    if root.status == MessageStatus::Failed {
        return Err(ApiError::InvalidRequest(format!(
            "thread_id: message '{}' never reached Matrix",
            root.id
        )));
    }
    Ok(())
}

/// The send function's state, built once per container.
pub struct SendService<S, M, Q> {
    store: S,
    matrix: M,
    queue: Q,
    namer: PuppetNamer,
    metrics: Metrics,
    /// Conversation -> room: the hot path need not read the conversation.
    rooms: Settled<ConversationId, OwnedRoomId>,
}

impl<S, M, Q> HttpFunction for SendService<S, M, Q>
where
    S: Store + 'static,
    M: Matrix + 'static,
    Q: RetryQueue + 'static,
{
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

/// Why the fast insert was refused, and what to do about it.
enum Refusal {
    Replay(IdempotencyRecord),
    JoinFirst,
    QueueBehind,
    /// Nothing explains it any more (the state changed in between).
    TryAgain,
}

impl<S: Store, M: Matrix, Q: RetryQueue> SendService<S, M, Q> {
    pub fn new(store: S, matrix: M, queue: Q, namer: PuppetNamer, metrics: Metrics) -> Self {
        Self {
            store,
            matrix,
            queue,
            namer,
            metrics,
            rooms: Settled::default(),
        }
    }

    pub fn matrix(&self) -> &M {
        &self.matrix
    }

    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.metrics, request, |request| async move {
            match request.route {
                Route::SendMessage => self.send(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    async fn send(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let conversation_id = request.conversation_id()?;
        let input: SendMessage = request.json()?;
        let user = acting_user(&request.caller, &input)?;
        let notice = input.msgtype == SendType::Notice;
        let idempotency_key = request.idempotency_key()?;
        let body_hash = request.body_hash();
        let html = text::checked(&input.body, input.format, !input.attachments.is_empty())?;

        let room_id = self.room_of(&conversation_id).await?;
        let sender_id = if notice {
            self.matrix.bot().to_owned()
        } else {
            self.namer.user_id(&user)
        };
        let mentioner = Mentioner {
            conversation: &conversation_id,
            caller: &request.caller,
            user: &user,
            sender: &sender_id,
            notice,
        };
        let mentions = mentions::resolve(
            &self.store,
            &self.namer,
            &mentioner,
            input.mentions.as_ref(),
        )
        .await?;
        let html = match &mentions {
            Some(resolved) => resolved.with_pills(&input.body, html),
            None => html,
        };
        let (reply_target, root) = related_messages(
            &self.store,
            &conversation_id,
            input.reply_to,
            input.thread_id,
        )
        .await?;
        let missing = match (input.reply_to, &reply_target, input.thread_id, &root) {
            (Some(id), None, _, _) => Some(("reply_to", id)),
            (_, _, Some(id), None) => Some(("thread_id", id)),
            _ => None,
        };
        if let Some((field, id)) = missing {
            // Say "no such message" only to someone who may know (a
            // notice's service token sees every conversation).
            let member = self.store.member(&conversation_id, &sender_id).await?;
            if member.is_none() && !notice {
                return Err(request.caller.not_a_member(&user, &conversation_id));
            }
            return Err(ApiError::InvalidRequest(format!(
                "{field}: no message '{id}' in this conversation"
            )));
        }
        if let Some(root) = &root {
            check_root(root)?;
        }
        let attachments = attachments::resolve(
            &self.store,
            &request,
            &user,
            &sender_id,
            &conversation_id,
            &input.attachments,
        )
        .await?;
        let mut message = Message {
            id: MessageId::new(),
            conversation_id: conversation_id.clone(),
            sender: MessageSender {
                user_id: (!notice).then(|| user.clone()),
                matrix_user_id: sender_id.clone(),
                display_name: None,
            },
            body: input.body,
            format: input.format,
            html,
            reply_to: input.reply_to,
            thread_id: input.thread_id,
            attachments,
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
            msgtype: notice.then_some(MsgType::Notice),
            file: None,
            mentions: mentions.map(|resolved| resolved.mentions),
        };
        // A root still on its way: the message waits behind it in the
        // outbox, and the retry function sends it once the root is in Matrix.
        let content =
            match related(&self.store, &message, reply_target.as_ref(), root.as_ref()).await {
                Ok(related) => Some(event_content(&message, &related)?),
                Err(Error::Waiting(_)) => {
                    message.delivery = Delivery::Queued;
                    None
                }
                Err(err) => return Err(err.into()),
            };
        let idempotency = idempotency_key.map(|key| IdempotencyRecord {
            scope: IdempotencyRecord::scope(&user, &conversation_id, &key),
            body_hash,
            message_id: message.id,
            conversation_id: conversation_id.clone(),
            expires_at: message.created_at + IdempotencyRecord::LIFETIME,
        });

        // The fast path is one write; a refusal is diagnosed with one read
        // and resolved (join, queue behind, or replay) before trying again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .store
                .insert_message(&message, idempotency.as_ref())
                .await
            {
                Ok(()) => break,
                Err(StoreError::Rejected) if attempts < 4 => {}
                Err(StoreError::Rejected) => {
                    return Err(ApiError::unavailable(
                        "the conversation kept changing while sending",
                    ));
                }
                Err(other) => return Err(other.into()),
            }
            let context = self
                .store
                .send_context(
                    &conversation_id,
                    &sender_id,
                    idempotency.as_ref().map(|r| r.scope.as_str()),
                )
                .await?;
            match self.diagnose(&request, &user, &conversation_id, &context, notice)? {
                Refusal::Replay(record) => return self.replay(record, &idempotency).await,
                Refusal::JoinFirst => match join_room(&self.matrix, &room_id, &sender_id).await {
                    Ok(()) => self.store.mark_joined(&conversation_id, &sender_id).await?,
                    // Accept it all the same: the retry function joins and sends.
                    Err(err) if err.is_transient() => message.delivery = Delivery::Queued,
                    Err(err) => return Err(err.into()),
                },
                Refusal::QueueBehind => message.delivery = Delivery::Queued,
                // Refused, yet nothing in the way when read: other sends
                // race for the empty outbox. Once more directly, then
                // through the outbox, which takes every send (never a 503
                // for a conversation that is merely busy).
                Refusal::TryAgain if attempts >= 2 => message.delivery = Delivery::Queued,
                Refusal::TryAgain => {}
            }
        }

        match (message.delivery, content) {
            (Delivery::Direct, Some(content)) => self.deliver(message, &room_id, &content).await,
            _ => self.queued(&message).await,
        }
    }

    /// The room of a conversation, from the cache or the table.
    async fn room_of(&self, id: &ConversationId) -> Result<OwnedRoomId, ApiError> {
        if let Some(room_id) = self.rooms.get(id) {
            return Ok(room_id);
        }
        let room_id = self
            .store
            .conversation(id)
            .await?
            .and_then(|conversation| conversation.room_id)
            .ok_or_else(|| ApiError::NotFound(format!("conversation '{id}' not found")))?;
        self.rooms.put(id, &room_id);
        Ok(room_id)
    }

    fn diagnose(
        &self,
        request: &ApiRequest,
        user: &AppUserId,
        id: &ConversationId,
        context: &SendContext,
        notice: bool,
    ) -> Result<Refusal, ApiError> {
        if let Some(record) = &context.idempotency {
            return Ok(Refusal::Replay(record.clone()));
        }
        let conversation = context
            .conversation
            .as_ref()
            .ok_or_else(|| ApiError::NotFound(format!("conversation '{id}' not found")))?;
        // The bot created the room and is in it: a notice needs no member.
        if notice {
            ensure_active(conversation)?;
            return Ok(if conversation.outbox > 0 {
                Refusal::QueueBehind
            } else {
                Refusal::TryAgain
            });
        }
        let Some(member) = &context.member else {
            return Err(request.caller.not_a_member(user, id));
        };
        // A Matrix moderator's kick or ban stands: the bridge does not put
        // the puppet back.
        if let Some(removal) = &member.removed {
            return Err(ApiError::Forbidden(format!("'{user}' was {removal}")));
        }
        ensure_active(conversation)?;
        Ok(if !member.joined {
            Refusal::JoinFirst
        } else if conversation.outbox > 0 {
            Refusal::QueueBehind
        } else {
            Refusal::TryAgain
        })
    }

    /// Sends a stored direct message and records the outcome.
    async fn deliver(
        &self,
        mut message: Message,
        room_id: &OwnedRoomId,
        content: &serde_json::Value,
    ) -> Result<Response<Body>, ApiError> {
        match send_as_sender(&self.store, &self.matrix, room_id, &message, content).await {
            Ok(event_id) => {
                let marked = self.store.mark_sent(&message, &event_id).await;
                if let Ok(false) = marked {
                    // Edited or deleted on its way: that change follows.
                    self.follow_up(&message, Some(&event_id), "", room_id)
                        .await?;
                }
                if let Err(err) = marked {
                    // Delivered all the same. A retry job records it later: its
                    // send repeats this transaction id, which the homeserver
                    // answers with the same event.
                    tracing::error!(error = %err, message_id = %message.id, "delivered but not marked sent");
                    let job = RetryJob::send(message.conversation_id.clone(), message.id);
                    if let Err(err) = self.queue.enqueue(&job).await {
                        tracing::error!(error = %err, message_id = %message.id, "could not queue the bookkeeping either");
                    }
                }
                self.metrics.count(Counter::MessagesSent);
                message.status = MessageStatus::Sent;
                message.event_id = Some(event_id);
                api::json(201, &MessageView::from(&message))
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, message_id = %message.id, "homeserver unavailable; queueing for retry");
                message.in_doubt = err.may_have_landed();
                match self.store.mark_queued(&message).await {
                    Ok(()) => {}
                    // Deleted on its way: the retry function settles the
                    // cancel (redacting the send if it landed after all).
                    Err(StoreError::Rejected) => self.hand_over_cancel(&message).await?,
                    Err(err) => return Err(err.into()),
                }
                message.delivery = Delivery::Queued;
                self.queued(&message).await
            }
            // Kicked or banned on the Matrix side before the webhook told us:
            // the message fails, and the caller learns why.
            Err(err @ Error::Removed(_)) => {
                self.store.mark_failed(&message, &err.reason()).await?;
                self.metrics.count(Counter::MessagesFailed);
                Err(err.into())
            }
            Err(err) => {
                let reason = err.reason();
                tracing::warn!(error = %err, message_id = %message.id, "homeserver refused the message");
                if !self.store.mark_failed(&message, &reason).await? {
                    self.follow_up(&message, None, &reason, room_id).await?;
                }
                self.metrics.count(Counter::MessagesFailed);
                message.status = MessageStatus::Failed;
                message.failure = Some(reason);
                api::json(201, &MessageView::from(&message))
            }
        }
    }

    /// Settles a direct send whose message was edited or deleted while it
    /// was on its way, and delivers the change that follows from it.
    async fn follow_up(
        &self,
        sent: &Message,
        landed: Option<&EventId>,
        failure: &str,
        room_id: &OwnedRoomId,
    ) -> Result<(), ApiError> {
        let change = reconcile(&self.store, sent, landed, failure, Delivery::Direct).await?;
        if let Some(change) = change {
            deliver_direct((&self.store, &self.matrix, &self.queue), room_id, change).await?;
        }
        Ok(())
    }

    /// Hands the cancel of a direct send that could not be delivered to
    /// the retry function, which settles it.
    async fn hand_over_cancel(&self, sent: &Message) -> Result<(), ApiError> {
        let current = self.store.message(&sent.conversation_id, sent.id).await?;
        if let Some(current) = current
            && current.status == MessageStatus::Deleted
            && current
                .pending_change
                .as_ref()
                .is_some_and(|change| change.delivery == Delivery::Direct)
        {
            // The cancel itself was not attempted (whether the send
            // landed is the send's doubt, its delivery still direct).
            queue_change(&self.store, &self.queue, &current, false).await?;
        }
        Ok(())
    }

    /// Queues delivery of a message in the outbox, and answers `202`.
    async fn queued(&self, message: &Message) -> Result<Response<Body>, ApiError> {
        self.queue
            .enqueue(&RetryJob::send(message.conversation_id.clone(), message.id))
            .await?;
        self.metrics.count(Counter::MessagesQueued);
        api::json(202, &MessageView::from(message))
    }

    /// Answers a repeated request with the first one's message.
    async fn replay(
        &self,
        record: IdempotencyRecord,
        attempted: &Option<IdempotencyRecord>,
    ) -> Result<Response<Body>, ApiError> {
        if attempted.as_ref().map(|a| &a.body_hash) != Some(&record.body_hash) {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was used before with a different request body".into(),
            ));
        }
        self.metrics.count(Counter::IdempotentReplays);
        let message = self
            .store
            .message(&record.conversation_id, record.message_id)
            .await?
            .ok_or_else(|| {
                ApiError::unavailable("an idempotency record names a missing message")
            })?;
        match (message.status, message.delivery) {
            // The first request stopped between storing and sending: finish
            // its work. The same transaction id makes a repeat harmless.
            (MessageStatus::Pending, Delivery::Direct) => {
                let room_id = self.room_of(&message.conversation_id).await?;
                let content = stored_content(&self.store, &message).await?;
                self.deliver(message, &room_id, &content).await
            }
            (MessageStatus::Pending, Delivery::Queued) => self.queued(&message).await,
            _ => api::json(201, &MessageView::from(&message)),
        }
    }
}
