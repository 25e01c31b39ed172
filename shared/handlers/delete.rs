//! The `delete` function: `DELETE /v1/conversations/{id}/messages/{message_id}`
//! with an optional `{"reason"}`.
//!
//! A delete is a Matrix redaction: by the sender's puppet for one's own
//! message, or by the bridge's bot when a moderator or owner (or a service
//! token) removes someone else's. It is stored first (the message turns
//! `deleted` and loses its text), then delivered like an edit: directly, or
//! through the outbox. A message still pending is cancelled, so it is never
//! sent; a repeat is `204` again without a second redaction.

use lambda_http::{Body, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::changes::{Accepted, Changer, apply_change};
use super::target::Target;
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::error::Error;
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::AppUserId;
use crate::matrix::Matrix;
use crate::metrics::Counter;
use crate::model::{ChangeKind, MessageStatus, PendingChange, Role};
use crate::ports::{InitError, Ports};
use crate::queue::RetryQueue;
use crate::store::{Outbox, Store, StoreError};

pub const NAME: &str = "delete";

/// The longest reason kept.
const MAX_REASON: usize = 512;

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(DeleteService(
        Changer::build(ports, NAME).await?,
    ))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteMessage {
    reason: Option<String>,
    as_user: Option<AppUserId>,
}

/// The delete function's state, built once per container.
pub struct DeleteService<S, M, Q>(Changer<S, M, Q>);

impl<S: Store + 'static, M: Matrix + 'static, Q: RetryQueue + 'static> HttpFunction
    for DeleteService<S, M, Q>
{
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

impl<S: Store, M: Matrix, Q: RetryQueue> DeleteService<S, M, Q> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.0.metrics, request, |request| async move {
            match request.route {
                Route::DeleteMessage => self.delete(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    async fn delete(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        // The body is optional: a bare DELETE has none.
        let input: DeleteMessage = if request.body().is_empty() {
            DeleteMessage::default()
        } else {
            request.json()?
        };
        let reason = input
            .reason
            .map(|reason| reason.trim().to_owned())
            .filter(|reason| !reason.is_empty());
        if reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON)
        {
            return Err(ApiError::InvalidRequest(format!(
                "reason must be at most {MAX_REASON} characters long"
            )));
        }
        let user = request.caller.acting_user(input.as_user.clone())?;
        for _ in 0..3 {
            let target = Target::read(
                &self.0.store,
                &self.0.namer,
                &request,
                user.clone(),
                "delete",
            )
            .await?;
            if target.is_deleted() {
                return api::no_content();
            }
            // Someone else's message: moderators, owners and service tokens
            // acting as themselves remove it through the bot.
            let by_bot = !target.by_sender();
            let may_moderate = target.member.role != Role::Member
                || (request.caller.admin && input.as_user.is_none());
            if by_bot && !may_moderate {
                return Err(ApiError::Forbidden(
                    "only the sender, a moderator or an owner may delete a message".into(),
                ));
            }
            let read = &target.message;
            let deleted = read.deleted(OffsetDateTime::now_utc());
            let outcome = match read.status {
                // Not in Matrix, or not yet: a pending send is cancelled. It
                // may be on its way (a request or a retry job under way), so
                // the cancel is left to whoever delivers the send: a pending
                // delete of the send's delivery, settled when that send ends
                // (redacting what landed meanwhile), and it stays in the
                // outbox until then, so nothing overtakes it.
                MessageStatus::Pending | MessageStatus::Failed => {
                    let mut deleted = deleted;
                    if read.status == MessageStatus::Pending {
                        deleted.changes = read.changes + 1;
                        deleted.pending_change = Some(PendingChange {
                            kind: ChangeKind::Delete {
                                reason: reason.clone(),
                                by_bot,
                            },
                            delivery: read.delivery,
                            // In the send's place.
                            since: read.pending_since(),
                            in_doubt: false,
                        });
                    }
                    self.0
                        .store
                        .update_message(read, &deleted, Outbox::Keep, target.idempotency.as_ref())
                        .await
                        .map(|()| Accepted::Done(deleted))
                        .map_err(Error::from)
                }
                MessageStatus::Sent | MessageStatus::Deleted => {
                    apply_change(
                        (&self.0.store, &self.0.matrix, &self.0.queue),
                        &target.room_id,
                        read,
                        deleted,
                        ChangeKind::Delete {
                            reason: reason.clone(),
                            by_bot,
                        },
                        target.outbox_empty,
                        target.idempotency.as_ref(),
                    )
                    .await
                }
            };
            match outcome {
                Ok(Accepted::Done(message)) => {
                    self.0.metrics.count(Counter::MessagesDeleted);
                    if let Some(failure) = &message.failure {
                        tracing::warn!(message_id = %message.id, failure, "deleted here, not in Matrix");
                    }
                    return api::no_content();
                }
                Ok(Accepted::Queued(_)) => {
                    self.0.metrics.count(Counter::MessagesQueued);
                    return api::no_content();
                }
                Err(Error::Store(StoreError::Rejected)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::unavailable(
            "the message kept changing while deleting it",
        ))
    }
}
