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
/// A message's place in a thread, in its conversation's partition:
/// `THREAD#{root}#{message}` sorts after every `MSG#…`, so no range of
/// messages holds it, and a thread is one range.
const THREAD: &str = "THREAD#";
/// A user's reaction, in its conversation's partition:
/// `REACTED#{user}#{message}#{key}`, so the reactions of one reader to a
/// page of messages are one range. After `MSG#…` and the members: in no
/// range of theirs.
const REACTED: &str = "REACTED#";
/// How many reacted to a message with a key, in its conversation's
/// partition: `REACTIONS#{message}#{key}`, so a page's counts are one range.
const REACTIONS: &str = "REACTIONS#";
/// The sort key of the event -> reaction lookup, in the event's partition
/// (beside the event -> message lookup's [`META`]).
const REACTION: &str = "REACTION";
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

/// The sparse index of each conversation's outbox: the same pending
/// operations as the [`PENDING_INDEX`], one partition per conversation
/// ([`outbox`]), sorted by [`PENDING_SINCE`], so what waits ahead of a
/// retry job in its conversation is one small query.
pub const OUTBOX_INDEX: &str = "outbox";
/// The outbox index's partition key attribute.
pub const OUTBOX_KEY: &str = "outbox_key";

/// A conversation's partition of the outbox index.
pub fn outbox(id: &ConversationId) -> String {
    conversation_pk(id)
}

/// Whether a sort key is a pending sync's (else, in the outbox index, a message's).
pub fn is_sync(sk: &str) -> bool {
    sk.starts_with(SYNC)
}

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

/// The event -> reaction lookup.
pub fn reaction_event(event_id: &EventId) -> Key {
    Key::new(format!("{EVENT}{event_id}"), REACTION)
}

/// A reaction key as a sort key part: its bytes in hex, so any text (a
/// `#` included) is one unambiguous part.
fn hex(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `user`'s reaction to `message` with `key`.
pub fn reaction(id: &ConversationId, user: &UserId, message: MessageId, key: &str) -> Key {
    Key::new(
        conversation_pk(id),
        format!("{REACTED}{user}#{message}#{}", hex(key)),
    )
}

/// How many reacted to `message` with `key`.
pub fn reaction_count(id: &ConversationId, message: MessageId, key: &str) -> Key {
    Key::new(
        conversation_pk(id),
        format!("{REACTIONS}{message}#{}", hex(key)),
    )
}

/// `user`'s reactions to the messages from `first` to `last`.
pub fn reactions_of(
    id: &ConversationId,
    user: &UserId,
    first: MessageId,
    last: MessageId,
) -> KeyRange {
    KeyRange {
        pk: conversation_pk(id),
        sk: SortKeys::Between(
            format!("{REACTED}{user}#{first}#"),
            format!("{REACTED}{user}#{last}#~"),
        ),
    }
}

/// The reaction counts of the messages from `first` to `last`.
pub fn reaction_counts(id: &ConversationId, first: MessageId, last: MessageId) -> KeyRange {
    KeyRange {
        pk: conversation_pk(id),
        sk: SortKeys::Between(
            format!("{REACTIONS}{first}#"),
            format!("{REACTIONS}{last}#~"),
        ),
    }
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

/// A key nothing is stored under: what a container reads at init to open
/// its connection to the table ([`crate::store::DynamoStore::warm_up`]).
pub fn warm_up() -> Key {
    Key::new("WARMUP".to_owned(), META)
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

/// A message's link in the thread of `root`.
pub fn thread_link(id: &ConversationId, root: MessageId, message: MessageId) -> Key {
    Key::new(conversation_pk(id), format!("{THREAD}{root}#{message}"))
}

/// The links of the thread of `root`, or with `before`, those up to it
/// (included, as for [`messages`]).
pub fn thread(id: &ConversationId, root: MessageId, before: Option<MessageId>) -> KeyRange {
    let prefix = format!("{THREAD}{root}#");
    let sk = match before {
        Some(before) => SortKeys::Between(prefix.clone(), format!("{prefix}{before}")),
        None => SortKeys::Prefix(prefix),
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
    fn thread_links_are_in_no_range_of_messages_and_one_range_per_thread() {
        let id = ConversationId::parse("c-1").unwrap();
        let (root, other) = (MessageId::new(), MessageId::new());
        let link = thread_link(&id, root, MessageId::new()).sk;
        let SortKeys::Prefix(prefix) = messages(&id, None).sk else {
            panic!("a prefix")
        };
        assert!(!link.starts_with(&prefix));
        let SortKeys::Between(_, to) = messages(&id, Some(MessageId::new())).sk else {
            panic!("a range")
        };
        assert!(to < link);
        let SortKeys::Prefix(thread) = thread(&id, root, None).sk else {
            panic!("a prefix")
        };
        assert!(link.starts_with(&thread));
        assert!(
            !thread_link(&id, other, MessageId::new())
                .sk
                .starts_with(&thread)
        );
    }

    #[test]
    fn reactions_are_in_no_range_of_members_or_messages_and_one_range_per_page() {
        let id = ConversationId::parse("c-1").unwrap();
        let user = ruma::user_id!("@app_zz:localhost");
        let (first, inside, last) = (MessageId::new(), MessageId::new(), MessageId::new());
        let mine = reaction(&id, user, inside, "#👍").sk;
        let count = reaction_count(&id, inside, "#👍").sk;
        let SortKeys::Between(_, members_end) = members_and_conversation(&id).sk else {
            panic!("a range")
        };
        for sk in [&mine, &count] {
            assert!(
                sk.as_str() > members_end.as_str() && !sk.starts_with(MESSAGE),
                "{sk}"
            );
        }
        let within = |range: KeyRange, sk: &str| match range.sk {
            SortKeys::Between(from, to) => from.as_str() <= sk && sk <= to.as_str(),
            SortKeys::Prefix(prefix) => sk.starts_with(&prefix),
        };
        assert!(within(reactions_of(&id, user, first, last), &mine));
        assert!(within(reaction_counts(&id, first, last), &count));
        assert!(!within(reactions_of(&id, user, first, first), &mine));
        assert!(!within(reaction_counts(&id, last, last), &count));
        let other = ruma::user_id!("@app_zy:localhost");
        assert!(!within(reactions_of(&id, other, first, last), &mine));
        assert!(!within(reaction_counts(&id, first, last), &mine));
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
