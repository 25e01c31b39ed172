//! The store port: everything the bridge keeps, behind one capability trait
//! per kind of record, and the [`Store`] umbrella that handlers depend on.
//!
//! - [`ConversationStore`]: claiming, provisioning and reading conversations;
//! - [`MemberStore`]: members of a conversation and application puppets;
//! - [`MessageStore`]: messages, the outbox and the lookups that lead to them
//!   (idempotency records included: they have no trait of their own, see
//!   [`MessageStore`]);
//! - [`MediaStore`]: files uploaded into a conversation, for attachments;
//! - [`ReactionStore`]: users' reactions to messages, and their counts;
//! - [`SyncStore`]: changes of conversations and members on their way to
//!   Matrix, through the same outbox;
//! - [`TransactionStore`]: the appservice transactions the homeserver
//!   pushed, and the batched reads and writes of their events.
//!
//! [`DynamoStore`] is the real adapter (one DynamoDB table, single-table
//! design); [`MemoryStore`] is the in-memory fake for unit tests. Both pass
//! the same suite in `tests/store.rs`, so the fake cannot drift.
//!
//! Conditional writes carry the invariants, not read-then-write code:
//! a conversation is claimed once, an idempotency key is used once, and a
//! message is sent directly only while the sender is a joined member of an
//! active conversation with nothing queued before it.
//!
//! Code that calls store methods on a concrete store imports
//! [`prelude`]`::*`; code generic over `S: Store` needs only [`Store`].

mod conversations;
mod dynamo;
mod keys;
mod media;
mod members;
mod memory;
mod messages;
mod reactions;
mod syncs;
mod transactions;

pub use conversations::{Claim, ConversationStore};
pub use dynamo::DynamoStore;
pub use keys::{OUTBOX_INDEX, OUTBOX_KEY, PENDING_INDEX, PENDING_KEY, PENDING_SINCE};
pub use media::MediaStore;
pub use members::MemberStore;
pub use memory::MemoryStore;
pub use messages::{MessageStore, Outbox, SendContext};
pub use reactions::ReactionStore;
pub use syncs::{MemberWrite, SyncContext, SyncStore};
pub use transactions::{MemberChange, TransactionContext, TransactionStore};

/// The store traits, for one glob import: `use crate::store::prelude::*;`.
pub mod prelude {
    pub use super::{
        ConversationStore, MediaStore, MemberStore, MessageStore, ReactionStore, Store, SyncStore,
        TransactionStore,
    };
}

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition of a conditional write did not hold.
    #[error("a condition of the write did not hold")]
    Rejected,
    /// The table could not be reached, throttled, or a transaction conflicted.
    #[error("the table is unavailable")]
    Unavailable(#[source] Cause),
    /// A stored item could not be read back into its record.
    #[error("a stored item is malformed")]
    Corrupt(#[source] Cause),
}

/// The bridge's persistent state: every capability, as the handlers need it.
/// Implemented for every type that has them all.
pub trait Store:
    ConversationStore
    + MemberStore
    + MessageStore
    + MediaStore
    + ReactionStore
    + SyncStore
    + TransactionStore
{
}

impl<T> Store for T where
    T: ConversationStore
        + MemberStore
        + MessageStore
        + MediaStore
        + ReactionStore
        + SyncStore
        + TransactionStore
{
}
