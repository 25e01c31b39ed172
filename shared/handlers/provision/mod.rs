//! The `provision` function: users' puppets, and conversations' rooms with
//! their members and power levels.
//!
//! [`plan`] checks a request; [`claim`] carries out the creation protocol,
//! which makes one room per conversation even under racing requests.

mod claim;
mod plan;

use lambda_http::{Body, Response};
use ruma::OwnedRoomId;
use serde::Deserialize;
use time::OffsetDateTime;

use self::claim::CLAIM_LEASE;
use self::plan::{
    CreateConversation, MAX_NAME, Plan, checked_text, ensure_same_kind, parse_avatar,
};
use super::puppets::{WantedPuppet, ensure_puppets};
use crate::api::views::ConversationView;
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::Matrix;
use crate::metrics::{Counter, Metrics};
use crate::model::{Conversation, ConversationKind, ConversationStatus, Puppet};
use crate::ports::{InitError, Ports};
use crate::store::{Claim, Store};

pub const NAME: &str = "provision";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(Provisioner {
        store: ports.store().await?,
        matrix: ports.matrix().await?,
        namer: ports.namer()?,
        metrics: ports.metrics(NAME),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutUser {
    display_name: Option<String>,
    avatar_url: Option<String>,
}

/// The provision function's state, built once per container.
pub struct Provisioner<S, M> {
    pub store: S,
    pub matrix: M,
    pub namer: PuppetNamer,
    pub metrics: Metrics,
}

impl<S: Store + 'static, M: Matrix + 'static> HttpFunction for Provisioner<S, M> {
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

impl<S: Store, M: Matrix> Provisioner<S, M> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.metrics, request, |request| self.route(request)).await
    }

    async fn route(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        match request.route {
            Route::PutUser => self.put_user(request).await,
            Route::CreateConversation => self.create_conversation(request).await,
            Route::GetConversation => self.get_conversation(request).await,
            _ => Err(ApiError::NotFound("no such route".into())),
        }
    }

    async fn put_user(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let user: AppUserId = request.path_param("user_id")?;
        let body: PutUser = request.json()?;
        let display_name = body
            .display_name
            .map(|name| checked_text("display_name", name, MAX_NAME))
            .transpose()?;
        let avatar_url = body.avatar_url.map(parse_avatar).transpose()?;
        let wanted = [WantedPuppet {
            user,
            display_name,
            avatar_url,
        }];
        let puppet = self
            .puppets(&wanted)
            .await?
            .pop()
            .ok_or_else(|| ApiError::internal("no puppet returned for one asked"))?;
        api::json(
            200,
            &serde_json::json!({
                "user_id": puppet.user_id,
                "matrix_user_id": puppet.matrix_user_id,
                "display_name": puppet.display_name,
                "avatar_url": puppet.avatar_url,
            }),
        )
    }

    async fn puppets(&self, wanted: &[WantedPuppet]) -> Result<Vec<Puppet>, ApiError> {
        Ok(ensure_puppets(
            &self.store,
            &self.matrix,
            &self.namer,
            &self.metrics,
            wanted,
        )
        .await?)
    }

    async fn get_conversation(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let not_found = || ApiError::NotFound(format!("conversation '{id}' not found"));
        let (conversation, members) = self
            .store
            .conversation_with_members(&id)
            .await?
            .ok_or_else(not_found)?;
        if let Some(reader) = request.caller.reader(request.query("as_user")?)? {
            let reader = self.namer.user_id(&reader);
            if !members.iter().any(|member| member.matrix_user_id == reader) {
                return Err(not_found());
            }
        }
        api::json(200, &ConversationView::new(&conversation, &members))
    }

    async fn create_conversation(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let body: CreateConversation = request.json()?;
        let parent = match &body.parent_id {
            Some(parent_id) => Some(self.parent_space(parent_id).await?),
            None => None,
        };
        let plan = Plan::from_request(&self.namer, body, parent)?;
        let now = OffsetDateTime::now_utc();
        let draft = Conversation {
            name: plan.name.clone(),
            topic: plan.topic.clone(),
            visibility: plan.visibility,
            parent_id: plan.parent.as_ref().map(|(id, _)| id.clone()),
            ..Conversation::draft(plan.id.clone(), plan.kind, now)
        };
        match self
            .store
            .claim_conversation(&draft, now + CLAIM_LEASE)
            .await?
        {
            Claim::Exists(existing) => self.existing(&draft, existing).await,
            Claim::Busy(existing) => {
                ensure_same_kind(&draft, &existing)?;
                self.await_racing_request(&draft).await
            }
            Claim::Granted {
                token,
                conversation,
            } => {
                // A claim taken over from an abandoned request keeps what
                // that request stored; it must be the same conversation.
                let provisioned = match ensure_same_kind(&draft, &conversation) {
                    Ok(()) => self.provision(&plan, conversation, token).await,
                    Err(err) => Err(err),
                };
                if provisioned.is_err() {
                    if let Err(err) = self.store.release_claim(&plan.id, token).await {
                        tracing::warn!(error = %err, "could not release a provisioning claim");
                    }
                }
                let (conversation, members) = provisioned?;
                self.metrics.count(Counter::RoomsCreated);
                api::json(201, &ConversationView::new(&conversation, &members))
            }
        }
    }

    /// The space a new conversation goes in: an active conversation of kind `space`.
    async fn parent_space(
        &self,
        parent_id: &ConversationId,
    ) -> Result<(ConversationId, OwnedRoomId), ApiError> {
        let parent = self.store.conversation(parent_id).await?.ok_or_else(|| {
            ApiError::InvalidRequest(format!("parent_id: no conversation '{parent_id}'"))
        })?;
        if parent.kind != ConversationKind::Space {
            return Err(ApiError::InvalidRequest(format!(
                "parent_id: '{parent_id}' is not a conversation of kind 'space'"
            )));
        }
        match (parent.status, parent.room_id) {
            (ConversationStatus::Active, Some(room_id)) => Ok((parent.id, room_id)),
            _ => Err(ApiError::Conflict(format!(
                "parent_id: space '{parent_id}' is not active"
            ))),
        }
    }
}
