//! The records the bridge keeps: conversations and their rooms, members,
//! puppets, messages, idempotency records and the appservice transactions
//! the homeserver pushed.
//!
//! These are storage-neutral domain types. The DynamoDB adapter stores them
//! with `serde_dynamo`; the API layer renders its own views of them.

use std::fmt;
use std::str::FromStr;

use ruma::{EventId, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ids::{AppUserId, ConversationId};
use crate::media::MediaInfo;

/// What a conversation is in the application; it decides the room's preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Group,
    Event,
    Direct,
    Space,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Private,
    Public,
}

/// A member's role in the application, mapped to a Matrix power level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Moderator,
    #[default]
    Member,
}

impl Role {
    pub fn power_level(self) -> i64 {
        match self {
            Role::Owner => 100,
            Role::Moderator => 50,
            Role::Member => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Claimed by a provisioning request that has not finished yet.
    Provisioning,
    Active,
    Archived,
}

impl ConversationStatus {
    /// The name serde gives the status, for stores that compare it in place.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Provisioning => "provisioning",
            ConversationStatus::Active => "active",
            ConversationStatus::Archived => "archived",
        }
    }
}

/// Who is provisioning a conversation, and until when the claim holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub token: Uuid,
    /// Epoch seconds, so the table can compare it in a condition.
    #[serde(with = "time::serde::timestamp")]
    pub until: OffsetDateTime,
}

/// A conversation of the application and the Matrix room that mirrors it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<ConversationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<OwnedRoomId>,
    pub status: ConversationStatus,
    /// Messages accepted but not yet delivered to Matrix. While it is above
    /// zero, new messages queue behind them instead of overtaking them.
    #[serde(default)]
    pub outbox: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The room's avatar (`mxc://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// The `https://` address the avatar was fetched from, so the same
    /// address is not fetched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_source: Option<String>,
}

impl Conversation {
    /// A conversation about to be provisioned: no room yet, nothing queued.
    pub fn draft(id: ConversationId, kind: ConversationKind, created_at: OffsetDateTime) -> Self {
        Self {
            id,
            kind,
            name: None,
            topic: None,
            visibility: Visibility::Private,
            parent_id: None,
            room_id: None,
            status: ConversationStatus::Provisioning,
            outbox: 0,
            claim: None,
            created_at,
            avatar_url: None,
            avatar_source: None,
        }
    }
}

/// A member of a conversation: an application user (through its puppet) or
/// a plain Matrix user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub conversation_id: ConversationId,
    pub matrix_user_id: OwnedUserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<AppUserId>,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Whether the puppet is known to be joined to the room. Plain Matrix
    /// users are invited and join on their own; the webhook records their
    /// joins and leaves here too.
    #[serde(default)]
    pub joined: bool,
    /// Until when the homeserver was last told the member is typing (epoch
    /// milliseconds, so the table can compare it in a condition): a repeat
    /// within the window is not passed on.
    #[serde(
        default,
        with = "time::serde::timestamp::milliseconds_i64::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub typing_until: Option<OffsetDateTime>,
    /// Set when someone else removed the member on the Matrix side (a
    /// moderator's kick or ban): the bridge does not put it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removal>,
}

/// A member's removal from the room by someone else on the Matrix side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Who removed it (a moderator of the room).
    pub by: OwnedUserId,
    /// A ban, rather than a kick.
    pub banned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl fmt::Display for Removal {
    /// What a refused sender is told: who, how, and the moderator's reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.banned { "banned" } else { "kicked" };
        write!(f, "{how} from the conversation's room by {}", self.by)?;
        if let Some(reason) = &self.reason {
            write!(f, " (reason: {reason})")?;
        }
        Ok(())
    }
}

/// An application user and its Matrix puppet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Puppet {
    pub user_id: AppUserId,
    pub matrix_user_id: OwnedUserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Registered on the homeserver, so the hot path need not try again.
    pub registered: bool,
    /// The `https://` address `avatar_url` was fetched from, so the same
    /// address is not fetched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_source: Option<String>,
}

/// What a [`PendingSync`] brings Matrix in line with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SyncSubject {
    /// The room: its name, topic and avatar, and whether it is closed
    /// (the conversation archived).
    Room,
    /// One member: in the room with its role's power level and its
    /// per-conversation display name, or not in it (removed).
    Member {
        matrix_user_id: OwnedUserId,
        /// The application user, for a puppet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<AppUserId>,
    },
}

/// A change of a conversation or of one of its members that the table has
/// and Matrix has not had yet. It goes to Matrix like a message change, and
/// is counted in the conversation's outbox until it settles: directly while
/// the outbox is empty, else (or when the homeserver cannot take it) by the
/// retry function, in order.
/// What Matrix is brought to is what the table says when the sync runs, so
/// a later change replaces a pending one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSync {
    pub conversation_id: ConversationId,
    pub subject: SyncSubject,
    /// Unique per change (a UUIDv7, like message ids): what settling it is
    /// conditioned on, and its retry job's deduplication id.
    pub id: MessageId,
    pub delivery: Delivery,
    /// When the change was accepted: its deadline runs from here, as a
    /// message's does from its send or its latest change.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The application asked for a member a Matrix moderator kicked or
    /// banned back (`"rejoin": true`): the sync lifts a ban and invites it.
    /// Without it, such a member is not put back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readmit: bool,
}

/// An operation in a conversation's outbox: a message's send or change,
/// or a sync of its room or a member. What the sweeper hands back to the
/// retry function, and what a retry job delivers first when it waits ahead.
#[derive(Clone, Debug, PartialEq)]
pub enum PendingOperation {
    Message(Box<Message>),
    Sync(PendingSync),
}

impl PendingOperation {
    /// When it was accepted.
    pub fn since(&self) -> Option<OffsetDateTime> {
        match self {
            Self::Message(message) => message.pending_since(),
            Self::Sync(sync) => Some(sync.since),
        }
    }

    /// Whether its own request is delivering it (`Direct`) or the retry
    /// function is (`Queued`).
    pub fn delivery(&self) -> Delivery {
        match self {
            Self::Message(message) => message
                .pending_change
                .as_ref()
                .map_or(message.delivery, |change| change.delivery),
            Self::Sync(sync) => sync.delivery,
        }
    }
}

/// A message id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// The smallest id, for range scans.
    pub const MIN: Self = Self(Uuid::nil());

    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id of the message a Matrix event became: a UUIDv7 of the event's
    /// `origin_server_ts` and a hash of its event id, so the same event is
    /// always the same message and history sorts it by when it was sent.
    pub fn for_event(origin_server_ts_ms: u64, event_id: &EventId) -> Self {
        let digest = Sha256::digest(event_id.as_bytes());
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        Self(uuid::Builder::from_unix_timestamp_millis(origin_server_ts_ms, &random).into_uuid())
    }

    /// The Matrix transaction id of the operation `op` on this message, so a
    /// retry repeats the same request and the homeserver deduplicates it.
    pub fn txn_id(&self, op: &str) -> String {
        format!("{op}-{}", self.0.simple())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Plain,
    Markdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Pending,
    Sent,
    Failed,
    Deleted,
}

impl MessageStatus {
    /// The name serde gives the status, for stores that compare it in place.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Failed => "failed",
            MessageStatus::Deleted => "deleted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    App,
    Matrix,
}

/// Who wrote a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<AppUserId>,
    pub matrix_user_id: OwnedUserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// How a message reaches Matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Sent straight from the API request.
    #[default]
    Direct,
    /// Counted in the conversation's outbox and delivered by the retry function.
    Queued,
}

impl Delivery {
    /// The name serde gives the delivery, for stores that compare it in place.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Direct => "direct",
            Delivery::Queued => "queued",
        }
    }
}

/// A message of a conversation, whichever side it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: Sender,
    pub body: String,
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// The root of the thread the message is in (a message that is in no
    /// thread itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
    /// The file the message carries (Matrix events carry at most one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    pub status: MessageStatus,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<OwnedEventId>,
    pub origin: Origin,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub edited_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// How many edits and deletes were accepted; numbers each change's
    /// transaction, so a retried change is the same request to Matrix.
    #[serde(default)]
    pub changes: u32,
    /// A change (edit or delete) of a sent message that Matrix has not had yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<PendingChange>,
    /// While the send is pending: an attempt at it may have reached Matrix
    /// with its answer lost (see [`PendingChange::in_doubt`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_doubt: bool,
    /// Bumped by every whole-record update: what such an update is conditioned on.
    #[serde(default)]
    pub revision: u64,
    /// The kind of a message from Matrix other than text (a notice, an
    /// emote, a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgtype: Option<MsgType>,
    /// The file a message from Matrix carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<MatrixFile>,
    /// Whom it mentions intentionally (`m.mentions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<Mentions>,
}

impl Message {
    /// Whether its sender must be a member of the conversation: an
    /// application user's puppet must; the bridge's bot, which sends
    /// notices and created the room, need not.
    pub fn needs_member(&self) -> bool {
        self.sender.user_id.is_some()
    }

    /// Whether an operation on it (its send, or a change) is not settled yet.
    pub fn is_pending(&self) -> bool {
        self.status == MessageStatus::Pending || self.pending_change.is_some()
    }

    /// When its pending operation was accepted: the change's time, or the
    /// send's; none when nothing is pending.
    pub fn pending_since(&self) -> Option<OffsetDateTime> {
        match &self.pending_change {
            Some(change) => change.since.or(match change.kind {
                ChangeKind::Edit => self.edited_at,
                ChangeKind::Delete { .. } => self.deleted_at,
            }),
            None => (self.status == MessageStatus::Pending).then_some(self.created_at),
        }
    }

    /// Whether an attempt at its pending send may have landed unrecorded:
    /// one [`in_doubt`](Self::in_doubt), or a direct request whose outcome
    /// was never recorded (it died, or could not record the event).
    pub fn send_in_doubt(&self) -> bool {
        self.in_doubt || self.delivery == Delivery::Direct
    }

    /// The message as deleted at `at`: no text or file kept.
    pub fn deleted(&self, at: OffsetDateTime) -> Message {
        let mut deleted = self.clone();
        deleted.status = MessageStatus::Deleted;
        deleted.deleted_at = Some(at);
        deleted.body = String::new();
        deleted.html = None;
        deleted.file = None;
        deleted.attachments.clear();
        deleted
    }

    /// The transaction id of this message's latest change.
    pub fn change_txn_id(&self) -> String {
        match self.pending_change.as_ref().map(|change| &change.kind) {
            Some(ChangeKind::Delete { .. }) => self.id.txn_id("redact"),
            _ => self.id.txn_id(&format!("edit{}", self.changes)),
        }
    }
}

/// Whom a message mentions: users (through their Matrix ids, and for
/// puppets the application users behind them) and the whole room
/// (`@room`). The Matrix side is `m.mentions`
/// (<https://spec.matrix.org/v1.16/client-server-api/#user-and-room-mentions>).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mentions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Mentioned>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room: bool,
}

/// A mentioned user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mentioned {
    pub matrix_user_id: OwnedUserId,
    /// The application user, for a puppet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<AppUserId>,
}

impl Mentions {
    /// Whether it mentions nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && !self.room
    }

    /// As `m.mentions` says it.
    pub fn to_matrix(&self) -> ruma::events::Mentions {
        let mut mentions = ruma::events::Mentions::with_user_ids(
            self.users.iter().map(|user| user.matrix_user_id.clone()),
        );
        mentions.room = self.room;
        mentions
    }
}

/// Mentions as the API and the inbound events show them:
/// `{"user_ids": [...], "room": bool}`, each user by its application id
/// when it is a puppet, else by its Matrix id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MentionList {
    pub user_ids: Vec<String>,
    pub room: bool,
}

impl From<&Mentions> for MentionList {
    fn from(mentions: &Mentions) -> Self {
        Self {
            user_ids: mentions
                .users
                .iter()
                .map(|user| match &user.user_id {
                    Some(app) => app.as_str().to_owned(),
                    None => user.matrix_user_id.to_string(),
                })
                .collect(),
            room: mentions.room,
        }
    }
}

/// A user's reaction to a message: an `m.reaction` annotation of the
/// message's event with `key` (an emoji, or a short text), at most one per
/// user, message and key.
/// <https://spec.matrix.org/v1.16/client-server-api/#mreaction>
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// Unique per reaction (a UUIDv7): its Matrix transaction ids derive
    /// from it, so a retry is the same request, and reacting again after a
    /// removal is a new one.
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub key: String,
    pub sender: Sender,
    /// The `m.reaction` event, once in Matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<OwnedEventId>,
    pub origin: Origin,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Reaction {
    /// The most bytes a key may have.
    pub const MAX_KEY: usize = 64;

    /// The transaction id of its `m.reaction`.
    pub fn send_txn_id(&self) -> String {
        self.id.txn_id("react")
    }

    /// The transaction id of its redaction.
    pub fn redact_txn_id(&self) -> String {
        self.id.txn_id("unreact")
    }
}

/// How many reacted to a message with one key, and whether the reader did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionCount {
    pub key: String,
    pub count: u32,
    pub me: bool,
}

/// What a pending change does in Matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeKind {
    /// An `m.replace` of the message's event with its current body.
    Edit,
    /// A redaction of the message's event, by its sender's puppet or, when a
    /// moderator removes someone else's message, by the bridge's bot.
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        by_bot: bool,
    },
}

/// A change of a sent message, on its way to Matrix like a send: directly,
/// or through the conversation's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    pub kind: ChangeKind,
    pub delivery: Delivery,
    /// When what it took the place of was accepted (an earlier pending
    /// change, or the pending send it follows): its place in the outbox,
    /// and when its deadline runs from. `None`: its own time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub since: Option<OffsetDateTime>,
    /// An attempt at it may have reached Matrix with its answer lost (a
    /// request that timed out or died, an answer that could not be read).
    /// Before another, the retry function looks whether it landed, as the
    /// homeserver forgets transaction ids when it restarts; without a doubt
    /// it spares the homeserver that look. Set before each retried
    /// attempt, and by a direct attempt that may have landed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_doubt: bool,
}

/// A media id: a UUIDv7, like a message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MediaId(Uuid);

impl MediaId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for MediaId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for MediaId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A file a member uploaded into a conversation, in the homeserver's media
/// repository. Only its uploader may attach it, and only in that conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub media_id: MediaId,
    pub conversation_id: ConversationId,
    pub uploader: AppUserId,
    pub content_uri: OwnedMxcUri,
    pub info: MediaInfo,
    pub filename: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A file as a message carries it: what its event says about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub media_id: MediaId,
    pub content_uri: OwnedMxcUri,
    pub info: MediaInfo,
    pub filename: String,
}

impl From<&MediaRecord> for Attachment {
    fn from(media: &MediaRecord) -> Self {
        Self {
            media_id: media.media_id,
            content_uri: media.content_uri.clone(),
            info: media.info.clone(),
            filename: media.filename.clone(),
        }
    }
}

/// What a message from Matrix is, when it is not text (`m.text`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsgType {
    Notice,
    Emote,
    Image,
    Video,
    Audio,
    File,
}

/// A file in the homeserver's media repository, as the event that carries
/// it describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixFile {
    pub content_uri: OwnedMxcUri,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
}

/// An appservice transaction the homeserver pushed and the bridge
/// processed, kept so a repeat of it is answered without doing anything.
///
/// Synapse re-serialises a retried transaction (`unsigned.age` changes) and
/// drops its ephemeral events, so "the same transaction" is the same
/// `txnId` with the same persistent events (`fingerprint`, of their ids) and
/// either no ephemeral events or the same ones (`ephemeral_fingerprint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    pub txn_id: String,
    pub fingerprint: String,
    pub ephemeral_fingerprint: String,
    /// Persistent and ephemeral events received.
    pub events: u32,
    pub ephemeral: u32,
    /// Events published to the application.
    pub published: u32,
    /// Events that could not be mapped, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedEvent>,
    #[serde(with = "time::serde::rfc3339")]
    pub processed_at: OffsetDateTime,
    /// Epoch seconds: the table's TTL removes the record then.
    #[serde(with = "time::serde::timestamp")]
    pub expires_at: OffsetDateTime,
}

impl TransactionRecord {
    /// How long a processed transaction is remembered: longer than the
    /// homeserver retries one.
    pub const LIFETIME: time::Duration = time::Duration::days(30);

    /// Whether a transaction with these fingerprints repeats this one.
    pub fn is_repeated_by(&self, fingerprint: &str, ephemeral_fingerprint: Option<&str>) -> bool {
        self.fingerprint == fingerprint
            && ephemeral_fingerprint.is_none_or(|other| other == self.ephemeral_fingerprint)
    }
}

/// An event of a transaction that was not passed on, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEvent {
    /// Its place in the transaction (`events`, then `ephemeral`).
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub reason: String,
}

/// What an `Idempotency-Key` was first used for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The caller, the conversation and the key, as one string.
    pub scope: String,
    /// SHA-256 of the request body, to tell a retry from a reuse.
    pub body_hash: String,
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    #[serde(with = "time::serde::timestamp")]
    pub expires_at: OffsetDateTime,
}

impl IdempotencyRecord {
    /// How long a key is remembered.
    pub const LIFETIME: time::Duration = time::Duration::hours(24);

    /// Whether the key is still remembered at `now`. DynamoDB deletes
    /// expired items days late, so an expired record counts as absent.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.expires_at > now
    }

    pub fn scope(caller: &AppUserId, conversation: &ConversationId, key: &str) -> String {
        format!("{caller}/{conversation}/{key}")
    }
}

/// A page of history, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<Message>,
    /// The id to pass as `before` for the next page, if there is one.
    pub next: Option<MessageId>,
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::{ConversationStatus, Delivery, MessageStatus};

    /// `as_str` is what serde writes (and reads back), for every variant.
    fn same_as_serde<T>(variants: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + std::fmt::Debug + PartialEq + Serialize + serde::de::DeserializeOwned,
    {
        for &variant in variants {
            let name = as_str(variant);
            assert_eq!(
                serde_json::to_value(variant).unwrap(),
                serde_json::Value::from(name),
                "{variant:?}"
            );
            assert_eq!(serde_json::from_value::<T>(name.into()).unwrap(), variant);
        }
    }

    // A new variant breaks `as_str` first, which is the reminder to list it here.
    #[test]
    fn status_strings_are_the_serde_names() {
        use ConversationStatus::*;
        use Delivery::*;
        use MessageStatus::*;
        same_as_serde(
            &[Provisioning, Active, Archived],
            ConversationStatus::as_str,
        );
        same_as_serde(&[Pending, Sent, Failed, Deleted], MessageStatus::as_str);
        same_as_serde(&[Direct, Queued], Delivery::as_str);
    }
}
