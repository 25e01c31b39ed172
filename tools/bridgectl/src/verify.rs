//! `bridgectl verify`: reads the table and Matrix (as the bridge's bot) and
//! reports every conversation of the export that differs from it:
//!
//! - its mappings: the conversation is active with a room, the room leads
//!   back to it, and the conversation's alias names that room (so no second
//!   room was made for it);
//! - its room's name;
//! - its members: each puppet joined, each Matrix user joined or invited,
//!   no other puppet joined; each at its role's power level; each puppet
//!   named as the export says (its per-conversation name, else its global
//!   one).

use std::collections::{BTreeMap, HashMap};

use bridge::error::Error;
use bridge::handlers::provision::Provisioning;
use bridge::handlers::provision::plan::{CreateConversation, MemberRef, member_ids};
use bridge::ids::{AppUserId, ConversationId};
use bridge::matrix::Matrix;
use bridge::model::{ConversationStatus, Role};
use bridge::queue::RetryQueue;
use bridge::store::Store;
use futures::{StreamExt, stream};
use ruma::OwnedUserId;
use serde_json::Value;

use crate::input::Export;

/// A member as the export wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    puppet: bool,
    role: Role,
    display_name: Option<String>,
}

/// A conversation of the export, with all its members.
struct Expected<'a> {
    conversation: &'a CreateConversation,
    members: BTreeMap<OwnedUserId, Wanted>,
}

/// How a conversation differs, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub conversation: ConversationId,
    pub what: String,
}

pub struct Verify<'a, S, M, Q> {
    pub service: &'a Provisioning<S, M, Q>,
    pub concurrency: usize,
}

impl<S: Store, M: Matrix, Q: RetryQueue> Verify<'_, S, M, Q> {
    /// Every difference between the export and what is provisioned.
    pub async fn all(&self, export: &Export) -> Vec<Difference> {
        let globals: HashMap<&AppUserId, &str> = export
            .users
            .iter()
            .filter_map(|line| Some((&line.value.user_id, line.value.display_name.as_deref()?)))
            .collect();
        let mut differences = Vec::new();
        let expected = self.expected(export, &globals, &mut differences);
        let found: Vec<Vec<Difference>> = stream::iter(expected)
            .map(|expected| async move {
                let id = &expected.conversation.id;
                let what = match self.check(&expected).await {
                    Ok(what) => what,
                    Err(err) => vec![format!(
                        "could not be read: {}",
                        bridge::api::ErrorChain(&err)
                    )],
                };
                what.into_iter()
                    .map(|what| Difference {
                        conversation: id.clone(),
                        what,
                    })
                    .collect()
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        differences.extend(found.into_iter().flatten());
        differences.sort_by(|a, b| (&a.conversation, &a.what).cmp(&(&b.conversation, &b.what)));
        differences
    }

    /// The members each conversation should have: its line's, then the
    /// membership lines' (a later line wins).
    fn expected<'e>(
        &self,
        export: &'e Export,
        globals: &HashMap<&AppUserId, &str>,
        differences: &mut Vec<Difference>,
    ) -> Vec<Expected<'e>> {
        let namer = self.service.namer();
        let bot = self.service.matrix().bot();
        let wanted = |who: &MemberRef, role: Role, name: &Option<String>| {
            let (matrix_user_id, user) = member_ids(namer, bot, who).ok()?;
            let display_name = name.clone().or_else(|| {
                user.as_ref()
                    .and_then(|user| globals.get(user).map(|name| (*name).to_owned()))
            });
            Some((
                matrix_user_id,
                Wanted {
                    puppet: user.is_some(),
                    role,
                    display_name: display_name.filter(|_| user.is_some()),
                },
            ))
        };
        let mut all: BTreeMap<ConversationId, Expected<'e>> = BTreeMap::new();
        for line in &export.conversations {
            let conversation = &line.value;
            let members = conversation
                .members
                .iter()
                .filter_map(|member| {
                    let who = match (&member.user_id, &member.matrix_user_id) {
                        (Some(user), _) => MemberRef::App(user.clone()),
                        (None, Some(matrix_user)) => matrix_user.parse().ok()?,
                        (None, None) => return None,
                    };
                    wanted(&who, member.role, &member.display_name)
                })
                .collect();
            all.insert(
                conversation.id.clone(),
                Expected {
                    conversation,
                    members,
                },
            );
        }
        for line in &export.memberships {
            let membership = &line.value;
            let Some(expected) = all.get_mut(&membership.conversation_id) else {
                differences.push(Difference {
                    conversation: membership.conversation_id.clone(),
                    what: format!(
                        "membership line {} names a conversation not in the export",
                        line.number
                    ),
                });
                continue;
            };
            if let Some((user, member)) = membership
                .change()
                .ok()
                .and_then(|(who, put)| wanted(&who, put.role, &put.display_name))
            {
                expected.members.insert(user, member);
            }
        }
        all.into_values().collect()
    }

    async fn check(&self, expected: &Expected<'_>) -> Result<Vec<String>, Error> {
        let id = &expected.conversation.id;
        let store = self.service.store();
        let matrix = self.service.matrix();
        let Some(stored) = store.conversation(id).await? else {
            return Ok(vec![
                "not provisioned: the table has no conversation".into(),
            ]);
        };
        if stored.status != ConversationStatus::Active {
            return Ok(vec![format!("is {} in the table", stored.status.as_str())]);
        }
        let Some(room) = stored.room_id else {
            return Ok(vec!["has no room in the table".into()]);
        };
        let mut what = Vec::new();
        if store.conversation_by_room(&room).await?.as_ref() != Some(id) {
            what.push(format!("room {room} does not lead back to it in the table"));
        }
        match matrix
            .resolve_alias(&self.service.namer().room_alias(id))
            .await?
        {
            Some(aliased) if aliased == room => {}
            Some(aliased) => what.push(format!(
                "its alias names room {aliased}, not its room {room}"
            )),
            None => what.push("its alias names no room".into()),
        }
        let state: HashMap<(String, String), Value> = matrix
            .room_state(&room)
            .await?
            .into_iter()
            .filter_map(|event| {
                let key = (
                    event["type"].as_str()?.to_owned(),
                    event["state_key"].as_str()?.to_owned(),
                );
                Some((key, event["content"].clone()))
            })
            .collect();
        let content = |event_type: &str, key: &str| {
            state
                .get(&(event_type.to_owned(), key.to_owned()))
                .cloned()
                .unwrap_or(Value::Null)
        };
        if let Some(name) = &expected.conversation.name {
            let actual = content("m.room.name", "")["name"].clone();
            if actual.as_str() != Some(name.trim()) {
                what.push(format!(
                    "its room is named {actual}, not \"{}\"",
                    name.trim()
                ));
            }
        }
        let levels = content("m.room.power_levels", "");
        let default = levels["users_default"].as_i64().unwrap_or(0);
        for (user, wanted) in &expected.members {
            let member = content("m.room.member", user.as_str());
            let membership = member["membership"].as_str().unwrap_or("absent");
            let present = match wanted.puppet {
                true => membership == "join",
                false => matches!(membership, "join" | "invite"),
            };
            if !present {
                let should = if wanted.puppet {
                    "joined"
                } else {
                    "joined or invited"
                };
                what.push(format!("{user} is {membership}, not {should}"));
            }
            let level = levels["users"][user.as_str()].as_i64().unwrap_or(default);
            if level != wanted.role.power_level() {
                what.push(format!(
                    "{user} has power level {level}, not {} ({:?})",
                    wanted.role.power_level(),
                    wanted.role
                ));
            }
            if let Some(name) = wanted.display_name.as_deref().filter(|_| present) {
                let actual = &member["displayname"];
                if actual.as_str() != Some(name.trim()) {
                    what.push(format!(
                        "{user} is named {actual} in the room, not \"{}\"",
                        name.trim()
                    ));
                }
            }
        }
        for ((event_type, key), event) in &state {
            let joined_puppet = event_type == "m.room.member"
                && event["membership"] == "join"
                && OwnedUserId::try_from(key.as_str())
                    .ok()
                    .is_some_and(|user| {
                        self.service.namer().app_user(&user).is_some()
                            && !expected.members.contains_key(&user)
                    });
            if joined_puppet {
                what.push(format!("{key} is joined but not a member"));
            }
        }
        Ok(what)
    }
}
