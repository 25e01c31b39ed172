//! Checking a provisioning request: a conversation's creation request becomes
//! a [`Plan`] (validated fields, members with their Matrix ids, the room to
//! create); user profiles' text and avatars are checked here too.

use std::collections::{BTreeMap, HashSet};

use ruma::{OwnedMxcUri, OwnedRoomId, OwnedUserId};
use serde::Deserialize;

use crate::api::ApiError;
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::RoomSpec;
use crate::model::{Conversation, ConversationKind, Member, Role, Visibility};

const MAX_MEMBERS: usize = 200;
pub(super) const MAX_NAME: usize = 255;
const MAX_TOPIC: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateConversation {
    id: ConversationId,
    kind: ConversationKind,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    visibility: Visibility,
    pub parent_id: Option<ConversationId>,
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

/// A validated creation request.
pub(super) struct Plan {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub visibility: Visibility,
    /// The space it goes in, and that space's room.
    pub parent: Option<(ConversationId, OwnedRoomId)>,
    pub members: Vec<Member>,
}

impl Plan {
    pub(super) fn from_request(
        namer: &PuppetNamer,
        body: CreateConversation,
        parent: Option<(ConversationId, OwnedRoomId)>,
    ) -> Result<Self, ApiError> {
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
                (Some(user), None) => (namer.user_id(&user), Some(user)),
                (None, Some(matrix_user)) => {
                    if namer.app_user(&matrix_user).is_some() {
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
                typing_until: None,
                removed: None,
            });
        }
        Ok(Self {
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

    /// The room to create for it.
    pub(super) fn room_spec(&self) -> RoomSpec {
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

pub(super) fn ensure_same_kind(
    draft: &Conversation,
    existing: &Conversation,
) -> Result<(), ApiError> {
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
pub(super) fn checked_text(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(ApiError::InvalidRequest(format!(
            "{field} must be 1 to {max} characters long"
        )));
    }
    Ok(trimmed.to_owned())
}

pub(super) fn parse_avatar(url: String) -> Result<OwnedMxcUri, ApiError> {
    let uri = OwnedMxcUri::from(url);
    if uri.is_valid() {
        Ok(uri)
    } else {
        Err(ApiError::InvalidRequest(
            "avatar_url must be an mxc:// URI (upload the image to the homeserver first)".into(),
        ))
    }
}
