//! The transaction capability: what the appservice webhook
//! (`handlers::transactions`) reads and writes for a transaction the
//! homeserver pushed, in few round trips however many events it carries.
//!
//! A transaction is processed in phases, each one round trip (or requests
//! made at once): [`TransactionStore::transaction_context`] (the record of an
//! earlier processing, the rooms' conversations, the events' messages) in
//! one batch read; then the conversations with their members and
//! [`TransactionStore::messages_by_id`] at once; then the writes at once
//! ([`TransactionStore::store_inbound`], and message updates through
//! [`MessageStore`](super::MessageStore)); and, once the events are
//! published, [`TransactionStore::record_transaction`].

use std::collections::HashMap;
use std::future::Future;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};

use super::StoreError;
use crate::ids::ConversationId;
use crate::model::{Member, Message, MessageId, Removal, TransactionRecord};

/// What a transaction's events need from the table, read at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionContext {
    /// The record of a transaction processed before with this id and
    /// fingerprint.
    pub record: Option<TransactionRecord>,
    /// The conversations of the rooms asked about (those the bridge knows).
    pub rooms: HashMap<OwnedRoomId, ConversationId>,
    /// The messages of the events asked about (those the bridge knows).
    pub events: HashMap<OwnedEventId, (ConversationId, MessageId)>,
}

/// A change of a conversation's member from a membership event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// It joined: marked joined, no longer removed, with its display name
    /// when the event gave one; a Matrix user the bridge did not know is
    /// recorded as `member` (this record).
    Joined(Member),
    /// It left, or someone else removed it (`removal`). A member the bridge
    /// does not know stays unknown.
    Left {
        conversation_id: ConversationId,
        matrix_user_id: OwnedUserId,
        removal: Option<Removal>,
    },
}

/// Appservice transactions and the batched reads and writes of their events.
pub trait TransactionStore: Send + Sync {
    /// The record of transaction `txn_id` with `fingerprint`, the
    /// conversations of `rooms` and the messages of `events`, in one read.
    fn transaction_context(
        &self,
        txn_id: &str,
        fingerprint: &str,
        rooms: &[OwnedRoomId],
        events: &[OwnedEventId],
    ) -> impl Future<Output = Result<TransactionContext, StoreError>> + Send;

    /// The messages with these keys that exist (in any order), in one read.
    fn messages_by_id(
        &self,
        keys: &[(ConversationId, MessageId)],
    ) -> impl Future<Output = Result<Vec<Message>, StoreError>> + Send;

    /// Stores `messages` that arrived from Matrix, each with its event ->
    /// message lookup, and applies `members`' changes: at once, not
    /// atomically. Every write is idempotent, so a transaction processed
    /// again after failing part-way repeats them harmlessly. A stored
    /// message with the same id is replaced (leave out those found stored).
    fn store_inbound(
        &self,
        messages: &[Message],
        members: &[MemberChange],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Remembers a processed transaction (until its `expires_at`).
    fn record_transaction(
        &self,
        record: &TransactionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
