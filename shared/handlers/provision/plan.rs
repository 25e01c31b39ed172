//! What provisioning is asked, and checking it before anything is written:
//! the request bodies (the same shapes the API takes and `bridgectl` reads
//! from JSON Lines), a conversation's creation request made into a [`Plan`]
//! (validated fields, members with their Matrix ids, the room to create),
//! members named in a path, and avatars. Every refusal is
//! [`Error::Invalid`], said so the caller can fix the request.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use ruma::{OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, UserId};
use serde::Deserialize;

use crate::error::Error;
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::RoomSpec;
use crate::model::{Conversation, ConversationKind, Member, Role, Visibility};

/// The most members one creation request names (more join with
/// `PUT .../members/{user_id}`).
pub const MAX_MEMBERS: usize = 200;
pub const MAX_NAME: usize = 255;
pub const MAX_TOPIC: usize = 1024;
/// The longest avatar address taken.
const MAX_URL: usize = 2048;

/// `POST /v1/conversations`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub name: Option<String>,
    pub topic: Option<String>,
    #[serde(default)]
    pub visibility: Visibility,
    pub parent_id: Option<ConversationId>,
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub members: Vec<MemberSpec>,
}

/// A member in a creation request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub user_id: Option<AppUserId>,
    /// Read as text, so a malformed one is refused naming the member.
    pub matrix_user_id: Option<String>,
    #[serde(default)]
    pub role: Role,
    pub display_name: Option<String>,
}

/// `PUT /v1/users/{user_id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutUser {
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// `PUT /v1/conversations/{id}/members/{user_id}`. A `display_name` left
/// out keeps the member's current one. `rejoin: true` is the application's
/// decision to put back a member a Matrix moderator kicked or banned;
/// without it, such a member is a `409`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutMember {
    pub role: Role,
    pub display_name: Option<String>,
    #[serde(default)]
    pub rejoin: bool,
}

/// `PATCH /v1/conversations/{id}`: what is given changes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConversation {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar_url: Option<String>,
}

/// An avatar as the application names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Avatar {
    /// Already in the media repository.
    Mxc(OwnedMxcUri),
    /// To fetch (`crate::fetch`) and upload.
    Fetch(String),
}

impl Avatar {
    pub fn parse(field: &str, url: &str) -> Result<Self, Error> {
        if url.starts_with("mxc://") {
            let uri = OwnedMxcUri::from(url);
            if uri.is_valid() {
                return Ok(Self::Mxc(uri));
            }
        } else if (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= MAX_URL
        {
            return Ok(Self::Fetch(url.to_owned()));
        }
        Err(Error::Invalid(format!(
            "{field} must be an mxc:// URI or an https:// address of at most {MAX_URL} characters"
        )))
    }
}

/// A member named in a path: an application user id, or a Matrix user id
/// (`@user:server`, percent-encoded in a URL) for a plain Matrix user. The
/// two cannot be confused: application ids have no `@` or `:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRef {
    App(AppUserId),
    Matrix(OwnedUserId),
}

impl FromStr for MemberRef {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| "not valid UTF-8".to_owned())?;
        if decoded.starts_with('@') {
            OwnedUserId::try_from(decoded.as_ref())
                .map(Self::Matrix)
                .map_err(|err| format!("not a valid Matrix user id: {err}"))
        } else {
            AppUserId::parse(decoded.as_ref())
                .map(Self::App)
                .map_err(|err| err.to_string())
        }
    }
}

/// Who a member is, checked: its Matrix id and, for a puppet, the
/// application user. A Matrix id of a puppet must be named by its user id,
/// and the bridge's bot is nobody's member.
pub fn member_ids(
    namer: &PuppetNamer,
    bot: &UserId,
    who: &MemberRef,
) -> Result<(OwnedUserId, Option<AppUserId>), Error> {
    match who {
        MemberRef::App(user) => Ok((namer.user_id(user), Some(user.clone()))),
        MemberRef::Matrix(matrix_user) if matrix_user == bot => Err(Error::Invalid(format!(
            "{matrix_user} is the bridge's own user and cannot be a member"
        ))),
        MemberRef::Matrix(matrix_user) if namer.app_user(matrix_user).is_some() => {
            Err(Error::Invalid(format!(
                "{matrix_user} is a bridge puppet; name it by user_id"
            )))
        }
        MemberRef::Matrix(matrix_user) => Ok((matrix_user.clone(), None)),
    }
}

/// A validated creation request.
#[derive(Clone, Debug)]
pub struct Plan {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub visibility: Visibility,
    pub avatar: Option<Avatar>,
    /// The space it goes in, and that space's room.
    pub parent: Option<(ConversationId, OwnedRoomId)>,
    pub members: Vec<Member>,
    /// The room's alias, which makes its creation happen once.
    pub alias: OwnedRoomAliasId,
}

impl Plan {
    /// Checks a creation request; `parent` is its `parent_id`'s space, found
    /// (and checked to be one) by the caller.
    pub fn from_request(
        namer: &PuppetNamer,
        bot: &UserId,
        body: CreateConversation,
        parent: Option<(ConversationId, OwnedRoomId)>,
    ) -> Result<Self, Error> {
        let count = body.members.len();
        if count > MAX_MEMBERS {
            return Err(Error::Invalid(format!(
                "at most {MAX_MEMBERS} members can be provisioned at once; add more with PUT /v1/conversations/{{id}}/members/{{user_id}}"
            )));
        }
        let mut seen = HashSet::new();
        let mut members = Vec::with_capacity(count);
        for (index, spec) in body.members.into_iter().enumerate() {
            let who = match (spec.user_id, spec.matrix_user_id) {
                (Some(user), None) => MemberRef::App(user),
                (None, Some(matrix_user)) => MemberRef::Matrix(
                    OwnedUserId::try_from(matrix_user.as_str()).map_err(|err| {
                        Error::Invalid(format!(
                            "members[{index}].matrix_user_id: '{matrix_user}' is not a Matrix user id ({err})"
                        ))
                    })?,
                ),
                _ => {
                    return Err(Error::Invalid(format!(
                        "members[{index}] needs exactly one of user_id and matrix_user_id"
                    )));
                }
            };
            let (matrix_user_id, user_id) = member_ids(namer, bot, &who)
                .map_err(|err| Error::Invalid(format!("members[{index}]: {}", err.reason())))?;
            let field = format!("members[{index}].display_name");
            let display_name = checked_display_name(&field, spec.display_name, user_id.is_some())?;
            if !seen.insert(matrix_user_id.clone()) {
                return Err(Error::Invalid(format!(
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
        match body.kind {
            ConversationKind::Direct if count != 2 => {
                return Err(Error::Invalid(format!(
                    "a direct conversation has exactly two members, not {count}"
                )));
            }
            ConversationKind::Direct if body.visibility == Visibility::Public => {
                return Err(Error::Invalid(
                    "a direct conversation is private; it cannot be public".into(),
                ));
            }
            ConversationKind::Group
                if count > 0 && !members.iter().any(|member| member.role == Role::Owner) =>
            {
                return Err(Error::Invalid(
                    "a group needs an owner among its members".into(),
                ));
            }
            _ => {}
        }
        Ok(Self {
            alias: namer.room_alias(&body.id),
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
            avatar: body
                .avatar_url
                .map(|url| Avatar::parse("avatar_url", &url))
                .transpose()?,
            parent,
            members,
        })
    }

    /// The room to create for it, with `avatar` already in the media
    /// repository.
    pub fn room_spec(&self, avatar: Option<OwnedMxcUri>) -> RoomSpec {
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
            alias: Some(self.alias.alias().to_owned()),
            avatar,
        }
    }
}

/// A member's per-conversation display name: only puppets have one (a
/// plain Matrix user's name is its own).
pub fn checked_display_name(
    field: &str,
    name: Option<String>,
    puppet: bool,
) -> Result<Option<String>, Error> {
    match name {
        Some(_) if !puppet => Err(Error::Invalid(format!(
            "{field}: only members named by user_id have a display name here; a Matrix user keeps its own"
        ))),
        name => name
            .map(|name| checked_text(field, name, MAX_NAME))
            .transpose(),
    }
}

pub fn ensure_same_kind(draft: &Conversation, existing: &Conversation) -> Result<(), Error> {
    if draft.kind == existing.kind {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
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
pub fn checked_text(field: &str, value: String, max: usize) -> Result<String, Error> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(Error::Invalid(format!(
            "{field} must be 1 to {max} characters long"
        )));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use ruma::user_id;
    use serde_json::json;

    use super::*;

    fn namer() -> PuppetNamer {
        PuppetNamer::new("app_", ruma::server_name!("localhost"))
    }

    fn plan(body: serde_json::Value) -> Result<Plan, Error> {
        let body: CreateConversation =
            serde_json::from_value(body).map_err(|err| Error::Invalid(err.to_string()))?;
        Plan::from_request(&namer(), user_id!("@bridgebot:localhost"), body, None)
    }

    fn refused(body: serde_json::Value, words: &str) {
        match plan(body) {
            Err(Error::Invalid(reason)) => assert!(reason.contains(words), "{reason}"),
            other => panic!("expected a refusal with '{words}', got {other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let owner = json!({"user_id": "ann", "role": "owner"});
        refused(json!({"id": "c", "kind": "chat"}), "unknown variant");
        refused(
            json!({"id": "c", "kind": "group", "members": [owner, {"user_id": "ann"}]}),
            "listed twice",
        );
        refused(
            json!({"id": "c", "kind": "direct", "members": [owner]}),
            "exactly two members, not 1",
        );
        refused(
            json!({"id": "c", "kind": "direct", "visibility": "public",
                   "members": [owner, {"user_id": "bo"}]}),
            "private",
        );
        refused(
            json!({"id": "c", "kind": "group", "members": [{"user_id": "ann"}]}),
            "needs an owner",
        );
        refused(
            json!({"id": "c", "kind": "group", "members": [{"user_id": "a b"}]}),
            "may contain only",
        );
        refused(
            json!({"id": "c", "kind": "group", "members": [{"matrix_user_id": "carol"}]}),
            "members[0].matrix_user_id: 'carol' is not a Matrix user id",
        );
        refused(
            json!({"id": "c", "kind": "group", "members": [owner,
                {"matrix_user_id": "@bridgebot:localhost"}]}),
            "bridge's own user",
        );
        refused(
            json!({"id": "c", "kind": "group", "members": [owner,
                {"matrix_user_id": "@app_bo:localhost"}]}),
            "name it by user_id",
        );
        refused(
            json!({"id": "c", "kind": "group", "members": [owner,
                {"matrix_user_id": "@carol:other.org", "display_name": "C"}]}),
            "keeps its own",
        );
        refused(
            json!({"id": "c", "kind": "group", "avatar_url": "ftp://x/y.png"}),
            "avatar_url",
        );
        let many: Vec<_> = (0..=MAX_MEMBERS)
            .map(|i| json!({"user_id": format!("u{i}"), "role": "owner"}))
            .collect();
        refused(
            json!({"id": "c", "kind": "group", "members": many}),
            "at most 200",
        );
    }

    #[test]
    fn a_plan_names_its_room_and_levels() {
        let plan = plan(json!({"id": "Grp:1", "kind": "group", "name": " Hikers ",
            "avatar_url": "https://example.org/a.png",
            "members": [{"user_id": "ann", "role": "owner", "display_name": "Ann"},
                        {"matrix_user_id": "@carol:other.org", "role": "moderator"},
                        {"user_id": "bo"}]}))
        .unwrap();
        assert_eq!(plan.name.as_deref(), Some("Hikers"));
        assert_eq!(plan.alias.as_str(), "#app__grp=3a1:localhost");
        assert_eq!(
            plan.avatar,
            Some(Avatar::Fetch("https://example.org/a.png".into()))
        );
        let spec = plan.room_spec(None);
        assert_eq!(spec.alias.as_deref(), Some("app__grp=3a1"));
        assert_eq!(spec.invite.len(), 3);
        assert_eq!(spec.power_levels.len(), 2, "members keep the default level");
        // An empty group is allowed: members may join later.
        assert!(
            super::Plan::from_request(
                &namer(),
                user_id!("@bridgebot:localhost"),
                serde_json::from_value(json!({"id": "e", "kind": "group"})).unwrap(),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn members_are_named_by_user_id_or_matrix_id() {
        assert_eq!(
            "alice".parse::<MemberRef>(),
            Ok(MemberRef::App(AppUserId::parse("alice").unwrap()))
        );
        let carol = MemberRef::Matrix(ruma::owned_user_id!("@carol:example.org"));
        assert_eq!("@carol:example.org".parse::<MemberRef>(), Ok(carol.clone()));
        assert_eq!("%40carol%3Aexample.org".parse::<MemberRef>(), Ok(carol));
        assert!("@carol".parse::<MemberRef>().is_err());
        assert!("a:b".parse::<MemberRef>().is_err());
    }
}
