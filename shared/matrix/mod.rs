//! The Matrix port: what the bridge asks of its homeserver, as the
//! appservice bot or as a puppet (masquerading with `?user_id=`).
//!
//! [`AppserviceClient`] implements it over the client-server API
//! (<https://spec.matrix.org/v1.16/application-service-api/#client-server-api-extensions>).

mod client;
pub mod content;
mod error;
pub mod fake;
pub mod pills;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use ruma::events::room::member::MembershipState;
use ruma::{
    EventId, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    UserId,
};

pub use client::AppserviceClient;
pub use error::MatrixError;

use crate::model::{ConversationKind, Visibility};

/// A namespaced key in the content of every event the bridge sends: the
/// application message id, so an echo or a retry can be matched to it.
pub const MESSAGE_ID_KEY: &str = "io.github.lambda-matrix-bridge.message_id";

/// Beside [`MESSAGE_ID_KEY`] in an edit the bridge sends: which of the
/// message's changes it is (its number in [`crate::model::Message::changes`]),
/// so a retry can tell whether that very edit already landed.
pub const EDIT_KEY: &str = "io.github.lambda-matrix-bridge.edit";

/// Something the bridge sent for a message, as a retry looks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent<'a> {
    /// The message's own event (by its message id).
    Message(&'a str),
    /// The message's edit with this number.
    Edit(&'a str, u32),
}

impl Sent<'_> {
    /// Whether an event's content is this.
    pub fn is_in(self, content: &serde_json::Value) -> bool {
        match self {
            Sent::Message(message_id) => carries_message(content, message_id),
            Sent::Edit(message_id, number) => {
                content
                    .get(MESSAGE_ID_KEY)
                    .and_then(serde_json::Value::as_str)
                    == Some(message_id)
                    && is_replacement(content)
                    && content.get(EDIT_KEY).and_then(serde_json::Value::as_u64)
                        == Some(u64::from(number))
            }
        }
    }
}

/// Whether an event's content is the one the bridge sent for `message_id`.
/// An edit of the message carries its id too (it is about that message),
/// but is not the message: see [`is_replacement`].
pub fn carries_message(content: &serde_json::Value, message_id: &str) -> bool {
    content
        .get(MESSAGE_ID_KEY)
        .and_then(serde_json::Value::as_str)
        == Some(message_id)
        && !is_replacement(content)
}

/// Whether an event's content is an edit (`m.relates_to.rel_type` is
/// `m.replace`) of another event.
pub fn is_replacement(content: &serde_json::Value) -> bool {
    content
        .pointer("/m.relates_to/rel_type")
        .and_then(serde_json::Value::as_str)
        == Some("m.replace")
}

/// How far before a message's acceptance [`Matrix::find_sent_event`] still
/// looks: the homeserver's clock may be behind the bridge's.
pub const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// The room to create for a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomSpec {
    pub kind: Option<ConversationKind>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub visibility: Visibility,
    /// Everyone to invite: puppets (who then join) and plain Matrix users.
    pub invite: Vec<OwnedUserId>,
    /// Power levels above the default of 0.
    pub power_levels: BTreeMap<OwnedUserId, i64>,
    /// The space the room belongs to (its canonical `m.space.parent`).
    pub parent: Option<OwnedRoomId>,
    /// The localpart of the alias creation claims (`room_alias_name`): a
    /// second creation with the same one is refused with `M_ROOM_IN_USE`.
    pub alias: Option<String>,
    /// The room's avatar.
    pub avatar: Option<OwnedMxcUri>,
}

/// A user's membership of a room, as its `m.room.member` state says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub membership: MembershipState,
    /// Who set it: the user itself, or whoever invited, kicked or banned it.
    pub sender: OwnedUserId,
    pub reason: Option<String>,
}

/// What the bridge needs from the homeserver.
///
/// Every call made as a puppet is refused with `M_FORBIDDEN` (403) when the
/// puppet is not joined to the room, as Synapse does.
///
/// Transaction ids: Synapse remembers an appservice's transaction ids per
/// request path for the whole appservice, not per puppet, so the same id on
/// the same path returns the first answer even for another puppet. Derive
/// them from something unique to the operation (`MessageId::txn_id`).
pub trait Matrix: Send + Sync {
    /// The appservice's own user (its `sender_localpart`): the rooms'
    /// creator, who may redact anything in them.
    fn bot(&self) -> &UserId;

    /// Registers a puppet; one that exists already counts as success.
    fn register_puppet(
        &self,
        localpart: &str,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    fn set_display_name(
        &self,
        user: &UserId,
        name: &str,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    fn set_avatar_url(
        &self,
        user: &UserId,
        url: &MxcUri,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// Creates a room as the bridge's bot (its creator).
    fn create_room(
        &self,
        spec: &RoomSpec,
    ) -> impl Future<Output = Result<OwnedRoomId, MatrixError>> + Send;

    /// Lists `child` in the space `space` (`m.space.child`), as the bot.
    fn add_space_child(
        &self,
        space: &RoomId,
        child: &RoomId,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// Invites `user` to a room, as the bot.
    fn invite(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// Joins `user` (a puppet) to a room it was invited to.
    fn join(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// The event `sender` sent as `sent` (a message, or one of its edits,
    /// by [`MESSAGE_ID_KEY`] and [`EDIT_KEY`]) in `room` since `since` (the
    /// message's acceptance or its change's, less [`CLOCK_SKEW`]), read as
    /// `sender`: how a retry whose earlier attempt may have landed finds
    /// out that it did. Bounded by time, not by a count of events: however
    /// busy the room, every event of the sender since then is looked at.
    fn find_sent_event(
        &self,
        room: &RoomId,
        sender: &UserId,
        sent: Sent<'_>,
        since: time::OffsetDateTime,
    ) -> impl Future<Output = Result<Option<OwnedEventId>, MatrixError>> + Send;

    /// Sends an `m.room.message` as `sender` with a transaction id, so the
    /// same call repeated does not send twice.
    fn send_message(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn_id: &str,
        content: &serde_json::Value,
    ) -> impl Future<Output = Result<OwnedEventId, MatrixError>> + Send;

    /// Sends an `m.reaction` (an annotation of `target` with `key`) as
    /// `sender` with a transaction id, so the same call repeated does not
    /// react twice.
    /// <https://spec.matrix.org/v1.16/client-server-api/#mreaction>
    fn send_reaction(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn_id: &str,
        target: &EventId,
        key: &str,
    ) -> impl Future<Output = Result<OwnedEventId, MatrixError>> + Send;

    /// Redacts `event_id` as `sender` (a puppet, or [`Matrix::bot`]):
    /// `PUT /rooms/{room}/redact/{event_id}/{txn_id}`. The same call
    /// repeated answers with the same redaction event. Refused with
    /// `M_NOT_FOUND` (404) for an event the room does not have, and with
    /// `M_FORBIDDEN` when `sender` may not redact it (another user's event
    /// needs the room's `redact` power level, 50 by default).
    fn redact(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_id: &EventId,
        txn_id: &str,
        reason: Option<&str>,
    ) -> impl Future<Output = Result<OwnedEventId, MatrixError>> + Send;

    /// Whether `event_id` in `room` has been redacted (by anyone), read as
    /// `reader`: how a retried redaction whose earlier attempt may have
    /// landed finds out that it did. `M_NOT_FOUND` (404) for an event the
    /// room does not have or `reader` may not see.
    fn is_redacted(
        &self,
        room: &RoomId,
        reader: &UserId,
        event_id: &EventId,
    ) -> impl Future<Output = Result<bool, MatrixError>> + Send;

    /// Uploads a file to the media repository as `uploader` (a puppet):
    /// `POST /_matrix/media/v3/upload`. Check it first (`crate::media`).
    fn upload_media(
        &self,
        uploader: &UserId,
        content_type: &str,
        filename: Option<&str>,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<OwnedMxcUri, MatrixError>> + Send;

    /// Says `user` is typing in a room for up to `timeout`, or has stopped:
    /// `PUT /rooms/{room}/typing/{user}`.
    fn set_typing(
        &self,
        room: &RoomId,
        user: &UserId,
        typing: bool,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// Says `user` has read the room up to `event_id` (a public `m.read`
    /// receipt, unthreaded): `POST /rooms/{room}/receipt/m.read/{event_id}`.
    /// Synapse does not check that the event exists.
    fn send_read_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        event_id: &EventId,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// The room an alias names (`GET /directory/room/{alias}`), or `None`
    /// when it names none.
    fn resolve_alias(
        &self,
        alias: &RoomAliasId,
    ) -> impl Future<Output = Result<Option<OwnedRoomId>, MatrixError>> + Send;

    /// Makes `user` (a puppet) leave a room, or decline its invite:
    /// `POST /rooms/{room}/leave`. Refused when it has no membership there.
    fn leave(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// Removes `user` from a room, or withdraws its invite, as the bot:
    /// `POST /rooms/{room}/kick`. Refused when it is not in the room.
    fn kick(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// The content of a room's state event, read as the bot:
    /// `GET /rooms/{room}/state/{type}/{key}`; `None` when the room has none.
    fn state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, MatrixError>> + Send;

    /// Sets a state event as `sender` (the bot, or a puppet for its own
    /// `m.room.member`): `PUT /rooms/{room}/state/{type}/{key}`. Content
    /// equal to the current state's is no new event.
    fn put_state(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_type: &str,
        state_key: &str,
        content: &serde_json::Value,
    ) -> impl Future<Output = Result<OwnedEventId, MatrixError>> + Send;

    /// Every current state event of a room (`type`, `state_key`, `sender`,
    /// `content`), read as the bot: `GET /rooms/{room}/state`.
    fn room_state(
        &self,
        room: &RoomId,
    ) -> impl Future<Output = Result<Vec<serde_json::Value>, MatrixError>> + Send;

    /// Lists a room in the homeserver's room directory, or takes it out:
    /// `PUT /directory/list/room/{room}`, as the bot.
    fn set_directory_visibility(
        &self,
        room: &RoomId,
        public: bool,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;

    /// `user`'s membership of a room, from the room's state read as the bot
    /// (`GET /rooms/{room}/state/m.room.member/{user}?format=event`); `None`
    /// when it never had one.
    fn membership(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> impl Future<Output = Result<Option<MemberState>, MatrixError>> + Send;

    /// Lifts `user`'s ban from a room, as the bot: `POST /rooms/{room}/unban`.
    /// Only for a member the application explicitly asked back.
    fn unban(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> impl Future<Output = Result<(), MatrixError>> + Send;
}
