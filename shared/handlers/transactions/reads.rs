//! What the table knows about a transaction's events, read in at most two
//! rounds of requests made at once:
//!
//! 1. one `BatchGetItem` for the transaction's record, the conversations of
//!    rooms not cached yet and the messages of the events the transaction
//!    refers to (edited, redacted, replied to, read); at the same time, for
//!    conversations whose room is cached, their members (one query each) and
//!    the messages the events may already have become or confirm (one
//!    `BatchGetItem`);
//! 2. only when round 1 found more: the same for the conversations it
//!    resolved, and the messages the referred-to events are; and, only for
//!    redactions of stored events that are no message, the reactions they
//!    take back (a `GetItem` each).
//!
//! A warm container with only new messages (and members, typing, receipts)
//! needs round 1 only.

use std::collections::{HashMap, HashSet};

use futures::future::try_join_all;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};

use super::body::Transaction;
use super::classify::{Incoming, Kind};
use super::content::Posted;
use crate::handlers::cache::Settled;
use crate::ids::ConversationId;
use crate::model::{Member, Message, MessageId, Reaction, TransactionRecord};
use crate::store::{Store, StoreError, TransactionContext};

/// What the table knows.
#[derive(Default)]
pub struct Known {
    /// The record of an earlier processing of this transaction.
    pub record: Option<TransactionRecord>,
    pub conversations: HashMap<OwnedRoomId, ConversationId>,
    pub members: HashMap<(ConversationId, OwnedUserId), Member>,
    pub messages: HashMap<(ConversationId, MessageId), Message>,
    /// Event -> message, for the events the transaction refers to.
    pub by_event: HashMap<OwnedEventId, (ConversationId, MessageId)>,
    /// Event -> reaction, for the redacted events that are no message.
    pub reactions: HashMap<OwnedEventId, Reaction>,
}

/// The message a new message event becomes, or an echo confirms.
fn own_message(kind: &Kind) -> Option<MessageId> {
    match kind {
        Kind::Posted {
            head,
            posted: Posted::New { .. },
        } => Some(MessageId::for_event(head.at.0, &head.event_id)),
        Kind::Echo { message_id, .. } => Some(*message_id),
        _ => None,
    }
}

/// The events whose messages the transaction's events need.
fn referred(kind: &Kind) -> Vec<&OwnedEventId> {
    match kind {
        Kind::Posted {
            posted: Posted::New {
                reply_to, thread, ..
            },
            ..
        } => reply_to.iter().chain(thread).collect(),
        Kind::Posted {
            posted: Posted::Edit { target, .. },
            ..
        }
        | Kind::Redaction { target, .. }
        | Kind::Reacted { target, .. } => vec![target],
        Kind::Receipt { event_id, .. } => vec![event_id],
        _ => Vec::new(),
    }
}

/// Reads what the table knows about `incoming`.
pub async fn read<S: Store>(
    store: &S,
    rooms: &Settled<OwnedRoomId, ConversationId>,
    transaction: &Transaction,
    incoming: &[Incoming],
) -> Result<Known, StoreError> {
    let mut known = Known::default();
    let mut uncached = Vec::new();
    for room in incoming.iter().map(|i| &i.room).collect::<HashSet<_>>() {
        match rooms.get(room) {
            Some(conversation) => {
                known.conversations.insert(room.clone(), conversation);
            }
            None => uncached.push(room.clone()),
        }
    }
    let events: Vec<OwnedEventId> = incoming
        .iter()
        .flat_map(|i| referred(&i.kind))
        .collect::<HashSet<_>>()
        .into_iter()
        .cloned()
        .collect();
    let cached: Vec<ConversationId> = known.conversations.values().cloned().collect();
    let (context, prefetched) = tokio::join!(
        store.transaction_context(
            &transaction.id,
            &transaction.fingerprint,
            &uncached,
            &events
        ),
        prefetch(store, &known.conversations, &cached, incoming, &[]),
    );
    let TransactionContext {
        record,
        rooms: resolved,
        events: by_event,
    } = context?;
    known.absorb(prefetched?);
    known.record = record;
    for (room, conversation) in &resolved {
        rooms.put(room, conversation);
    }
    known.conversations.extend(resolved.clone());
    known.by_event = by_event;

    // Round 2: the conversations round 1 resolved, and the messages of the
    // events referred to.
    let fresh: Vec<ConversationId> = resolved
        .into_values()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let targets: Vec<(ConversationId, MessageId)> = known
        .by_event
        .values()
        .filter(|key| !known.messages.contains_key(*key))
        .cloned()
        .collect();
    // At the same time, the reactions that redactions of events that are
    // no message (stored, or of this transaction) may take back.
    let reactions = reactions_redacted(store, &known.by_event, incoming);
    if !fresh.is_empty() || !targets.is_empty() {
        let prefetched = prefetch(store, &known.conversations, &fresh, incoming, &targets);
        let (more, reactions) = tokio::join!(prefetched, reactions);
        known.absorb(more?);
        known.reactions = reactions?;
    } else {
        known.reactions = reactions.await?;
    }
    Ok(known)
}

/// The event an incoming event is, if it is a room event.
fn event_of(kind: &Kind) -> Option<&OwnedEventId> {
    match kind {
        Kind::Posted { head, .. }
        | Kind::Redaction { head, .. }
        | Kind::Reacted { head, .. }
        | Kind::Membership { head, .. } => Some(&head.event_id),
        _ => None,
    }
}

/// The stored reactions that the redactions of `incoming` name: those of
/// their targets that are neither a known message nor an event of the
/// transaction itself (one `GetItem` each, at once; none without such a
/// redaction).
async fn reactions_redacted<S: Store>(
    store: &S,
    messages: &HashMap<OwnedEventId, (ConversationId, MessageId)>,
    incoming: &[Incoming],
) -> Result<HashMap<OwnedEventId, Reaction>, StoreError> {
    let own: HashSet<&OwnedEventId> = incoming.iter().filter_map(|i| event_of(&i.kind)).collect();
    let unknown: HashSet<&OwnedEventId> = incoming
        .iter()
        .filter_map(|i| match &i.kind {
            Kind::Redaction { target, .. }
                if !messages.contains_key(target) && !own.contains(target) =>
            {
                Some(target)
            }
            _ => None,
        })
        .collect();
    let found = try_join_all(unknown.into_iter().map(|event| async move {
        Ok::<_, StoreError>((event.clone(), store.reaction_by_event(event).await?))
    }))
    .await?;
    Ok(found
        .into_iter()
        .filter_map(|(event, reaction)| Some((event, reaction?)))
        .collect())
}

/// Members and messages read in one round.
#[derive(Default)]
struct Prefetched {
    members: Vec<Member>,
    messages: Vec<Message>,
}

impl Known {
    fn absorb(&mut self, prefetched: Prefetched) {
        for member in prefetched.members {
            self.members.insert(
                (
                    member.conversation_id.clone(),
                    member.matrix_user_id.clone(),
                ),
                member,
            );
        }
        for message in prefetched.messages {
            self.messages
                .insert((message.conversation_id.clone(), message.id), message);
        }
    }
}

/// The members of `conversations` (a query each, for those with more than
/// echoes), and in one batch the messages their events may be, with `also`.
async fn prefetch<S: Store>(
    store: &S,
    rooms: &HashMap<OwnedRoomId, ConversationId>,
    conversations: &[ConversationId],
    incoming: &[Incoming],
    also: &[(ConversationId, MessageId)],
) -> Result<Prefetched, StoreError> {
    let wanted: HashSet<&ConversationId> = conversations.iter().collect();
    let ours = |i: &&Incoming| rooms.get(&i.room).filter(|c| wanted.contains(c)).cloned();
    let keys: Vec<(ConversationId, MessageId)> = incoming
        .iter()
        .filter_map(|i| Some((ours(&i)?, own_message(&i.kind)?)))
        .chain(also.iter().cloned())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Members give names and memberships; an echo needs neither.
    let with_members: HashSet<ConversationId> = incoming
        .iter()
        .filter(|i| !matches!(i.kind, Kind::Echo { .. }))
        .filter_map(|i| ours(&i))
        .collect();
    let members = try_join_all(
        with_members
            .iter()
            .map(|conversation| store.conversation_with_members(conversation)),
    );
    let messages = async {
        if keys.is_empty() {
            Ok(Vec::new())
        } else {
            store.messages_by_id(&keys).await
        }
    };
    let (members, messages) = tokio::try_join!(members, messages)?;
    Ok(Prefetched {
        members: members
            .into_iter()
            .flatten()
            .flat_map(|(_, members)| members)
            .collect(),
        messages,
    })
}
