//! The table's key layout, and the only place that knows it: one partition
//! per conversation (its record, members, messages and uploaded media, so
//! history is one query), and one item per reverse lookup, puppet,
//! idempotency record and appservice transaction.

use ruma::{EventId, RoomId, UserId};

use crate::ids::{AppUserId, ConversationId};
use crate::model::{MediaId, MessageId, SyncSubject};

const CONVERSATION: &str = "CONV#";
const MEMBER: &str = "MEMBER#";
const MESSAGE: &str = "MSG#";
const ROOM: &str = "ROOM#";
const EVENT: &str = "EVENT#";
const USER: &str = "USER#";
const IDEMPOTENCY: &str = "IDEM#";
/// Uploaded media, in their conversation's partition: `MEDIA#…` sorts
/// before `MEMBER#…`, so no range of members, the record or messages holds it.
const MEDIA: &str = "MEDIA#";
/// A pending sync, in its conversation's partition: it sorts after `MSG#…`,
/// outside the ranges that read members and messages.
const SYNC: &str = "SYNC#";
const TRANSACTION: &str = "TXN#";
/// The sort key of an item that is alone in its partition, and of a
/// conversation's own record in its partition.
const META: &str = "META";
/// The sort key of a puppet, in its user's partition.
const PUPPET: &str = "PUPPET";

/// The sparse index of pending operations: messages with a send or a
/// change not yet settled ([`PENDING`]) and pending syncs of rooms and
/// members ([`PENDING_SYNCS`]). Only items that have both attributes are in
/// it, one partition per kind, sorted by when they became pending. It
/// stays small: a pending operation normally settles within a second.
pub const PENDING_INDEX: &str = "pending";
/// The index's partition key attribute: [`PENDING`] or [`PENDING_SYNCS`].
pub const PENDING_KEY: &str = "pending_key";
/// The index's sort key attribute: when the operation became pending, as
/// zero-padded Unix milliseconds (so text order is time order).
pub const PENDING_SINCE: &str = "pending_since";
/// The index's partition of pending messages.
pub const PENDING: &str = "PENDING";
/// The index's partition of pending syncs (changes of rooms and members):
/// a partition of their own, so each query reads one kind of record.
pub const PENDING_SYNCS: &str = "PENDING#SYNC";

/// The index sort key of a time.
pub fn pending_since(at: time::OffsetDateTime) -> String {
    format!("{:015}", at.unix_timestamp_nanos() / 1_000_000)
}

/// An item's primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    fn new(pk: String, sk: impl Into<String>) -> Self {
        Self { pk, sk: sk.into() }
    }
}

/// Which sort keys of a partition a query reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortKeys {
    /// From the first to the second, both included.
    Between(String, String),
    /// Those that start with this.
    Prefix(String),
}

/// A query's key condition: part of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub pk: String,
    pub sk: SortKeys,
}

fn conversation_pk(id: &ConversationId) -> String {
    format!("{CONVERSATION}{id}")
}

/// A conversation's own record.
pub fn conversation(id: &ConversationId) -> Key {
    Key::new(conversation_pk(id), META)
}

pub fn member(id: &ConversationId, user: &UserId) -> Key {
    Key::new(conversation_pk(id), format!("{MEMBER}{user}"))
}

pub fn message(id: &ConversationId, message: MessageId) -> Key {
    Key::new(conversation_pk(id), format!("{MESSAGE}{message}"))
}

/// A file uploaded into a conversation.
pub fn media(id: &ConversationId, media: MediaId) -> Key {
    Key::new(conversation_pk(id), format!("{MEDIA}{media}"))
}

/// The room -> conversation lookup.
pub fn room(room_id: &RoomId) -> Key {
    Key::new(format!("{ROOM}{room_id}"), META)
}

/// The event -> message lookup.
pub fn event(event_id: &EventId) -> Key {
    Key::new(format!("{EVENT}{event_id}"), META)
}

pub fn puppet(user: &AppUserId) -> Key {
    Key::new(format!("{USER}{user}"), PUPPET)
}

/// A conversation's pending sync of `subject` (one at a time per subject).
pub fn sync(id: &ConversationId, subject: &SyncSubject) -> Key {
    let sk = match subject {
        SyncSubject::Room => format!("{SYNC}ROOM"),
        SyncSubject::Member { matrix_user_id, .. } => format!("{SYNC}{MEMBER}{matrix_user_id}"),
    };
    Key::new(conversation_pk(id), sk)
}

pub fn idempotency(scope: &str) -> Key {
    Key::new(format!("{IDEMPOTENCY}{scope}"), META)
}

/// An appservice transaction, by its id and its fingerprint: a homeserver
/// that starts counting again (after a reset) reuses ids for others.
pub fn transaction(txn_id: &str, fingerprint: &str) -> Key {
    Key::new(format!("{TRANSACTION}{txn_id}"), fingerprint)
}

/// A conversation's members and its own record, and nothing else of its
/// partition: `MEMBER#…` sorts before `META`, which sorts before `MSG#…`.
pub fn members_and_conversation(id: &ConversationId) -> KeyRange {
    KeyRange {
        pk: conversation_pk(id),
        sk: SortKeys::Between(MEMBER.to_owned(), META.to_owned()),
    }
}

/// A conversation's messages, or with `before`, those up to it (included:
/// a range cannot exclude its end).
pub fn messages(id: &ConversationId, before: Option<MessageId>) -> KeyRange {
    let sk = match before {
        Some(before) => SortKeys::Between(MESSAGE.to_owned(), format!("{MESSAGE}{before}")),
        None => SortKeys::Prefix(MESSAGE.to_owned()),
    };
    KeyRange {
        pk: conversation_pk(id),
        sk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_partition_sorts_members_then_its_record_then_messages() {
        let id = ConversationId::parse("c-1").unwrap();
        let user = ruma::user_id!("@app_zz:localhost");
        let member = member(&id, user).sk;
        let record = conversation(&id).sk;
        let message = message(&id, MessageId::MIN).sk;
        let SortKeys::Between(from, to) = members_and_conversation(&id).sk else {
            panic!("a range")
        };
        assert!(from <= member && member < record && record <= to && to < message);
        let subject = SyncSubject::Member {
            matrix_user_id: user.to_owned(),
            user_id: None,
        };
        for sync in [sync(&id, &subject).sk, sync(&id, &SyncSubject::Room).sk] {
            assert!(to < sync && !sync.starts_with(MESSAGE), "{sync}");
        }
    }

    #[test]
    fn media_are_in_no_range_of_members_or_messages() {
        let id = ConversationId::parse("c-1").unwrap();
        let media = media(&id, MediaId::new()).sk;
        let SortKeys::Between(from, _) = members_and_conversation(&id).sk else {
            panic!("a range")
        };
        assert!(media < from, "{media} sorts before the members");
        let SortKeys::Prefix(prefix) = messages(&id, None).sk else {
            panic!("a prefix")
        };
        assert!(!media.starts_with(&prefix));
        let SortKeys::Between(from, _) = messages(&id, Some(MessageId::new())).sk else {
            panic!("a range")
        };
        assert!(media < from);
    }
}
