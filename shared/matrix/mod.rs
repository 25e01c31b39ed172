//! The Matrix port: what the bridge asks of its homeserver, as the
//! appservice bot or as a puppet (masquerading with `?user_id=`).
//!
//! [`AppserviceClient`] implements it over the client-server API
//! (<https://spec.matrix.org/v1.16/application-service-api/#client-server-api-extensions>).

mod client;
mod error;
pub mod fake;

use std::collections::BTreeMap;
use std::future::Future;

use ruma::{MxcUri, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

pub use client::AppserviceClient;
pub use error::MatrixError;

use crate::model::{ConversationKind, Visibility};

/// A namespaced key in the content of every event the bridge sends: the
/// application message id, so an echo or a retry can be matched to it.
pub const MESSAGE_ID_KEY: &str = "io.github.lambda-matrix-bridge.message_id";

/// Whether an event's content is the one the bridge sent for `message_id`.
pub fn carries_message(content: &serde_json::Value, message_id: &str) -> bool {
    content
        .get(MESSAGE_ID_KEY)
        .and_then(serde_json::Value::as_str)
        == Some(message_id)
}

/// How far back [`Matrix::find_sent_event`] looks.
pub const RECENT_EVENTS: u32 = 100;

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
}

/// What the bridge needs from the homeserver.
pub trait Matrix: Send + Sync {
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

    /// The event among the room's latest [`RECENT_EVENTS`] that `sender` sent
    /// for `message_id` (under [`MESSAGE_ID_KEY`]), read as `sender`: how a
    /// retry whose earlier attempt may have landed finds out that it did.
    fn find_sent_event(
        &self,
        room: &RoomId,
        sender: &UserId,
        message_id: &str,
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
}
