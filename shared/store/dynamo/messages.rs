//! [`MessageStore`] on the table: messages in their conversation's
//! partition, counted into and out of the conversation's `outbox` in the
//! same transaction, and the event -> message lookup.

use aws_sdk_dynamodb::types::AttributeValue;
use ruma::{EventId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::DynamoStore;
use super::idempotency::remember_once;
use super::table::{Item, Write, item, key_of, n, record, s};
use crate::ids::ConversationId;
use crate::model::{
    ConversationStatus, Delivery, IdempotencyRecord, Message, MessageId, MessageStatus, Page,
    PendingOperation,
};
use crate::store::keys;
use crate::store::{MessageStore, Outbox, SendContext, StoreError};

/// The event -> message lookup item.
#[derive(Serialize, Deserialize)]
pub(super) struct EventLookup {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
}

/// When an outbox change applies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Only {
    Always,
    /// While the conversation is active.
    IfActive,
    /// While the conversation is active and nothing is in its outbox.
    IfActiveAndEmpty,
    /// While nothing is in the outbox.
    IfEmpty,
}

/// Adds `delta` to a conversation's outbox, if `only` holds.
pub(super) fn outbox_change(id: &ConversationId, delta: i64, only: Only) -> Write {
    let change = Write::update(
        keys::conversation(id),
        "SET #outbox = if_not_exists(#outbox, :zero) + :delta",
    )
    .name("#outbox", "outbox")
    .value(":zero", n(0))
    .value(":delta", n(delta));
    let active = |change: Write| {
        change
            .name("#status", "status")
            .value(":active", s(ConversationStatus::Active.as_str()))
    };
    match only {
        Only::Always => change,
        Only::IfActive => active(change.when("#status = :active")),
        Only::IfActiveAndEmpty => active(
            change
                .when("#status = :active AND (attribute_not_exists(#outbox) OR #outbox <= :zero)"),
        ),
        Only::IfEmpty => change.when("attribute_not_exists(#outbox) OR #outbox <= :zero"),
    }
}

/// Puts an item of a pending operation in the pending index's `partition`
/// and in its conversation's partition of the outbox index, at `since`.
pub(super) fn index_pending(
    item: &mut Item,
    partition: &str,
    id: &ConversationId,
    since: OffsetDateTime,
) {
    item.insert(keys::PENDING_KEY.into(), s(partition));
    item.insert(keys::OUTBOX_KEY.into(), s(keys::outbox(id)));
    item.insert(keys::PENDING_SINCE.into(), s(keys::pending_since(since)));
}

/// A message as an item: in the pending indexes while an operation on it
/// is pending, since that operation was accepted.
fn message_item(message: &Message) -> Result<Item, StoreError> {
    let mut item = item(keys::message(&message.conversation_id, message.id), message)?;
    if message.is_pending() {
        let since = message
            .pending_since()
            .unwrap_or_else(OffsetDateTime::now_utc);
        index_pending(&mut item, keys::PENDING, &message.conversation_id, since);
    }
    Ok(item)
}

/// The item that puts a message in its thread's range, if it is in one.
pub(super) fn thread_link(message: &Message) -> Result<Option<Item>, StoreError> {
    message
        .thread_id
        .map(|root| {
            let link = ThreadLink {
                message_id: message.id,
            };
            item(
                keys::thread_link(&message.conversation_id, root, message.id),
                &link,
            )
        })
        .transpose()
}

/// A thread's link to one of its messages.
#[derive(Serialize, Deserialize)]
struct ThreadLink {
    message_id: MessageId,
}

impl DynamoStore {
    /// Applies `update` (which has no condition of its own) to a message
    /// that is still pending (at `message`'s revision, with `same_revision`),
    /// with `also` in the same transaction, taking it out of the outbox
    /// (where a pending message always is). A message that is no longer
    /// pending is left alone, and that is no error: `Ok(false)`.
    async fn settle(
        &self,
        message: &Message,
        update: Write,
        also: Option<Write>,
        same_revision: bool,
    ) -> Result<bool, StoreError> {
        let update = update
            .name("#status", "status")
            .value(":pending", s(MessageStatus::Pending.as_str()));
        let update = match (same_revision, message.revision) {
            (false, _) => update.when("#status = :pending"),
            (true, revision) => update
                .when(if revision == 0 {
                    "#status = :pending AND (attribute_not_exists(#revision) OR #revision = :revision)"
                } else {
                    "#status = :pending AND #revision = :revision"
                })
                .name("#revision", "revision")
                .value(":revision", n(i64::try_from(revision).unwrap_or(i64::MAX))),
        };
        let mut writes = vec![update];
        writes.extend(also);
        writes.push(outbox_change(&message.conversation_id, -1, Only::Always));
        match self.table.transact(writes).await {
            Ok(()) => Ok(true),
            Err(StoreError::Rejected) => Ok(false),
            Err(other) => Err(other),
        }
    }
}

impl MessageStore for DynamoStore {
    async fn insert_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let id = &message.conversation_id;
        let member = keys::member(id, &message.sender.matrix_user_id);
        let mut writes = vec![Write::put(message_item(message)?).if_new()];
        match message.delivery {
            // Counted in the outbox while in flight, so nothing sent after
            // it can overtake it.
            Delivery::Direct => {
                writes.push(outbox_change(id, 1, Only::IfActiveAndEmpty));
                if message.needs_member() {
                    writes.push(
                        Write::check(member, "#joined = :yes")
                            .name("#joined", "joined")
                            .value(":yes", AttributeValue::Bool(true)),
                    );
                }
            }
            Delivery::Queued => {
                writes.push(outbox_change(id, 1, Only::IfActive));
                if message.needs_member() {
                    writes.push(Write::check_exists(member));
                }
            }
        }
        if let Some(record) = idempotency {
            writes.push(remember_once(record)?);
        }
        writes.extend(thread_link(message)?.map(Write::put));
        self.table.transact(writes).await
    }

    async fn send_context(
        &self,
        id: &ConversationId,
        user: &UserId,
        idempotency_scope: Option<&str>,
    ) -> Result<SendContext, StoreError> {
        let conversation = keys::conversation(id);
        let member = keys::member(id, user);
        let idempotency = idempotency_scope.map(keys::idempotency);
        let mut wanted = vec![conversation.clone(), member.clone()];
        wanted.extend(idempotency.clone());
        let mut context = SendContext::default();
        for item in self.table.batch_get(wanted).await? {
            let Some(key) = key_of(&item) else { continue };
            if key == conversation {
                context.conversation = Some(record(item)?);
            } else if key == member {
                context.member = Some(record(item)?);
            } else if idempotency.as_ref() == Some(&key) {
                let found: IdempotencyRecord = record(item)?;
                context.idempotency = found.is_live(OffsetDateTime::now_utc()).then_some(found);
            }
        }
        Ok(context)
    }

    async fn mark_sent(&self, message: &Message, event_id: &EventId) -> Result<bool, StoreError> {
        let lookup = EventLookup {
            conversation_id: message.conversation_id.clone(),
            message_id: message.id,
        };
        let sent = Write::update(
            keys::message(&message.conversation_id, message.id),
            "SET #status = :sent, #event = :event REMOVE #pending_key, #outbox_key, #pending_since",
        )
        .name("#pending_key", keys::PENDING_KEY)
        .name("#outbox_key", keys::OUTBOX_KEY)
        .name("#pending_since", keys::PENDING_SINCE)
        .name("#event", "event_id")
        .value(":sent", s(MessageStatus::Sent.as_str()))
        .value(":event", s(event_id.as_str()));
        let lookup = Write::put(item(keys::event(event_id), &lookup)?);
        self.settle(message, sent, Some(lookup), true).await
    }

    async fn mark_failed(&self, message: &Message, reason: &str) -> Result<bool, StoreError> {
        let failed = Write::update(
            keys::message(&message.conversation_id, message.id),
            "SET #status = :failed, #failure = :reason REMOVE #pending_key, #outbox_key, #pending_since",
        )
        .name("#pending_key", keys::PENDING_KEY)
        .name("#outbox_key", keys::OUTBOX_KEY)
        .name("#pending_since", keys::PENDING_SINCE)
        .name("#failure", "failure")
        .value(":failed", s(MessageStatus::Failed.as_str()))
        .value(":reason", s(reason));
        self.settle(message, failed, None, false).await
    }

    async fn update_message(
        &self,
        read: &Message,
        message: &Message,
        outbox: Outbox,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let id = &message.conversation_id;
        let mut next = message.clone();
        next.revision = read.revision + 1;
        // Records from before revisions were kept have none: revision 0.
        let unchanged = if read.revision == 0 {
            "(attribute_not_exists(#revision) OR #revision = :revision) AND #status = :status AND #delivery = :delivery"
        } else {
            "#revision = :revision AND #status = :status AND #delivery = :delivery"
        };
        let mut writes = vec![
            Write::put(message_item(&next)?)
                .when(unchanged)
                .name("#revision", "revision")
                .name("#status", "status")
                .name("#delivery", "delivery")
                .value(
                    ":revision",
                    n(i64::try_from(read.revision).unwrap_or(i64::MAX)),
                )
                .value(":status", s(read.status.as_str()))
                .value(":delivery", s(read.delivery.as_str())),
        ];
        match outbox {
            Outbox::Keep => {}
            Outbox::EnterIfEmpty => writes.push(outbox_change(id, 1, Only::IfEmpty)),
            Outbox::Enter => writes.push(outbox_change(id, 1, Only::Always)),
            Outbox::Leave => writes.push(outbox_change(id, -1, Only::Always)),
        }
        if let Some(record) = idempotency {
            writes.push(remember_once(record)?);
        }
        self.table.transact(writes).await
    }

    async fn mark_queued(&self, message: &Message) -> Result<(), StoreError> {
        let id = &message.conversation_id;
        let queue = Write::update(
            keys::message(id, message.id),
            "SET #delivery = :queued, #in_doubt = :in_doubt",
        )
        .when("#status = :pending AND #delivery = :direct")
        .name("#status", "status")
        .name("#delivery", "delivery")
        .name("#in_doubt", "in_doubt")
        .value(":in_doubt", AttributeValue::Bool(message.in_doubt))
        .value(":queued", s(Delivery::Queued.as_str()))
        .value(":direct", s(Delivery::Direct.as_str()))
        .value(":pending", s(MessageStatus::Pending.as_str()));
        // Already counted in the outbox while in flight.
        self.table.write(queue).await
    }

    async fn message(
        &self,
        id: &ConversationId,
        message: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.table.get(keys::message(id, message)).await
    }

    async fn stale_pending(
        &self,
        older_than: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.stale(keys::PENDING, older_than, limit).await
    }

    async fn outbox(
        &self,
        id: &ConversationId,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingOperation>, StoreError> {
        self.table
            .query_index_below(
                keys::OUTBOX_INDEX,
                (keys::OUTBOX_KEY, &keys::outbox(id)),
                (keys::PENDING_SINCE, &keys::pending_since(before)),
                limit,
            )
            .await?
            .into_iter()
            .map(|item| {
                let sync = key_of(&item).is_some_and(|key| keys::is_sync(&key.sk));
                Ok(if sync {
                    PendingOperation::Sync(record(item)?)
                } else {
                    PendingOperation::Message(Box::new(record(item)?))
                })
            })
            .collect()
    }

    async fn messages(
        &self,
        id: &ConversationId,
        limit: usize,
        before: Option<MessageId>,
    ) -> Result<Page, StoreError> {
        // One more than asked tells whether there is a next page; with a
        // cursor, the range is inclusive and may hold the cursor itself.
        let extra = if before.is_some() { 2 } else { 1 };
        let mut messages = self
            .table
            .query_last(keys::messages(id, before), limit.saturating_add(extra))
            .await?
            .into_iter()
            .map(record::<Message>)
            .filter(|message| !matches!((message, before), (Ok(m), Some(b)) if m.id == b))
            .collect::<Result<Vec<_>, _>>()?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        let next = if more {
            messages.last().map(|m| m.id)
        } else {
            None
        };
        Ok(Page { messages, next })
    }

    async fn thread(
        &self,
        id: &ConversationId,
        root: MessageId,
        limit: usize,
        before: Option<MessageId>,
    ) -> Result<Page, StoreError> {
        // The links, newest first (one more tells whether there is a next
        // page), then their messages in one consistent batch read.
        let extra = if before.is_some() { 2 } else { 1 };
        let mut ids = self
            .table
            .query_last(keys::thread(id, root, before), limit.saturating_add(extra))
            .await?
            .into_iter()
            .map(|item| record::<ThreadLink>(item).map(|link| link.message_id))
            .filter(|found| !matches!((found, before), (Ok(m), Some(b)) if *m == b))
            .collect::<Result<Vec<_>, _>>()?;
        let more = ids.len() > limit;
        ids.truncate(limit);
        let wanted = ids
            .iter()
            .map(|message| keys::message(id, *message))
            .collect();
        let mut messages = self
            .table
            .batch_get(wanted)
            .await?
            .into_iter()
            .map(record::<Message>)
            .collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|message| std::cmp::Reverse(message.id));
        let next = if more { ids.last().copied() } else { None };
        Ok(Page { messages, next })
    }

    async fn message_by_event(
        &self,
        event_id: &EventId,
    ) -> Result<Option<(ConversationId, MessageId)>, StoreError> {
        let lookup: Option<EventLookup> = self.table.get(keys::event(event_id)).await?;
        Ok(lookup.map(|lookup| (lookup.conversation_id, lookup.message_id)))
    }
}
