//! The message an edit or a delete is about, read with what decides whether
//! the caller may change it: the conversation, the acting user's
//! membership, and the request's `Idempotency-Key` record, in two reads
//! made at once.

use ruma::OwnedRoomId;
use time::OffsetDateTime;

use super::access::ensure_active;
use crate::api::{ApiError, ApiRequest};
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::model::{IdempotencyRecord, Member, Message, MessageId, MessageStatus};
use crate::store::Store;

/// A message to change, and the context of the change.
pub struct Target {
    pub message: Message,
    pub room_id: OwnedRoomId,
    /// Whether nothing waits in the conversation's outbox.
    pub outbox_empty: bool,
    /// The acting user's membership.
    pub member: Member,
    /// The acting user.
    pub user: AppUserId,
    /// The record this request's key would write (if it has a key).
    pub idempotency: Option<IdempotencyRecord>,
    /// The record the key already wrote, if it was used before.
    pub used_key: Option<IdempotencyRecord>,
}

impl Target {
    /// Reads the message `{message_id}` of conversation `{id}` for a change
    /// by `user` (the caller, or `as_user` for a service token), under the
    /// request's `Idempotency-Key` in `scope_kind` (e.g. `edit`). `404` when
    /// the user cannot see the conversation or the message is not in it.
    pub async fn read<S: Store>(
        store: &S,
        namer: &PuppetNamer,
        request: &ApiRequest,
        user: AppUserId,
        scope_kind: &str,
    ) -> Result<Self, ApiError> {
        let id: ConversationId = request.conversation_id()?;
        let message_id: MessageId = request.path_param("message_id")?;
        let key = request.idempotency_key()?;
        let scope = key.map(|key| {
            format!(
                "{scope_kind}:{}",
                IdempotencyRecord::scope(&user, &id, &key)
            )
        });
        let puppet = namer.user_id(&user);
        let (context, message) = tokio::join!(
            store.send_context(&id, &puppet, scope.as_deref()),
            store.message(&id, message_id)
        );
        let context = context?;
        let not_found = || ApiError::NotFound(format!("conversation '{id}' not found"));
        let conversation = context.conversation.ok_or_else(not_found)?;
        let member = context
            .member
            .ok_or_else(|| request.caller.not_a_member(&user, &id))?;
        ensure_active(&conversation)?;
        let message = message?.ok_or_else(|| {
            ApiError::NotFound(format!("no message '{message_id}' in conversation '{id}'"))
        })?;
        let room_id = conversation
            .room_id
            .ok_or_else(|| ApiError::Conflict(format!("conversation '{id}' has no room yet")))?;
        let idempotency = scope.map(|scope| IdempotencyRecord {
            scope,
            body_hash: request.body_hash(),
            message_id,
            conversation_id: id.clone(),
            expires_at: OffsetDateTime::now_utc() + IdempotencyRecord::LIFETIME,
        });
        Ok(Self {
            message,
            room_id,
            outbox_empty: conversation.outbox <= 0,
            member,
            user,
            idempotency,
            used_key: context.idempotency,
        })
    }

    /// Whether the acting user wrote the message.
    pub fn by_sender(&self) -> bool {
        self.message.sender.user_id.as_ref() == Some(&self.user)
    }

    /// Whether the request's key was used before: `Ok(true)` for the same
    /// body (answer as things are now), `409` for another body.
    pub fn replayed(&self) -> Result<bool, ApiError> {
        match (&self.used_key, &self.idempotency) {
            (Some(used), Some(ours)) if used.body_hash == ours.body_hash => Ok(true),
            (Some(_), _) => Err(ApiError::Conflict(
                "this Idempotency-Key was used before with a different request body".into(),
            )),
            (None, _) => Ok(false),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.message.status == MessageStatus::Deleted
    }
}
