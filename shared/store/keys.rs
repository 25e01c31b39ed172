//! The table's keys: one partition per conversation (its record, members and
//! messages, so history is one query), and one item per reverse lookup.

use ruma::{EventId, RoomId, UserId};

use crate::ids::{AppUserId, ConversationId};
use crate::model::MessageId;

pub const META: &str = "META";
pub const MEMBER_PREFIX: &str = "MEMBER#";
pub const MESSAGE_PREFIX: &str = "MSG#";

pub fn conversation(id: &ConversationId) -> String {
    format!("CONV#{id}")
}

pub fn member(user: &UserId) -> String {
    format!("{MEMBER_PREFIX}{user}")
}

pub fn message(id: MessageId) -> String {
    format!("{MESSAGE_PREFIX}{id}")
}

pub fn room(room_id: &RoomId) -> String {
    format!("ROOM#{room_id}")
}

pub fn event(event_id: &EventId) -> String {
    format!("EVENT#{event_id}")
}

pub fn puppet(user: &AppUserId) -> String {
    format!("USER#{user}")
}

pub fn idempotency(scope: &str) -> String {
    format!("IDEM#{scope}")
}
