//! The `activity` function: what a member does in a conversation besides
//! writing, passed on as its puppet: typing notifications
//! (<https://spec.matrix.org/v1.16/client-server-api/#typing-notifications>)
//! and read receipts
//! (<https://spec.matrix.org/v1.16/client-server-api/#receipts>).
//!
//! Typing is debounced across containers by a conditional write on the
//! member's record (`typing_until`): only the call that opens a typing
//! window tells the homeserver, so an application may pass every keystroke
//! on; `typing: false` closes the window, and tells the homeserver if one
//! was set.

use std::ops::RangeInclusive;
use std::time::Duration;

use lambda_http::{Body, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::access::{in_room, member_of};
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::{AppUserId, PuppetNamer};
use crate::matrix::Matrix;
use crate::metrics::Metrics;
use crate::model::MessageId;
use crate::ports::{InitError, Ports};
use crate::store::Store;

pub const NAME: &str = "activity";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(ActivityService {
        store: ports.store().await?,
        matrix: ports.matrix().await?,
        namer: ports.namer()?,
        metrics: ports.metrics(NAME),
    })))
}

/// How long a typing notification lasts, in milliseconds, when the request
/// does not say.
pub const DEFAULT_TYPING_TIMEOUT_MS: u64 = 30_000;
/// The timeouts a request may ask for, in milliseconds.
pub const TYPING_TIMEOUT_MS: RangeInclusive<u64> = 1_000..=120_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTyping {
    typing: bool,
    timeout_ms: Option<u64>,
    as_user: Option<AppUserId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkRead {
    message_id: MessageId,
    as_user: Option<AppUserId>,
}

/// The activity function's state, built once per container.
pub struct ActivityService<S, M> {
    pub store: S,
    pub matrix: M,
    pub namer: PuppetNamer,
    pub metrics: Metrics,
}

impl<S: Store + 'static, M: Matrix + 'static> HttpFunction for ActivityService<S, M> {
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

impl<S: Store, M: Matrix> ActivityService<S, M> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.metrics, request, |request| async move {
            match request.route {
                Route::SetTyping => self.typing(request).await,
                Route::MarkRead => self.read(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    async fn typing(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let input: SetTyping = request.json()?;
        let user = request.caller.acting_user(input.as_user)?;
        let timeout_ms = input.timeout_ms.unwrap_or(DEFAULT_TYPING_TIMEOUT_MS);
        if !TYPING_TIMEOUT_MS.contains(&timeout_ms) {
            return Err(ApiError::InvalidRequest(format!(
                "timeout_ms must be between {} and {}",
                TYPING_TIMEOUT_MS.start(),
                TYPING_TIMEOUT_MS.end()
            )));
        }
        let acting = member_of(&self.store, &self.namer, &request, user, &id).await?;
        let (room_id, puppet) = (&acting.room_id, &acting.puppet);

        if !input.typing {
            if acting.member.typing_until.is_none() {
                return api::no_content();
            }
            // Told first, cleared after: if the homeserver cannot be told,
            // the window stays set and a repeat tries again. A puppet that
            // is not in the room is not typing there.
            match self
                .matrix
                .set_typing(room_id, puppet, false, Duration::ZERO)
                .await
            {
                Err(err) if !err.is_forbidden() => return Err(err.into()),
                _ => {}
            }
            self.store.stop_typing(&id, puppet).await?;
            return api::no_content();
        }

        let timeout = Duration::from_millis(timeout_ms);
        let now = OffsetDateTime::now_utc();
        if !self
            .store
            .start_typing(&id, puppet, now, now + timeout)
            .await?
        {
            // Within the window an earlier call opened: the homeserver knows.
            return api::no_content();
        }
        let told = in_room(&self.store, &self.matrix, &id, &acting, || {
            self.matrix.set_typing(room_id, puppet, true, timeout)
        })
        .await;
        if let Err(err) = told {
            // Not told: close the window, so that a repeat tries again.
            if let Err(err) = self.store.stop_typing(&id, puppet).await {
                tracing::warn!(error = %err, "could not close the typing window");
            }
            return Err(err.into());
        }
        api::no_content()
    }

    async fn read(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let input: MarkRead = request.json()?;
        let user = request.caller.acting_user(input.as_user)?;
        let (acting, message) = tokio::join!(
            member_of(&self.store, &self.namer, &request, user, &id),
            self.store.message(&id, input.message_id)
        );
        let acting = acting?;
        let message = message?.ok_or_else(|| {
            ApiError::NotFound(format!("message '{}' not found", input.message_id))
        })?;
        let event_id = message.event_id.ok_or_else(|| {
            ApiError::Conflict(format!(
                "message '{}' has not reached Matrix (it is {}); it can be marked read once sent",
                message.id,
                message.status.as_str()
            ))
        })?;
        in_room(&self.store, &self.matrix, &id, &acting, || {
            self.matrix
                .send_read_receipt(&acting.room_id, &acting.puppet, &event_id)
        })
        .await?;
        api::no_content()
    }
}
