//! The JSON the application receives for each thing that happened in Matrix
//! (docs/API.md, "Events to the application"; `InboundEvent` in
//! docs/openapi.yaml).

use ruma::OwnedEventId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::ids::ConversationId;
use crate::model::{Format, MatrixFile, MentionList, MessageId, MsgType, Sender};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "message.created")]
    MessageCreated,
    #[serde(rename = "message.edited")]
    MessageEdited,
    #[serde(rename = "message.deleted")]
    MessageDeleted,
    #[serde(rename = "reaction.added")]
    ReactionAdded,
    #[serde(rename = "reaction.removed")]
    ReactionRemoved,
    #[serde(rename = "member.joined")]
    MemberJoined,
    #[serde(rename = "member.left")]
    MemberLeft,
    #[serde(rename = "typing")]
    Typing,
    #[serde(rename = "receipt")]
    Receipt,
}

impl EventKind {
    /// The name serde gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageCreated => "message.created",
            Self::MessageEdited => "message.edited",
            Self::MessageDeleted => "message.deleted",
            Self::ReactionAdded => "reaction.added",
            Self::ReactionRemoved => "reaction.removed",
            Self::MemberJoined => "member.joined",
            Self::MemberLeft => "member.left",
            Self::Typing => "typing",
            Self::Receipt => "receipt",
        }
    }
}

/// A member's state after a `member.*` event, as Matrix names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    Join,
    Leave,
    Ban,
}

/// One event for the application. Fields a kind has no use for are left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub conversation_id: ConversationId,
    /// The message it is about: created, edited, deleted, or read up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// The Matrix event (for a receipt, the event read up to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<OwnedEventId>,
    /// Who did it: the author, the editor, the redactor, the member, the reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The formatted body, sanitised to the tags Matrix clients allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgtype: Option<MsgType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<MatrixFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// The root of the thread the message is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
    /// Whom the message mentions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<MentionList>,
    /// A reaction's key (an emoji, or a short text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why: a redaction's or a membership change's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
    /// Who changed someone else's membership (a kick, a ban).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Sender>,
    /// Who is typing now (Matrix users; the application's own are left
    /// out): an empty list means nobody is any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typing: Option<Vec<Sender>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_type: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// SQS's deduplication id: a hash of what identifies the event.
    #[serde(skip)]
    pub deduplication_id: String,
}

impl InboundEvent {
    /// An event of `kind`, identified (for deduplication) by `identity`:
    /// the Matrix event id, and whatever else tells it apart.
    pub fn new(
        kind: EventKind,
        conversation_id: ConversationId,
        occurred_at: OffsetDateTime,
        identity: &[&str],
    ) -> Self {
        let mut hash = Sha256::new();
        hash.update(kind.as_str());
        for part in identity {
            hash.update([0]);
            hash.update(part);
        }
        let deduplication_id = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Self {
            kind,
            conversation_id,
            message_id: None,
            event_id: None,
            sender: None,
            body: None,
            format: None,
            html: None,
            msgtype: None,
            attachments: Vec::new(),
            reply_to: None,
            thread_id: None,
            mentions: None,
            key: None,
            reason: None,
            membership: None,
            actor: None,
            typing: None,
            receipt_type: None,
            occurred_at,
            deduplication_id,
        }
    }

    /// The SQS message body.
    pub fn to_json(&self) -> String {
        // Strings, ids and times only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_json_leaves_out_what_a_kind_does_not_use() {
        let mut event = InboundEvent::new(
            EventKind::MemberLeft,
            ConversationId::parse("grp-1").unwrap(),
            OffsetDateTime::UNIX_EPOCH,
            &["$e"],
        );
        event.membership = Some(Membership::Ban);
        event.reason = Some("spam".into());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&event.to_json()).unwrap(),
            json!({
                "type": "member.left",
                "conversation_id": "grp-1",
                "membership": "ban",
                "reason": "spam",
                "occurred_at": "1970-01-01T00:00:00Z",
            })
        );
        assert_eq!(event.deduplication_id.len(), 64);
        let other = InboundEvent::new(
            EventKind::MemberJoined,
            ConversationId::parse("grp-1").unwrap(),
            OffsetDateTime::UNIX_EPOCH,
            &["$e"],
        );
        assert_ne!(event.deduplication_id, other.deduplication_id);
    }
}
