//! The `provision` function: users' puppets, and conversations' rooms with
//! their members, roles, profiles and lifecycle, over HTTP.
//!
//! The work is the [`Provisioning`] service (plain calls returning the
//! domain error, which `bridgectl` uses too):
//! - [`plan`] checks requests before anything is written;
//! - [`claim`] creates a conversation's room once, also under racing
//!   requests, and [`room`] makes the room once also across a crash (its
//!   alias);
//! - [`members`] and [`update`] change members and conversations, each
//!   change going to Matrix through [`apply`] (directly, or through the
//!   conversation's outbox), which [`sync`] carries out, here or in the
//!   retry function;
//! - [`avatar`] puts `https://` avatars in the media repository.

mod apply;
mod avatar;
mod claim;
mod members;
pub mod plan;
mod room;
mod service;
pub mod sync;
mod update;

use lambda_http::{Body, Response};
use serde_json::json;

pub use self::claim::CLAIM_LEASE;
use self::plan::{CreateConversation, MemberRef, PutMember, PutUser, UpdateConversation};
pub use self::service::{Applied, Provisioned, Provisioning, from_ports};
use crate::api::views::{ConversationView, MemberView};
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::{AppUserId, ConversationId};
use crate::matrix::Matrix;
use crate::metrics::Metrics;
use crate::ports::{InitError, Ports};
use crate::queue::RetryQueue;
use crate::store::Store;

pub const NAME: &str = "provision";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(Provisioner {
        service: from_ports(ports, ports.metrics(NAME)).await?,
        metrics: ports.metrics(NAME),
    })))
}

/// The provision function's state, built once per container.
pub struct Provisioner<S, M, Q> {
    pub service: Provisioning<S, M, Q>,
    pub metrics: Metrics,
}

impl<S, M, Q> HttpFunction for Provisioner<S, M, Q>
where
    S: Store + 'static,
    M: Matrix + 'static,
    Q: RetryQueue + 'static,
{
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

/// `200`, or `202` when the change waits in the outbox.
fn status(applied: Applied) -> u16 {
    match applied {
        Applied::Done => 200,
        Applied::Queued => 202,
    }
}

/// `204`, or `202` when the change waits in the outbox.
fn gone(applied: Applied) -> Result<Response<Body>, ApiError> {
    match applied {
        Applied::Done => api::no_content(),
        Applied::Queued => api::json(202, &json!({"status": "pending"})),
    }
}

impl<S: Store, M: Matrix, Q: RetryQueue> Provisioner<S, M, Q> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.metrics, request, |request| self.route(request)).await
    }

    async fn route(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        match request.route {
            Route::PutUser => self.put_user(request).await,
            Route::CreateConversation => self.create_conversation(request).await,
            Route::GetConversation => self.get_conversation(request).await,
            Route::UpdateConversation => self.update_conversation(request).await,
            Route::ArchiveConversation => {
                let id = request.conversation_id()?;
                gone(self.service.archive_conversation(&id).await?)
            }
            Route::PutMember => self.put_member(request).await,
            Route::RemoveMember => {
                let id = request.conversation_id()?;
                let who: MemberRef = request.path_param("user_id")?;
                gone(self.service.remove_member(&id, &who).await?)
            }
            _ => Err(ApiError::NotFound("no such route".into())),
        }
    }

    async fn put_user(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let user: AppUserId = request.path_param("user_id")?;
        let body: PutUser = request.json()?;
        let puppet = self.service.put_user(user, body).await?;
        api::json(
            200,
            &json!({
                "user_id": puppet.user_id,
                "matrix_user_id": puppet.matrix_user_id,
                "display_name": puppet.display_name,
                "avatar_url": puppet.avatar_url,
            }),
        )
    }

    async fn create_conversation(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let body: CreateConversation = request.json()?;
        let provisioned = self.service.create_conversation(body).await?;
        let status = if provisioned.created { 201 } else { 200 };
        api::json(
            status,
            &ConversationView::new(&provisioned.conversation, &provisioned.members),
        )
    }

    async fn get_conversation(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let not_found = || ApiError::NotFound(format!("conversation '{id}' not found"));
        let (conversation, members) = self
            .service
            .conversation(&id)
            .await?
            .ok_or_else(not_found)?;
        if let Some(reader) = request.caller.reader(request.query("as_user")?)? {
            let reader = self.service.namer().user_id(&reader);
            if !members.iter().any(|member| member.matrix_user_id == reader) {
                return Err(not_found());
            }
        }
        api::json(200, &ConversationView::new(&conversation, &members))
    }

    async fn update_conversation(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id: ConversationId = request.conversation_id()?;
        let body: UpdateConversation = request.json()?;
        let (_, applied) = self.service.update_conversation(&id, body).await?;
        let (conversation, members) = self
            .service
            .conversation(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("conversation '{id}' not found")))?;
        api::json(
            status(applied),
            &ConversationView::new(&conversation, &members),
        )
    }

    async fn put_member(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let who: MemberRef = request.path_param("user_id")?;
        let body: PutMember = request.json()?;
        let (member, applied) = self.service.put_member(&id, &who, body).await?;
        api::json(status(applied), &MemberView::from(&member))
    }
}
