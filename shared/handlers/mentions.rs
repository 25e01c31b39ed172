//! A send's `mentions`, checked and resolved: the mentioned users must be
//! members (`400`), `room: true` (`@room`) is for moderators, owners and
//! service tokens' notices (`403`); each user becomes its puppet's Matrix
//! id for `m.mentions`, and its name a pill in the message's HTML.
//!
//! Only a send with mentions pays for this: one read of the conversation's
//! members, and one of the puppets whose member has no display name.

use ruma::OwnedUserId;
use serde::Deserialize;

use crate::api::ApiError;
use crate::api::caller::Caller;
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::pills::{self, Pill};
use crate::model::{Mentioned, Mentions, Role};
use crate::store::Store;

/// The most users one message may mention.
pub const MAX_MENTIONS: usize = 100;

/// `mentions` as a send takes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MentionsInput {
    #[serde(default)]
    pub user_ids: Vec<AppUserId>,
    #[serde(default)]
    pub room: bool,
}

/// Who sends the message that mentions.
pub struct Mentioner<'a> {
    pub conversation: &'a ConversationId,
    pub caller: &'a Caller,
    /// The user whose puppet sends it (for a notice, the service caller).
    pub user: &'a AppUserId,
    pub sender: &'a ruma::UserId,
    /// A notice, from the bridge's bot: it need not be a member.
    pub notice: bool,
}

/// Mentions checked against the conversation, with the names they go by.
#[derive(Debug)]
pub struct Resolved {
    pub mentions: Mentions,
    names: Vec<(OwnedUserId, String)>,
}

impl Resolved {
    /// The message's HTML with the mentioned users' names as pills: its
    /// rendered `html` (markdown), else its plain `body` as HTML. `html`
    /// as it was when no name appears in the text.
    pub fn with_pills(&self, body: &str, html: Option<String>) -> Option<String> {
        let pills: Vec<Pill<'_>> = self
            .names
            .iter()
            .map(|(user_id, name)| Pill { user_id, name })
            .collect();
        let source = html.clone().unwrap_or_else(|| pills::plain_html(body));
        pills::insert(&source, &pills).or(html)
    }
}

/// Checks and resolves `input`; `None` when it mentions nobody.
pub async fn resolve<S: Store>(
    store: &S,
    namer: &PuppetNamer,
    by: &Mentioner<'_>,
    input: Option<&MentionsInput>,
) -> Result<Option<Resolved>, ApiError> {
    let Some(input) = input.filter(|input| !input.user_ids.is_empty() || input.room) else {
        return Ok(None);
    };
    if input.user_ids.len() > MAX_MENTIONS {
        return Err(ApiError::InvalidRequest(format!(
            "mentions.user_ids: at most {MAX_MENTIONS} users"
        )));
    }
    let (_, members) = store
        .conversation_with_members(by.conversation)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("conversation '{}' not found", by.conversation))
        })?;
    let present = |user_id: &ruma::UserId| {
        members
            .iter()
            .find(|member| member.matrix_user_id == user_id && member.removed.is_none())
    };
    if !by.notice {
        let Some(sender) = present(by.sender) else {
            return Err(by.caller.not_a_member(by.user, by.conversation));
        };
        if input.room && sender.role == Role::Member {
            return Err(ApiError::Forbidden(
                "mentions.room: only moderators and owners may mention the whole room".into(),
            ));
        }
    }
    let mut users = Vec::new();
    let mut names = Vec::new();
    let mut unnamed = Vec::new();
    for user in &input.user_ids {
        let matrix_user_id = namer.user_id(user);
        if users
            .iter()
            .any(|seen: &Mentioned| seen.matrix_user_id == matrix_user_id)
        {
            continue;
        }
        let member = present(&matrix_user_id).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "mentions.user_ids: '{user}' is not a member of this conversation"
            ))
        })?;
        match &member.display_name {
            Some(name) => names.push((matrix_user_id.clone(), name.clone())),
            None => unnamed.push(user.clone()),
        }
        users.push(Mentioned {
            matrix_user_id,
            user_id: Some(user.clone()),
        });
    }
    if !unnamed.is_empty() {
        let puppets = store.puppets(&unnamed).await?;
        for user in unnamed {
            let name = puppets
                .iter()
                .find(|puppet| puppet.user_id == user)
                .and_then(|puppet| puppet.display_name.clone())
                .unwrap_or_else(|| user.as_str().to_owned());
            names.push((namer.user_id(&user), name));
        }
    }
    Ok(Some(Resolved {
        mentions: Mentions {
            users,
            room: input.room,
        },
        names,
    }))
}
