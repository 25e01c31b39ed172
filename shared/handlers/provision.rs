//! The `provision` function: users' puppets, and conversations' rooms with
//! their members and power levels.
//!
//! Creating a conversation claims its id in the table first, so two racing
//! requests make one room: the loser waits for the winner's result. The room
//! id is recorded as soon as the room exists, so a request that takes over
//! an abandoned claim reuses the room instead of making a second one.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use lambda_http::{Body, Response};
use ruma::{OwnedMxcUri, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::puppets::{WantedPuppet, ensure_puppets};
use super::views::ConversationView;
use crate::api::{self, ApiError, ApiRequest, Function, Route};
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::{Matrix, MatrixError, RoomSpec};
use crate::metrics::{self, Counter};
use crate::model::{
    Conversation, ConversationKind, ConversationStatus, Member, Puppet, Role, Visibility,
};
use crate::store::{Claim, Store, StoreError};

/// How long a provisioning claim holds: longer than the function may run.
const CLAIM_LEASE: time::Duration = time::Duration::seconds(35);
/// How long a request waits for a racing request to finish the same conversation.
const RACE_WAIT: Duration = Duration::from_secs(8);
const MAX_MEMBERS: usize = 200;
const MAX_NAME: usize = 255;
const MAX_TOPIC: usize = 1024;
/// How many puppets join the new room at once.
const JOIN_CONCURRENCY: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConversation {
    id: ConversationId,
    kind: ConversationKind,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    visibility: Visibility,
    parent_id: Option<ConversationId>,
    #[serde(default)]
    members: Vec<MemberSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberSpec {
    user_id: Option<AppUserId>,
    matrix_user_id: Option<OwnedUserId>,
    #[serde(default)]
    role: Role,
    display_name: Option<String>,
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
}

impl<S: Store, M: Matrix> Provisioner<S, M> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(Function::Provision, request, |request| self.route(request)).await
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
        request.caller.require_admin()?;
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
        ensure_puppets(
            &self.store,
            &self.matrix,
            &self.namer,
            Function::Provision,
            wanted,
        )
        .await
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
        request.caller.require_admin()?;
        let body: CreateConversation = request.json()?;
        let parent = match &body.parent_id {
            Some(parent_id) => Some(self.parent_space(parent_id).await?),
            None => None,
        };
        let plan = self.plan(body, parent)?;
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
                metrics::count(Function::Provision, Counter::RoomsCreated);
                api::json(201, &ConversationView::new(&conversation, &members))
            }
        }
    }

    /// Checks a creation request and works out the members and power levels.
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

    fn plan(
        &self,
        body: CreateConversation,
        parent: Option<(ConversationId, OwnedRoomId)>,
    ) -> Result<Plan, ApiError> {
        if body.members.len() > MAX_MEMBERS {
            return Err(ApiError::InvalidRequest(format!(
                "at most {MAX_MEMBERS} members can be provisioned at once"
            )));
        }
        let mut seen = HashSet::new();
        let mut members = Vec::with_capacity(body.members.len());
        for (index, spec) in body.members.into_iter().enumerate() {
            let display_name = spec
                .display_name
                .map(|name| checked_text(&format!("members[{index}].display_name"), name, MAX_NAME))
                .transpose()?;
            let (matrix_user_id, user_id) = match (spec.user_id, spec.matrix_user_id) {
                (Some(user), None) => (self.namer.user_id(&user), Some(user)),
                (None, Some(matrix_user)) => {
                    if self.namer.app_user(&matrix_user).is_some() {
                        return Err(ApiError::InvalidRequest(format!(
                            "members[{index}]: {matrix_user} is a bridge puppet; name it by user_id"
                        )));
                    }
                    (matrix_user, None)
                }
                _ => {
                    return Err(ApiError::InvalidRequest(format!(
                        "members[{index}] needs exactly one of user_id and matrix_user_id"
                    )));
                }
            };
            if !seen.insert(matrix_user_id.clone()) {
                return Err(ApiError::InvalidRequest(format!(
                    "members[{index}]: {matrix_user_id} is listed twice"
                )));
            }
            members.push(Member {
                conversation_id: body.id.clone(),
                matrix_user_id,
                user_id,
                role: spec.role,
                display_name,
                joined: false,
            });
        }
        Ok(Plan {
            id: body.id,
            kind: body.kind,
            name: body
                .name
                .map(|name| checked_text("name", name, MAX_NAME))
                .transpose()?,
            topic: body
                .topic
                .map(|topic| checked_text("topic", topic, MAX_TOPIC))
                .transpose()?,
            visibility: body.visibility,
            parent,
            members,
        })
    }

    /// Does the Matrix side under a granted claim, then activates the conversation.
    async fn provision(
        &self,
        plan: &Plan,
        mut conversation: Conversation,
        token: Uuid,
    ) -> Result<(Conversation, Vec<Member>), ApiError> {
        let wanted: Vec<WantedPuppet> = plan
            .members
            .iter()
            .filter_map(|member| {
                member.user_id.clone().map(|user| WantedPuppet {
                    user,
                    display_name: member.display_name.clone(),
                    avatar_url: None,
                })
            })
            .collect();
        self.puppets(&wanted).await?;

        let room_id =
            match conversation.room_id.clone() {
                Some(room_id) => room_id,
                None => {
                    let room_id = self.matrix.create_room(&plan.room_spec()).await.map_err(
                        |err| match err {
                            // A refusal here is about the request (say, a member who
                            // cannot be invited), so the caller should hear it.
                            MatrixError::Refused {
                                errcode, message, ..
                            } => ApiError::InvalidRequest(format!(
                                "the homeserver refused to create the room: {errcode} {message}"
                            )),
                            other => ApiError::from(other),
                        },
                    )?;
                    match self.store.record_room(&plan.id, token, &room_id).await {
                        Err(StoreError::Rejected) => {
                            return Err(ApiError::Conflict(format!(
                                "conversation '{}' was taken over by another request; retry",
                                plan.id
                            )));
                        }
                        other => other?,
                    }
                    tracing::info!(conversation = %plan.id, %room_id, "room created");
                    room_id
                }
            };

        if let Some((_, space)) = &plan.parent {
            self.matrix.add_space_child(space, &room_id).await?;
        }
        let members = self.join_puppets(&room_id, &plan.members).await?;
        conversation.room_id = Some(room_id);
        match self
            .store
            .activate_conversation(&conversation, token, &members)
            .await
        {
            Err(StoreError::Rejected) => Err(ApiError::Conflict(format!(
                "conversation '{}' was taken over by another request; retry",
                plan.id
            ))),
            other => other.map_err(ApiError::from),
        }?;
        conversation.status = ConversationStatus::Active;
        conversation.claim = None;
        Ok((conversation, members))
    }

    /// Joins every puppet member to the room (they were invited at creation).
    async fn join_puppets(
        &self,
        room_id: &OwnedRoomId,
        members: &[Member],
    ) -> Result<Vec<Member>, ApiError> {
        stream::iter(members.iter().cloned())
            .map(|mut member| async move {
                if member.user_id.is_some() {
                    self.matrix.join(room_id, &member.matrix_user_id).await?;
                    member.joined = true;
                }
                Ok::<_, ApiError>(member)
            })
            .buffered(JOIN_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn existing(
        &self,
        draft: &Conversation,
        existing: Conversation,
    ) -> Result<Response<Body>, ApiError> {
        ensure_same_kind(draft, &existing)?;
        let (conversation, members) = self
            .store
            .conversation_with_members(&existing.id)
            .await?
            .ok_or_else(|| ApiError::unavailable("a conversation vanished while being read"))?;
        api::json(200, &ConversationView::new(&conversation, &members))
    }

    /// Waits for a racing request to finish provisioning the same conversation.
    async fn await_racing_request(&self, draft: &Conversation) -> Result<Response<Body>, ApiError> {
        let started = std::time::Instant::now();
        while started.elapsed() < RACE_WAIT {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(current) = self.store.conversation(&draft.id).await? {
                if current.status != ConversationStatus::Provisioning {
                    return self.existing(draft, current).await;
                }
            }
        }
        Err(ApiError::Conflict(format!(
            "conversation '{}' is being provisioned by another request; retry shortly",
            draft.id
        )))
    }
}

/// A validated creation request.
struct Plan {
    id: ConversationId,
    kind: ConversationKind,
    name: Option<String>,
    topic: Option<String>,
    visibility: Visibility,
    /// The space it goes in, and that space's room.
    parent: Option<(ConversationId, OwnedRoomId)>,
    members: Vec<Member>,
}

impl Plan {
    fn room_spec(&self) -> RoomSpec {
        let power_levels: BTreeMap<OwnedUserId, i64> = self
            .members
            .iter()
            .filter(|member| member.role.power_level() > 0)
            .map(|member| (member.matrix_user_id.clone(), member.role.power_level()))
            .collect();
        RoomSpec {
            kind: Some(self.kind),
            name: self.name.clone(),
            topic: self.topic.clone(),
            visibility: self.visibility,
            parent: self.parent.as_ref().map(|(_, room_id)| room_id.clone()),
            invite: self
                .members
                .iter()
                .map(|member| member.matrix_user_id.clone())
                .collect(),
            power_levels,
        }
    }
}

fn ensure_same_kind(draft: &Conversation, existing: &Conversation) -> Result<(), ApiError> {
    if draft.kind == existing.kind {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "conversation '{}' exists already with kind '{}'",
            existing.id,
            serde_json::to_value(existing.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )))
    }
}

/// Trims `value` and checks its length; empty text is refused.
fn checked_text(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(ApiError::InvalidRequest(format!(
            "{field} must be 1 to {max} characters long"
        )));
    }
    Ok(trimmed.to_owned())
}

fn parse_avatar(url: String) -> Result<OwnedMxcUri, ApiError> {
    let uri = OwnedMxcUri::from(url);
    if uri.is_valid() {
        Ok(uri)
    } else {
        Err(ApiError::InvalidRequest(
            "avatar_url must be an mxc:// URI (upload the image to the homeserver first)".into(),
        ))
    }
}
