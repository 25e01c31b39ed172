//! The `react` function: `PUT` and `DELETE`
//! `/v1/conversations/{id}/messages/{message_id}/reactions/{key}`.
//!
//! A reaction is an `m.reaction` annotation of the message's event, sent as
//! the caller's puppet, once per user, message and key: it is recorded (and
//! counted) first, in one conditional write, so a repeat is a no-op, then
//! sent. When the homeserver cannot take it, a retry job sends it later
//! with the same transaction id; the caller gets `204` either way. A
//! removal takes the record out and redacts the event, directly or
//! through a retry job (which sends it first, with its own transaction id,
//! if it may have landed unheard), so no accepted reaction is lost or left
//! behind. Reactions relate to an event already in Matrix, so they do not
//! wait in the conversation's outbox: nothing they need can be overtaken.

pub mod deliver;

use lambda_http::{Body, Response};
use time::OffsetDateTime;

use super::changes::Changer;
use super::outbound::join_room;
use super::target::Target;
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::error::Error;
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::matrix::Matrix;
use crate::metrics::Counter;
use crate::model::{MessageId, MessageStatus, Origin, Reaction, Sender};
use crate::ports::{InitError, Ports};
use crate::queue::{Operation, RetryJob, RetryQueue};
use crate::store::{Store, StoreError};

pub const NAME: &str = "react";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(ReactService(
        Changer::build(ports, NAME).await?,
    ))))
}

/// The react function's state, built once per container.
pub struct ReactService<S, M, Q>(Changer<S, M, Q>);

impl<S: Store + 'static, M: Matrix + 'static, Q: RetryQueue + 'static> HttpFunction
    for ReactService<S, M, Q>
{
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

/// The `{key}` of the path (decoded), checked: 1 to [`Reaction::MAX_KEY`]
/// bytes.
fn reaction_key(request: &ApiRequest) -> Result<String, ApiError> {
    let key: String = request.path_param("key")?;
    if key.trim().is_empty() {
        return Err(ApiError::InvalidRequest(
            "path parameter 'key' must not be empty".into(),
        ));
    }
    if key.len() > Reaction::MAX_KEY {
        return Err(ApiError::InvalidRequest(format!(
            "path parameter 'key' is {} bytes; at most {} are accepted",
            key.len(),
            Reaction::MAX_KEY
        )));
    }
    Ok(key)
}

impl<S: Store, M: Matrix, Q: RetryQueue> ReactService<S, M, Q> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.0.metrics, request, |request| async move {
            match request.route {
                Route::PutReaction => self.react(request).await,
                Route::DeleteReaction => self.unreact(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    /// The message reacted to, and the caller's reaction to it with the
    /// key, if any.
    async fn read(
        &self,
        request: &ApiRequest,
        key: &str,
    ) -> Result<(Target, Option<Reaction>), ApiError> {
        let user = request.caller.acting_user(request.query("as_user")?)?;
        let target = Target::read(&self.0.store, &self.0.namer, request, user, "react").await?;
        if let Some(removal) = &target.member.removed {
            return Err(ApiError::Forbidden(format!(
                "'{}' was {removal}",
                target.user
            )));
        }
        let reaction = self
            .0
            .store
            .reaction(
                &target.message.conversation_id,
                target.message.id,
                &target.member.matrix_user_id,
                key,
            )
            .await?;
        Ok((target, reaction))
    }

    async fn react(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let key = reaction_key(&request)?;
        let (target, existing) = self.read(&request, &key).await?;
        let message = &target.message;
        let event = match (message.status, &message.event_id) {
            (MessageStatus::Deleted, _) => {
                return Err(ApiError::Conflict(format!(
                    "message '{}' was deleted",
                    message.id
                )));
            }
            (MessageStatus::Sent, Some(event)) => event.clone(),
            _ => {
                return Err(ApiError::Conflict(format!(
                    "message '{}' is not in Matrix (it is {}); react once it is sent",
                    message.id,
                    message.status.as_str()
                )));
            }
        };
        let reaction = match existing {
            // Once per user and key: a repeat changes nothing.
            Some(existing) if existing.event_id.is_some() => return api::no_content(),
            // Recorded, not in Matrix yet: try again, as the same request.
            Some(existing) => existing,
            None => {
                let reaction = Reaction {
                    id: MessageId::new(),
                    conversation_id: message.conversation_id.clone(),
                    message_id: message.id,
                    key,
                    sender: Sender {
                        user_id: Some(target.user.clone()),
                        matrix_user_id: target.member.matrix_user_id.clone(),
                        display_name: None,
                    },
                    event_id: None,
                    origin: Origin::App,
                    created_at: OffsetDateTime::now_utc(),
                };
                match self.0.store.add_reaction(&reaction).await {
                    Ok(()) => reaction,
                    // A racing request recorded it first: it sends it.
                    Err(StoreError::Rejected) => return api::no_content(),
                    Err(err) => return Err(err.into()),
                }
            }
        };
        let (store, matrix) = (&self.0.store, &self.0.matrix);
        if !target.member.joined {
            join_room(matrix, &target.room_id, &reaction.sender.matrix_user_id).await?;
            store
                .mark_joined(&reaction.conversation_id, &reaction.sender.matrix_user_id)
                .await?;
        }
        match deliver::send((store, matrix), &target.room_id, &event, &reaction).await {
            Ok(()) => {
                self.0.metrics.count(Counter::ReactionsSent);
                api::no_content()
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, reaction = %reaction.id, "homeserver unavailable; queueing the reaction");
                self.queue(Operation::React, &reaction).await
            }
            Err(err) => {
                // Refused for good: it is not kept, so it is not shown.
                tracing::warn!(error = %err, reaction = %reaction.id, "homeserver refused the reaction");
                match store.remove_reaction(&reaction).await {
                    Ok(()) | Err(StoreError::Rejected) => {}
                    Err(store_err) => return Err(store_err.into()),
                }
                Err(err.into())
            }
        }
    }

    async fn unreact(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let key = reaction_key(&request)?;
        let (target, existing) = self.read(&request, &key).await?;
        // Removing what is not there is done already.
        let Some(reaction) = existing else {
            return api::no_content();
        };
        let (store, matrix) = (&self.0.store, &self.0.matrix);
        let outcome = match &reaction.event_id {
            Some(_) => {
                deliver::take_out(
                    matrix,
                    &target.room_id,
                    target.message.event_id.as_deref(),
                    &reaction,
                )
                .await
            }
            // Its send may be on its way: its own job takes it out after.
            None => Err(Error::Waiting("the reaction's send".into())),
        };
        match outcome {
            Ok(()) => {}
            Err(err) if err.is_transient() => {
                self.queue(Operation::Unreact, &reaction).await?;
            }
            Err(err) => {
                tracing::warn!(error = %err, reaction = %reaction.id, "homeserver refused the redaction");
                return Err(err.into());
            }
        }
        match store.remove_reaction(&reaction).await {
            // Removed by a racing request: the same outcome.
            Ok(()) | Err(StoreError::Rejected) => api::no_content(),
            Err(err) => Err(err.into()),
        }
    }

    /// Hands a reaction to the retry function; `204`, as it is accepted.
    async fn queue(
        &self,
        operation: Operation,
        reaction: &Reaction,
    ) -> Result<Response<Body>, ApiError> {
        self.0
            .queue
            .enqueue(&RetryJob::reaction(operation, reaction))
            .await?;
        self.0.metrics.count(Counter::MessagesQueued);
        api::no_content()
    }
}
