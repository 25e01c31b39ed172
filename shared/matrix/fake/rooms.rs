//! The fake homeserver's rooms as state: the events `createRoom` makes
//! (create, power levels, join rules, name, topic, avatar, canonical alias,
//! space parent, members, with who set each membership and why), aliases and the room directory, with the rules
//! of Synapse the bridge depends on: an alias is taken once, a room version
//! 12 room refuses power levels that list its creator, content equal to the
//! current state is no new event, and a profile change rewrites the user's
//! member events in every room it is joined to.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use super::super::{MatrixError, RoomSpec};
use crate::model::{ConversationKind, Visibility};

/// A state event: who set it and its content.
#[derive(Clone, Debug, PartialEq)]
pub struct StateEvent {
    pub sender: OwnedUserId,
    pub content: Value,
    pub event_id: String,
}

/// Every room's current state, aliases, the directory and profiles.
pub struct Rooms {
    state: BTreeMap<(OwnedRoomId, String, String), StateEvent>,
    aliases: HashMap<OwnedRoomAliasId, OwnedRoomId>,
    directory: HashSet<OwnedRoomId>,
    profiles: HashMap<OwnedUserId, Value>,
    /// The version new rooms get (version 12, as Synapse's default).
    pub default_version: RoomVersionId,
    events: usize,
}

impl Default for Rooms {
    fn default() -> Self {
        Self {
            state: BTreeMap::new(),
            aliases: HashMap::new(),
            directory: HashSet::new(),
            profiles: HashMap::new(),
            default_version: RoomVersionId::V12,
            events: 0,
        }
    }
}

fn refused(status: u16, errcode: &str, error: &str) -> MatrixError {
    let body = json!({"errcode": errcode, "error": error}).to_string();
    MatrixError::from_status(status, body.as_bytes(), None)
}

/// The `users` a new room's power levels list, as Synapse builds them.
fn initial_users(version: &RoomVersionId, creator: &UserId, spec: &RoomSpec) -> Value {
    let mut users: serde_json::Map<String, Value> = spec
        .power_levels
        .iter()
        .map(|(user, level)| (user.to_string(), json!(level)))
        .collect();
    if !privileged_creators(version) {
        users.insert(creator.to_string(), json!(100));
    }
    Value::Object(users)
}

fn privileged_creators(version: &RoomVersionId) -> bool {
    version
        .rules()
        .is_some_and(|rules| rules.authorization.explicitly_privilege_room_creators)
}

impl Rooms {
    fn key(room: &RoomId, event_type: &str, state_key: &str) -> (OwnedRoomId, String, String) {
        (room.to_owned(), event_type.to_owned(), state_key.to_owned())
    }

    /// Sets a state event; equal content is the same event again.
    pub fn set(
        &mut self,
        room: &RoomId,
        sender: &UserId,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> String {
        let key = Self::key(room, event_type, state_key);
        if let Some(current) = self.state.get(&key).filter(|c| c.content == content) {
            return current.event_id.clone();
        }
        self.events += 1;
        let event_id = format!("$state{}", self.events);
        self.state.insert(
            key,
            StateEvent {
                sender: sender.to_owned(),
                content,
                event_id: event_id.clone(),
            },
        );
        event_id
    }

    pub fn get(&self, room: &RoomId, event_type: &str, state_key: &str) -> Option<&StateEvent> {
        self.state.get(&Self::key(room, event_type, state_key))
    }

    pub fn exists(&self, room: &RoomId) -> bool {
        self.get(room, "m.room.create", "").is_some()
    }

    /// A user's membership in a room (`join`, `invite`, `leave`), if any.
    pub fn membership(&self, room: &RoomId, user: &UserId) -> Option<String> {
        self.get(room, "m.room.member", user.as_str())
            .and_then(|event| event.content["membership"].as_str().map(str::to_owned))
    }

    /// Sets a membership; a join carries the user's profile, as Synapse's do.
    pub fn set_membership(
        &mut self,
        room: &RoomId,
        sender: &UserId,
        user: &UserId,
        membership: &str,
        is_direct: bool,
        reason: Option<&str>,
    ) {
        let mut content = match membership {
            "join" => self
                .profiles
                .get(user)
                .cloned()
                .unwrap_or_else(|| json!({})),
            _ => json!({}),
        };
        content["membership"] = json!(membership);
        if is_direct {
            content["is_direct"] = json!(true);
        }
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        self.set(room, sender, "m.room.member", user.as_str(), content);
    }

    /// Whether the room lets anyone join.
    pub fn is_public(&self, room: &RoomId) -> bool {
        self.get(room, "m.room.join_rules", "")
            .is_some_and(|event| event.content["join_rule"] == "public")
    }

    /// Takes the spec's alias, or refuses as Synapse does when it is taken.
    pub fn claim_alias(
        &self,
        spec: &RoomSpec,
        server: &str,
    ) -> Result<Option<OwnedRoomAliasId>, MatrixError> {
        let Some(localpart) = &spec.alias else {
            return Ok(None);
        };
        let alias = OwnedRoomAliasId::try_from(format!("#{localpart}:{server}"))
            .map_err(|_| refused(400, "M_INVALID_PARAM", "Invalid characters in room alias"))?;
        if self.aliases.contains_key(&alias) {
            return Err(refused(400, "M_ROOM_IN_USE", "Room alias already taken"));
        }
        Ok(Some(alias))
    }

    /// The state `createRoom` makes for `spec`, with `creator` joined.
    pub fn create(
        &mut self,
        room: &RoomId,
        creator: &UserId,
        spec: &RoomSpec,
        alias: Option<OwnedRoomAliasId>,
    ) {
        let version = self.default_version.clone();
        let mut create = json!({"room_version": version.as_str()});
        if spec.kind == Some(ConversationKind::Space) {
            create["type"] = json!("m.space");
        }
        self.set(room, creator, "m.room.create", "", create);
        self.set_membership(room, creator, creator, "join", false, None);
        let levels = json!({
            "users": initial_users(&version, creator, spec),
            "users_default": 0, "events_default": 0, "state_default": 50,
            "ban": 50, "kick": 50, "redact": 50, "invite": 50,
        });
        self.set(room, creator, "m.room.power_levels", "", levels);
        let public =
            spec.visibility == Visibility::Public && spec.kind != Some(ConversationKind::Direct);
        let rule = if public { "public" } else { "invite" };
        self.set(
            room,
            creator,
            "m.room.join_rules",
            "",
            json!({"join_rule": rule}),
        );
        if let Some(name) = &spec.name {
            self.set(room, creator, "m.room.name", "", json!({"name": name}));
        }
        if let Some(topic) = &spec.topic {
            self.set(room, creator, "m.room.topic", "", json!({"topic": topic}));
        }
        if let Some(avatar) = &spec.avatar {
            self.set(room, creator, "m.room.avatar", "", json!({"url": avatar}));
        }
        if let Some(parent) = &spec.parent {
            let via = json!({"via": [creator.server_name()], "canonical": true});
            self.set(room, creator, "m.space.parent", parent.as_str(), via);
        }
        if let Some(alias) = alias {
            self.set(
                room,
                creator,
                "m.room.canonical_alias",
                "",
                json!({"alias": alias}),
            );
            self.aliases.insert(alias, room.to_owned());
        }
        let direct = spec.kind == Some(ConversationKind::Direct);
        for user in &spec.invite {
            self.set_membership(room, creator, user, "invite", direct, None);
        }
        if public {
            self.directory.insert(room.to_owned());
        }
    }

    pub fn resolve(&self, alias: &ruma::RoomAliasId) -> Option<OwnedRoomId> {
        self.aliases.get(alias).cloned()
    }

    /// Checks a state event before it is set, as the auth rules would.
    pub fn check(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<(), MatrixError> {
        let Some(create) = self.get(room, "m.room.create", "") else {
            return Err(refused(403, "M_FORBIDDEN", "Unknown room"));
        };
        if self.membership(room, sender).as_deref() != Some("join") {
            return Err(refused(403, "M_FORBIDDEN", "User not in room"));
        }
        let creator = &create.sender;
        let own_join = state_key == sender.as_str() && content["membership"] == "join";
        let version = create.content["room_version"]
            .as_str()
            .and_then(|v| RoomVersionId::try_from(v).ok())
            .unwrap_or(RoomVersionId::V12);
        match event_type {
            "m.room.member" if !own_join => Err(refused(403, "M_FORBIDDEN", "Only your own join")),
            "m.room.member" => Ok(()),
            _ if sender != creator => Err(refused(403, "M_FORBIDDEN", "Insufficient power level")),
            "m.room.power_levels"
                if privileged_creators(&version)
                    && content["users"].get(creator.as_str()).is_some() =>
            {
                Err(refused(
                    400,
                    "M_BAD_JSON",
                    "Creator user IDs must not appear in content.users",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Every state event of a room, as the client-server API lists them.
    pub fn all(&self, room: &RoomId) -> Vec<Value> {
        self.state
            .iter()
            .filter(|((id, _, _), _)| id == room)
            .map(|((_, event_type, state_key), event)| {
                json!({
                    "type": event_type, "state_key": state_key, "sender": event.sender,
                    "content": event.content, "event_id": event.event_id,
                })
            })
            .collect()
    }

    pub fn set_listed(&mut self, room: &RoomId, public: bool) {
        if public {
            self.directory.insert(room.to_owned());
        } else {
            self.directory.remove(room);
        }
    }

    pub fn is_listed(&self, room: &RoomId) -> bool {
        self.directory.contains(room)
    }

    /// Changes a profile field and, as Synapse does, rewrites the user's
    /// member event in every room it is joined to (a per-room name is lost).
    pub fn set_profile(&mut self, user: &UserId, field: &str, value: Value) {
        let profile = self
            .profiles
            .entry(user.to_owned())
            .or_insert_with(|| json!({}));
        profile[field] = value;
        let rooms: Vec<OwnedRoomId> = self
            .state
            .iter()
            .filter(|((_, event_type, state_key), event)| {
                event_type == "m.room.member"
                    && state_key == user.as_str()
                    && event.content["membership"] == "join"
            })
            .map(|((room, _, _), _)| room.clone())
            .collect();
        for room in rooms {
            self.set_membership(&room, user, user, "join", false, None);
        }
    }
}
