//! The JSON shapes the API answers with (docs/API.md; their schemas are in
//! docs/openapi.yaml, which tests/stack/openapi.rs holds them to), built
//! from the records.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId};
use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::{AppUserId, ConversationId};
use crate::media::MediaInfo;
use crate::model::{
    Attachment, Conversation, ConversationKind, ConversationStatus, Format, MatrixFile, MediaId,
    MediaRecord, Member, MentionList, Message, MessageId, MessageStatus, MsgType, Origin,
    ReactionCount, Removal, Role, Sender, Visibility,
};

#[derive(Serialize)]
pub struct MemberView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a AppUserId>,
    matrix_user_id: &'a OwnedUserId,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
    /// Set when a Matrix moderator kicked or banned the member: it is not
    /// in the room, and is put back only by a `PUT` with `"rejoin": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    removed: Option<&'a Removal>,
}

impl<'a> From<&'a Member> for MemberView<'a> {
    fn from(member: &'a Member) -> Self {
        Self {
            user_id: member.user_id.as_ref(),
            matrix_user_id: &member.matrix_user_id,
            role: member.role,
            display_name: member.display_name.as_deref(),
            removed: member.removed.as_ref(),
        }
    }
}

#[derive(Serialize)]
pub struct ConversationView<'a> {
    id: &'a ConversationId,
    kind: ConversationKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    visibility: Visibility,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<&'a ConversationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar_url: Option<&'a str>,
    room_id: Option<&'a OwnedRoomId>,
    status: ConversationStatus,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    members: Vec<MemberView<'a>>,
}

impl<'a> ConversationView<'a> {
    pub fn new(conversation: &'a Conversation, members: &'a [Member]) -> Self {
        Self {
            id: &conversation.id,
            kind: conversation.kind,
            name: conversation.name.as_deref(),
            topic: conversation.topic.as_deref(),
            visibility: conversation.visibility,
            parent_id: conversation.parent_id.as_ref(),
            avatar_url: conversation.avatar_url.as_deref(),
            room_id: conversation.room_id.as_ref(),
            status: conversation.status,
            created_at: conversation.created_at,
            members: members.iter().map(MemberView::from).collect(),
        }
    }
}

#[derive(Serialize)]
pub struct SenderView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a AppUserId>,
    matrix_user_id: &'a OwnedUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
}

impl<'a> From<&'a Sender> for SenderView<'a> {
    fn from(sender: &'a Sender) -> Self {
        Self {
            user_id: sender.user_id.as_ref(),
            matrix_user_id: &sender.matrix_user_id,
            display_name: sender.display_name.as_deref(),
        }
    }
}

/// A file, as the upload answers with it and a message carries it: one
/// uploaded through the API (with its `media_id`), or one a Matrix user
/// sent (with what its event says of it).
#[derive(Serialize)]
pub struct MediaView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    media_id: Option<MediaId>,
    content_uri: &'a OwnedMxcUri,
    #[serde(skip_serializing_if = "Option::is_none")]
    mimetype: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u64>,
}

impl<'a> MediaView<'a> {
    fn new(
        media_id: MediaId,
        content_uri: &'a OwnedMxcUri,
        info: &'a MediaInfo,
        filename: &'a str,
    ) -> Self {
        Self {
            media_id: Some(media_id),
            content_uri,
            mimetype: Some(&info.mimetype),
            size: Some(info.size),
            filename: Some(filename),
            width: info.width.map(u64::from),
            height: info.height.map(u64::from),
        }
    }
}

impl<'a> From<&'a MatrixFile> for MediaView<'a> {
    fn from(file: &'a MatrixFile) -> Self {
        Self {
            media_id: None,
            content_uri: &file.content_uri,
            mimetype: file.mimetype.as_deref(),
            size: file.size,
            filename: file.filename.as_deref(),
            width: file.width,
            height: file.height,
        }
    }
}

impl<'a> From<&'a MediaRecord> for MediaView<'a> {
    fn from(media: &'a MediaRecord) -> Self {
        Self::new(
            media.media_id,
            &media.content_uri,
            &media.info,
            &media.filename,
        )
    }
}

impl<'a> From<&'a Attachment> for MediaView<'a> {
    fn from(attachment: &'a Attachment) -> Self {
        Self::new(
            attachment.media_id,
            &attachment.content_uri,
            &attachment.info,
            &attachment.filename,
        )
    }
}

#[derive(Serialize)]
pub struct MessageView<'a> {
    id: MessageId,
    conversation_id: &'a ConversationId,
    sender: SenderView<'a>,
    /// None once deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    format: Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<MessageId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<MessageId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<MediaView<'a>>,
    status: MessageStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a OwnedEventId>,
    origin: Origin,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    edited_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    deleted_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a str>,
    /// A message from Matrix that is not text: `notice`, `emote`, `image`...
    #[serde(skip_serializing_if = "Option::is_none")]
    msgtype: Option<MsgType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mentions: Option<MentionList>,
    /// By key: how many reacted, and whether the reader did.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    reactions: BTreeMap<&'a str, ReactionView>,
}

/// The reactions to a message with one key.
#[derive(Serialize)]
pub struct ReactionView {
    count: u32,
    me: bool,
}

impl<'a> MessageView<'a> {
    /// The reactions to the message (none to a deleted one: deleting a
    /// message drops its reactions).
    pub fn with_reactions(mut self, counts: impl Iterator<Item = &'a ReactionCount>) -> Self {
        if self.status != MessageStatus::Deleted {
            self.reactions = counts
                .map(|count| {
                    let view = ReactionView {
                        count: count.count,
                        me: count.me,
                    };
                    (count.key.as_str(), view)
                })
                .collect();
        }
        self
    }

    /// Fills in the sender's display name where the message has none.
    pub fn with_sender_name(mut self, name: Option<&'a str>) -> Self {
        self.sender.display_name = self.sender.display_name.or(name);
        self
    }
}

impl<'a> From<&'a Message> for MessageView<'a> {
    fn from(message: &'a Message) -> Self {
        Self {
            id: message.id,
            conversation_id: &message.conversation_id,
            sender: SenderView::from(&message.sender),
            body: (message.status != MessageStatus::Deleted).then_some(message.body.as_str()),
            format: message.format,
            html: message.html.as_deref(),
            reply_to: message.reply_to,
            thread_id: message.thread_id,
            // Its file: uploaded through the API, or sent from Matrix.
            attachments: message
                .attachments
                .iter()
                .map(MediaView::from)
                .chain(message.file.iter().map(MediaView::from))
                .collect(),
            status: message.status,
            event_id: message.event_id.as_ref(),
            origin: message.origin,
            created_at: message.created_at,
            edited_at: message.edited_at,
            deleted_at: message.deleted_at,
            failure: message.failure.as_deref(),
            msgtype: message.msgtype,
            mentions: message.mentions.as_ref().map(MentionList::from),
            reactions: BTreeMap::new(),
        }
    }
}
