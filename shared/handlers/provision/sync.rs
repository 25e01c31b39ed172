//! Bringing a room or one of its members in Matrix in line with what the
//! table says, and settling the [`PendingSync`] that asked for it: what the
//! provision function does on the spot and the retry function does later.
//!
//! Every step reads the room's state first and changes only what differs,
//! so running a sync again (a retry, a crash, a newer change) is harmless:
//! - a member: a puppet is invited by the bot and joins as itself (after
//!   registering, if it never was), a plain Matrix user is invited; its
//!   power level is its role's; a puppet's per-conversation display name is
//!   its member event. A removed puppet leaves; a removed Matrix user is
//!   kicked (or its invite withdrawn); its power level entry goes. A
//!   member a Matrix moderator kicked or banned is not put back (the
//!   removal is recorded on it, and the sync ends with
//!   [`Error::Removed`]), unless the change asked for it
//!   ([`PendingSync::readmit`]): then a ban is lifted first.
//! - the room: its name, topic and avatar; once archived, every puppet
//!   leaves, the join rule becomes `invite` and the room leaves the
//!   directory.
//!
//! Power levels are changed by reading `m.room.power_levels` and writing it
//! back with only the member's entry changed, so whatever else the room
//! says (the creator's entry before room version 12, custom levels) stays.

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use crate::error::Error;
use crate::handlers::outbound::removed_by_moderator;
use crate::handlers::puppets::{WantedPuppet, ensure_puppets};
use crate::matrix::Matrix;
use crate::metrics::Metrics;
use crate::model::{Conversation, ConversationStatus, Member, PendingSync, SyncSubject};
use crate::store::{MemberChange, Store, StoreError, SyncContext};

const MEMBER: &str = "m.room.member";
const POWER_LEVELS: &str = "m.room.power_levels";

/// Runs `sync`: brings its subject in line with the table (as `context`
/// says, or as read now), then settles it. When a newer change replaced it
/// meanwhile, the subject is brought in line once more with the newer
/// state, whose own delivery settles it; so the last change wins in Matrix
/// too. A member found removed by a Matrix moderator is [`Error::Removed`],
/// a refusal for good: the caller gives the sync up.
pub async fn run<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    metrics: &Metrics,
    sync: &PendingSync,
    context: Option<SyncContext>,
) -> Result<(), Error> {
    let context = match context {
        Some(context) => context,
        None => {
            store
                .sync_context(&sync.conversation_id, &sync.subject)
                .await?
        }
    };
    bring_in_line(store, matrix, metrics, sync, &context).await?;
    match store.settle_sync(sync).await {
        Err(StoreError::Rejected) => {
            let newer = store
                .sync_context(&sync.conversation_id, &sync.subject)
                .await?;
            let newer_sync = newer.sync.as_ref().unwrap_or(sync);
            bring_in_line(store, matrix, metrics, newer_sync, &newer).await
        }
        other => Ok(other?),
    }
}

/// Drops a sync that failed for good, so the outbox moves on. A sync that
/// a newer change replaced meanwhile is the newer change's to settle.
pub async fn give_up<S: Store>(store: &S, sync: &PendingSync) -> Result<(), Error> {
    match store.settle_sync(sync).await {
        Err(StoreError::Rejected) => Ok(()),
        other => Ok(other?),
    }
}

async fn bring_in_line<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    metrics: &Metrics,
    sync: &PendingSync,
    context: &SyncContext,
) -> Result<(), Error> {
    let conversation = context.conversation.as_ref().ok_or_else(|| {
        Error::Inconsistent("a sync of a conversation that does not exist".into())
    })?;
    let room = conversation
        .room_id
        .as_ref()
        .ok_or_else(|| Error::Inconsistent("a sync of a conversation without a room".into()))?;
    match &sync.subject {
        SyncSubject::Room => sync_room(store, matrix, conversation, room).await,
        SyncSubject::Member {
            matrix_user_id,
            user_id,
        } => {
            let puppet = user_id.is_some();
            let member = context.member.as_ref();
            let joined = sync_member(
                store,
                matrix,
                metrics,
                room,
                matrix_user_id,
                puppet,
                member,
                sync.readmit,
            )
            .await?;
            if let Some(member) = member.filter(|member| joined && !member.joined) {
                match store
                    .mark_joined(&member.conversation_id, &member.matrix_user_id)
                    .await
                {
                    // Removed meanwhile: the newer change's sync sees to it.
                    Err(StoreError::Rejected) => {}
                    other => other?,
                }
            }
            Ok(())
        }
    }
}

/// A user's membership in a room, read as the bot: `join`, `invite`,
/// `leave`, `ban`, or `leave` for none.
async fn membership<M: Matrix>(
    matrix: &M,
    room: &RoomId,
    user: &UserId,
) -> Result<(String, Value), Error> {
    let content = matrix
        .state(room, MEMBER, user.as_str())
        .await?
        .unwrap_or_else(|| json!({}));
    let membership = content["membership"].as_str().unwrap_or("leave").to_owned();
    Ok((membership, content))
}

/// Brings one member in line: `member` as the table has it, or `None` for
/// one removed. Returns whether the user is joined to the room now.
/// `readmit`: the application asked for the member back even if a Matrix
/// moderator removed it; else that is [`Error::Removed`].
#[allow(clippy::too_many_arguments)]
pub(super) async fn sync_member<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    metrics: &Metrics,
    room: &RoomId,
    user: &UserId,
    puppet: bool,
    member: Option<&Member>,
    readmit: bool,
) -> Result<bool, Error> {
    let (current, content) = membership(matrix, room, user).await?;
    let in_room = matches!(current.as_str(), "join" | "invite");
    if let Some(member) = member.filter(|_| !in_room && content.get("membership").is_some()) {
        may_come_back(store, matrix, room, member, readmit).await?;
    }
    let Some(member) = member else {
        if in_room {
            if puppet {
                matrix.leave(room, user).await?;
            } else {
                matrix
                    .kick(room, user, Some("removed from the conversation"))
                    .await?;
            }
        }
        set_power_level(matrix, room, user, 0).await?;
        return Ok(false);
    };
    let joined = if puppet {
        if current != "join" {
            if current != "invite" {
                register(store, matrix, metrics, member).await?;
                matrix.invite(room, user).await?;
            }
            matrix.join(room, user).await?;
        }
        if let Some(name) = &member.display_name {
            set_room_name(matrix, room, user, name, current == "join", content).await?;
        }
        true
    } else {
        if !in_room {
            matrix.invite(room, user).await?;
        }
        current == "join"
    };
    set_power_level(matrix, room, user, member.role.power_level()).await?;
    Ok(joined)
}

/// Whether a member that lost its membership may be put back: not when a
/// Matrix moderator kicked or banned it, unless `readmit` (the
/// application's explicit decision), which lifts a ban first. A removal is
/// recorded on the member, as the webhook records one.
async fn may_come_back<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    room: &RoomId,
    member: &Member,
    readmit: bool,
) -> Result<(), Error> {
    let user = &member.matrix_user_id;
    let Some(removal) = removed_by_moderator(matrix, room, user).await? else {
        return Ok(());
    };
    if readmit {
        tracing::info!(%user, %room, by = %removal.by, "putting back a member a moderator removed, as the application asked");
        if removal.banned {
            matrix.unban(room, user).await?;
        }
        return Ok(());
    }
    tracing::info!(%user, %room, by = %removal.by, "member was removed by a moderator; not putting it back");
    let change = MemberChange::Left {
        conversation_id: member.conversation_id.clone(),
        matrix_user_id: user.clone(),
        removal: Some(removal.clone()),
    };
    store.store_inbound(&[], &[change]).await?;
    Err(Error::Removed(removal))
}

/// Registers a member's puppet if it never was; its per-conversation name
/// becomes the global name of a puppet that has none.
async fn register<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    metrics: &Metrics,
    member: &Member,
) -> Result<(), Error> {
    let Some(user) = &member.user_id else {
        return Ok(());
    };
    let wanted = [WantedPuppet {
        user: user.clone(),
        matrix_user_id: member.matrix_user_id.clone(),
        display_name: member.display_name.clone(),
        avatar: None,
        defaults_only: true,
    }];
    ensure_puppets(store, matrix, metrics, &wanted)
        .await
        .map(drop)
}

/// Sets a joined puppet's display name in one room: its member event, with
/// the rest of the event (its avatar) kept. `content` is the member event
/// as read before, if the puppet was joined then.
async fn set_room_name<M: Matrix>(
    matrix: &M,
    room: &RoomId,
    user: &UserId,
    name: &str,
    was_joined: bool,
    content: Value,
) -> Result<(), Error> {
    let mut content = if was_joined {
        content
    } else {
        membership(matrix, room, user).await?.1
    };
    if content["displayname"].as_str() == Some(name) {
        return Ok(());
    }
    content["membership"] = json!("join");
    content["displayname"] = json!(name);
    matrix
        .put_state(room, user, MEMBER, user.as_str(), &content)
        .await?;
    Ok(())
}

/// Sets a user's power level with a read-modify-write of the room's power
/// levels; a level equal to `users_default` is no entry. Only this user's
/// entry changes.
async fn set_power_level<M: Matrix>(
    matrix: &M,
    room: &RoomId,
    user: &UserId,
    level: i64,
) -> Result<(), Error> {
    let Some(mut levels) = matrix.state(room, POWER_LEVELS, "").await? else {
        return Err(Error::Inconsistent(format!(
            "room {room} has no power levels"
        )));
    };
    let default = levels["users_default"].as_i64().unwrap_or(0);
    let listed = levels["users"].get(user.as_str()).and_then(Value::as_i64);
    let wanted = (level != default).then_some(level);
    if listed == wanted {
        return Ok(());
    }
    if !levels["users"].is_object() {
        levels["users"] = json!({});
    }
    if let Some(users) = levels["users"].as_object_mut() {
        match wanted {
            Some(level) => users.insert(user.to_string(), json!(level)),
            None => users.remove(user.as_str()),
        };
    }
    matrix
        .put_state(room, matrix.bot(), POWER_LEVELS, "", &levels)
        .await?;
    Ok(())
}

/// Brings the room in line: name, topic and avatar, and closed once the
/// conversation is archived. One read of the room's state decides it all.
async fn sync_room<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    conversation: &Conversation,
    room: &RoomId,
) -> Result<(), Error> {
    let state = matrix.room_state(room).await?;
    let current = |event_type: &str, state_key: &str| -> Value {
        state
            .iter()
            .find(|event| event["type"] == event_type && event["state_key"] == state_key)
            .map(|event| event["content"].clone())
            .unwrap_or(Value::Null)
    };
    let bot = matrix.bot();
    let wanted = [
        (
            "m.room.name",
            conversation.name.as_ref().map(|name| json!({"name": name})),
        ),
        (
            "m.room.topic",
            conversation
                .topic
                .as_ref()
                .map(|topic| json!({"topic": topic})),
        ),
        (
            "m.room.avatar",
            conversation
                .avatar_url
                .as_ref()
                .map(|url| json!({"url": url})),
        ),
    ];
    for (event_type, content) in wanted {
        if let Some(content) = content.filter(|content| *content != current(event_type, "")) {
            matrix
                .put_state(room, bot, event_type, "", &content)
                .await?;
        }
    }
    if conversation.status != ConversationStatus::Archived {
        return Ok(());
    }
    let Some((_, members)) = store.conversation_with_members(&conversation.id).await? else {
        return Ok(());
    };
    let puppets: Vec<OwnedUserId> = members
        .into_iter()
        .filter(|member| member.user_id.is_some())
        .map(|member| member.matrix_user_id)
        .filter(|user| {
            matches!(
                current(MEMBER, user.as_str())["membership"].as_str(),
                Some("join" | "invite")
            )
        })
        .collect();
    for user in &puppets {
        matrix.leave(room, user).await?;
    }
    if current("m.room.join_rules", "")["join_rule"] != "invite" {
        matrix
            .put_state(
                room,
                bot,
                "m.room.join_rules",
                "",
                &json!({"join_rule": "invite"}),
            )
            .await?;
    }
    matrix.set_directory_visibility(room, false).await?;
    Ok(())
}
