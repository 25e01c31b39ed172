//! The `edit` function: `PUT /v1/conversations/{id}/messages/{message_id}`.
//!
//! Only the sender may edit. The new text is stored on the message, then
//! sent as a Matrix `m.replace` of the message's original event (never of
//! an earlier edit), as the sender's puppet, with `m.new_content` and the
//! `* ` fallback: directly, or through the outbox when something waits
//! there or the homeserver cannot take it (`202`). A message still pending
//! is simply sent with its new text; a deleted one cannot be edited.

use lambda_http::{Body, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::changes::{Accepted, Changer, apply_change};
use super::outbound::{event_content, own_content};
use super::target::Target;
use super::text;
use crate::api::views::MessageView;
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::AppUserId;
use crate::matrix::Matrix;
use crate::matrix::content::replacement;
use crate::metrics::Counter;
use crate::model::{ChangeKind, Format, MessageStatus};
use crate::ports::{InitError, Ports};
use crate::queue::RetryQueue;
use crate::store::{Outbox, Store, StoreError};

pub const NAME: &str = "edit";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(EditService(
        Changer::build(ports, NAME).await?,
    ))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditMessage {
    body: String,
    #[serde(default)]
    format: Format,
    as_user: Option<AppUserId>,
}

/// The edit function's state, built once per container.
pub struct EditService<S, M, Q>(Changer<S, M, Q>);

impl<S: Store + 'static, M: Matrix + 'static, Q: RetryQueue + 'static> HttpFunction
    for EditService<S, M, Q>
{
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

impl<S: Store, M: Matrix, Q: RetryQueue> EditService<S, M, Q> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.0.metrics, request, |request| async move {
            match request.route {
                Route::EditMessage => self.edit(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    async fn edit(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let input: EditMessage = request.json()?;
        let user = request.caller.acting_user(input.as_user.clone())?;
        let html = text::checked(&input.body, input.format, false)?;
        // A message changed by someone else in between is read again.
        for _ in 0..3 {
            let target =
                Target::read(&self.0.store, &self.0.namer, &request, user.clone(), "edit").await?;
            if target.replayed()? {
                self.0.metrics.count(Counter::IdempotentReplays);
                return api::json(200, &MessageView::from(&target.message));
            }
            if !target.by_sender() {
                return Err(ApiError::Forbidden(
                    "only the sender of a message may edit it".into(),
                ));
            }
            let read = &target.message;
            match read.status {
                MessageStatus::Deleted => {
                    return Err(ApiError::Conflict(format!(
                        "message '{}' was deleted",
                        read.id
                    )));
                }
                MessageStatus::Failed => {
                    return Err(ApiError::Conflict(format!(
                        "message '{}' was never delivered; send a new one",
                        read.id
                    )));
                }
                MessageStatus::Pending | MessageStatus::Sent => {}
            }
            let mut edited = read.clone();
            edited.body = input.body.clone();
            edited.format = input.format;
            edited.html = html.clone();
            edited.edited_at = Some(OffsetDateTime::now_utc());
            // Refuse what Matrix would refuse, before anything is stored.
            match &read.event_id {
                Some(event_id) => {
                    replacement(event_id, own_content(&edited), &edited.id, edited.changes)?
                }
                None => event_content(&edited, &Default::default())?,
            };
            let outcome = if read.status == MessageStatus::Pending {
                // Not in Matrix yet: what will be sent is the new text.
                self.0
                    .store
                    .update_message(read, &edited, Outbox::Keep, target.idempotency.as_ref())
                    .await
                    .map(|()| Accepted::Done(edited))
                    .map_err(crate::error::Error::from)
            } else {
                apply_change(
                    (&self.0.store, &self.0.matrix, &self.0.queue),
                    &target.room_id,
                    read,
                    edited,
                    ChangeKind::Edit,
                    target.outbox_empty,
                    target.idempotency.as_ref(),
                )
                .await
            };
            match outcome {
                Ok(Accepted::Done(message)) => {
                    self.0.metrics.count(Counter::MessagesEdited);
                    return api::json(200, &MessageView::from(&message));
                }
                Ok(Accepted::Queued(message)) => {
                    self.0.metrics.count(Counter::MessagesQueued);
                    return api::json(202, &MessageView::from(&message));
                }
                Err(crate::error::Error::Store(StoreError::Rejected)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::unavailable(
            "the message kept changing while editing it",
        ))
    }
}
