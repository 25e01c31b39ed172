//! The in-memory fake of the store port, for unit tests of domain logic. It
//! keeps the same conditions as the DynamoDB adapter, checked by the shared
//! suite. The state lives here; each capability is implemented in its own
//! module on it.

mod conversations;
mod media;
mod members;
mod messages;
mod syncs;
mod transactions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ruma::{OwnedEventId, OwnedRoomId, UserId};

use crate::ids::{AppUserId, ConversationId};
use crate::model::{
    Conversation, IdempotencyRecord, MediaId, MediaRecord, Member, Message, MessageId, PendingSync,
    Puppet, SyncSubject, TransactionRecord,
};

#[derive(Default)]
struct State {
    conversations: HashMap<ConversationId, Conversation>,
    members: BTreeMap<(ConversationId, String), Member>,
    messages: BTreeMap<(ConversationId, MessageId), Message>,
    puppets: HashMap<AppUserId, Puppet>,
    idempotency: HashMap<String, IdempotencyRecord>,
    rooms: HashMap<OwnedRoomId, ConversationId>,
    events: HashMap<OwnedEventId, (ConversationId, MessageId)>,
    media: HashMap<(ConversationId, MediaId), MediaRecord>,
    /// The pending index: when each message's pending operation began.
    pending_since: HashMap<(ConversationId, MessageId), time::OffsetDateTime>,
    syncs: HashMap<(ConversationId, SyncSubject), PendingSync>,
    /// Appservice transactions, by id and fingerprint.
    transactions: HashMap<(String, String), TransactionRecord>,
}

/// The store port in a mutex. Clones share their state, as clones of a
/// [`DynamoStore`](super::DynamoStore) share the table.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write:
        // every method checks all conditions before it changes anything.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn member_key(id: &ConversationId, user: &UserId) -> (ConversationId, String) {
    (id.clone(), user.to_string())
}
