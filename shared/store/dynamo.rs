//! The DynamoDB adapter of [`Store`]: one table, `pk`/`sk` string keys,
//! records (de)serialized with `serde_dynamo`, invariants in condition
//! expressions, and multi-item changes in `TransactWriteItems`.
//!
//! Round trips: a direct send is one transaction to insert and one to mark
//! it sent; every lookup is one `GetItem`, `BatchGetItem` or `Query`.

use std::collections::HashMap;
use std::error::Error as StdError;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, PutRequest, TransactWriteItem, Update,
    WriteRequest,
};
use ruma::{EventId, RoomId, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::keys::{self, META};
use super::{Claim, SendContext, Store, StoreError};
use crate::ids::{AppUserId, ConversationId};
use crate::model::{
    self, Conversation, ConversationStatus, Delivery, IdempotencyRecord, Member, Message,
    MessageId, Page, Puppet,
};

type Item = HashMap<String, AttributeValue>;

/// How often unprocessed batch items are tried again before giving up.
const BATCH_ATTEMPTS: u32 = 5;

/// The room -> conversation lookup item.
#[derive(Serialize, Deserialize)]
struct RoomLookup {
    conversation_id: ConversationId,
}

/// The event -> message lookup item.
#[derive(Serialize, Deserialize)]
struct EventLookup {
    conversation_id: ConversationId,
    message_id: MessageId,
}

/// [`Store`] on a DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn to_item<T: Serialize>(
    pk: String,
    sk: impl Into<String>,
    record: &T,
) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(record).map_err(|err| StoreError::Corrupt(err.into()))?;
    item.extend(key(pk, sk));
    Ok(item)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|err| StoreError::Corrupt(err.into()))
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn values(pairs: Vec<(&str, AttributeValue)>) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn unavailable(err: impl StdError + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(err))
}

/// `Rejected` for a failed condition, `Unavailable` for anything else.
fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if err.code() == Some("ConditionalCheckFailedException") {
        StoreError::Rejected
    } else {
        unavailable(err)
    }
}

/// A cancelled transaction whose every reason is a failed condition is
/// `Rejected`; a conflict or throttle is `Unavailable` (worth a retry).
fn classify_transaction<R>(err: SdkError<TransactWriteItemsError, R>) -> StoreError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    {
        let reasons = cancelled.cancellation_reasons();
        let only_conditions = !reasons.is_empty()
            && reasons.iter().all(|reason| {
                matches!(
                    reason.code(),
                    None | Some("None" | "ConditionalCheckFailed")
                )
            });
        if only_conditions {
            return StoreError::Rejected;
        }
    }
    unavailable(err)
}

fn build<T>(result: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    result.map_err(|err| StoreError::Unavailable(Box::new(err)))
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn get<T: DeserializeOwned>(&self, key: Item) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        output.item.map(from_item).transpose()
    }

    async fn put<T: Serialize>(
        &self,
        pk: String,
        sk: impl Into<String>,
        record: &T,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(pk, sk, record)?))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Reads many keys with `BatchGetItem`, retrying unprocessed keys.
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending = Some(build(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build(),
            )?);
            for attempt in 0.. {
                let Some(request) = pending.take() else { break };
                if attempt == BATCH_ATTEMPTS {
                    return Err(StoreError::Unavailable(
                        "batch read kept being throttled".into(),
                    ));
                }
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(classify)?;
                if let Some(mut responses) = output.responses {
                    found.extend(responses.remove(&self.table).unwrap_or_default());
                }
                pending = output
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.table));
                if pending.is_some() {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
                }
            }
        }
        Ok(found)
    }

    /// Writes many items with `BatchWriteItem`, retrying unprocessed ones.
    async fn batch_put(&self, items: Vec<Item>) -> Result<(), StoreError> {
        for chunk in items.chunks(25) {
            let mut pending = chunk
                .iter()
                .map(|item| {
                    let put = build(PutRequest::builder().set_item(Some(item.clone())).build())?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            for attempt in 0.. {
                if pending.is_empty() {
                    break;
                }
                if attempt == BATCH_ATTEMPTS {
                    return Err(StoreError::Unavailable(
                        "batch write kept being throttled".into(),
                    ));
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(classify)?;
                pending = output
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
                }
            }
        }
        Ok(())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(classify_transaction)?;
        Ok(())
    }

    fn put_item(
        &self,
        item: Item,
        condition: Option<&str>,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .set_condition_expression(condition.map(str::to_owned))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn check_item(
        &self,
        key: Item,
        condition: &str,
        names: HashMap<String, String>,
        values: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, StoreError> {
        let check = build(
            ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values((!values.is_empty()).then_some(values))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    fn update_item(
        &self,
        key: Item,
        update: &str,
        condition: Option<&str>,
        names: HashMap<String, String>,
        values: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = build(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression(update)
                .set_condition_expression(condition.map(str::to_owned))
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn conversation_key(id: &ConversationId) -> Item {
        key(keys::conversation(id), META)
    }

    /// Applies `update` to a message that is still pending, with `also` in the
    /// same transaction, taking it out of the outbox if it was queued. A
    /// message that is no longer pending is left alone, and that is no error.
    async fn settle(
        &self,
        message: &Message,
        update: &str,
        name: (&str, &str),
        mut update_values: Vec<(&str, AttributeValue)>,
        also: Option<TransactWriteItem>,
    ) -> Result<(), StoreError> {
        let id = &message.conversation_id;
        update_values.push((":pending", s("pending")));
        let mut items = vec![self.update_item(
            key(keys::conversation(id), keys::message(message.id)),
            update,
            Some("#status = :pending"),
            names(&[("#status", "status"), name]),
            values(update_values),
        )?];
        items.extend(also);
        if message.delivery == Delivery::Queued {
            items.push(self.outbox_change(id, -1, false)?);
        }
        match self.transact(items).await {
            Err(StoreError::Rejected) => Ok(()),
            other => other,
        }
    }

    /// Updates a conversation for as long as `claim` holds it.
    async fn update_claimed(
        &self,
        id: &ConversationId,
        claim: Uuid,
        update: &str,
        name: (&str, &str),
        value: (&str, AttributeValue),
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::conversation_key(id)))
            .update_expression(update)
            .condition_expression("#claim.#token = :token")
            .set_expression_attribute_names(Some(names(&[
                ("#claim", "claim"),
                ("#token", "token"),
                name,
            ])))
            .set_expression_attribute_values(Some(values(vec![
                (":token", s(claim.to_string())),
                value,
            ])))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Adds `delta` to a conversation's outbox, optionally only while it is active.
    fn outbox_change(
        &self,
        id: &ConversationId,
        delta: i64,
        only_if_active: bool,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut attribute_names = vec![("#outbox", "outbox")];
        let mut attribute_values = vec![(":zero", n(0)), (":delta", n(delta))];
        if only_if_active {
            attribute_names.push(("#status", "status"));
            attribute_values.push((":active", s("active")));
        }
        self.update_item(
            Self::conversation_key(id),
            "SET #outbox = if_not_exists(#outbox, :zero) + :delta",
            only_if_active.then_some("#status = :active"),
            names(&attribute_names),
            values(attribute_values),
        )
    }
}

impl Store for DynamoStore {
    async fn claim_conversation(
        &self,
        draft: &Conversation,
        until: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let token = Uuid::new_v4();
        let claim = model::Claim { token, until };
        let conversation = Conversation {
            status: ConversationStatus::Provisioning,
            claim: Some(claim.clone()),
            ..draft.clone()
        };
        let created = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(
                keys::conversation(&draft.id),
                META,
                &conversation,
            )?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(classify);
        match created {
            Ok(_) => {
                return Ok(Claim::Granted {
                    token,
                    conversation,
                });
            }
            Err(StoreError::Rejected) => {}
            Err(other) => return Err(other),
        }
        let existing: Conversation = self
            .get(Self::conversation_key(&draft.id))
            .await?
            .ok_or_else(|| {
                StoreError::Unavailable("the conversation vanished while being claimed".into())
            })?;
        if existing.status != ConversationStatus::Provisioning {
            return Ok(Claim::Exists(existing));
        }
        let held = existing.claim.clone();
        if held
            .as_ref()
            .is_some_and(|held| held.until > OffsetDateTime::now_utc())
        {
            return Ok(Claim::Busy(existing));
        }
        let (condition, mut vals) = match &held {
            Some(held) => (
                "#claim.#token = :old",
                values(vec![(":old", s(held.token.to_string()))]),
            ),
            None => ("attribute_not_exists(#claim)", HashMap::new()),
        };
        vals.insert(
            ":claim".into(),
            serde_dynamo::to_attribute_value(&claim)
                .map_err(|err| StoreError::Corrupt(err.into()))?,
        );
        let taken = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::conversation_key(&draft.id)))
            .update_expression("SET #claim = :claim")
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[
                ("#claim", "claim"),
                ("#token", "token"),
            ])))
            .set_expression_attribute_values(Some(vals))
            .send()
            .await
            .map_err(classify);
        match taken {
            Ok(_) => Ok(Claim::Granted {
                token,
                conversation: Conversation {
                    claim: Some(claim),
                    ..existing
                },
            }),
            Err(StoreError::Rejected) => Ok(Claim::Busy(existing)),
            Err(other) => Err(other),
        }
    }

    async fn record_room(
        &self,
        id: &ConversationId,
        claim: Uuid,
        room_id: &RoomId,
    ) -> Result<(), StoreError> {
        self.update_claimed(
            id,
            claim,
            "SET #room = :room",
            ("#room", "room_id"),
            (":room", s(room_id.as_str())),
        )
        .await
    }

    async fn release_claim(&self, id: &ConversationId, claim: Uuid) -> Result<(), StoreError> {
        let released = self
            .update_claimed(
                id,
                claim,
                "SET #claim.#until = :zero",
                ("#until", "until"),
                (":zero", n(0)),
            )
            .await;
        match released {
            Err(StoreError::Rejected) => Ok(()),
            other => other,
        }
    }

    async fn activate_conversation(
        &self,
        conversation: &Conversation,
        claim: Uuid,
        members: &[Member],
    ) -> Result<(), StoreError> {
        let room_id = conversation.room_id.as_deref().ok_or_else(|| {
            StoreError::Corrupt("a conversation is activated without a room".into())
        })?;
        let member_items = members
            .iter()
            .map(|member| {
                to_item(
                    keys::conversation(&member.conversation_id),
                    keys::member(&member.matrix_user_id),
                    member,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_put(member_items).await?;
        let active = Conversation {
            status: ConversationStatus::Active,
            claim: None,
            ..conversation.clone()
        };
        let activate = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_item(
                    keys::conversation(&conversation.id),
                    META,
                    &active,
                )?))
                .condition_expression("#claim.#token = :token")
                .expression_attribute_names("#claim", "claim")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":token", s(claim.to_string()))
                .build(),
        )?;
        let lookup = RoomLookup {
            conversation_id: conversation.id.clone(),
        };
        self.transact(vec![
            TransactWriteItem::builder().put(activate).build(),
            self.put_item(to_item(keys::room(room_id), META, &lookup)?, None)?,
        ])
        .await
    }

    async fn conversation_by_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<ConversationId>, StoreError> {
        let lookup: Option<RoomLookup> = self.get(key(keys::room(room_id), META)).await?;
        Ok(lookup.map(|lookup| lookup.conversation_id))
    }

    async fn message_by_event(
        &self,
        event_id: &EventId,
    ) -> Result<Option<(ConversationId, MessageId)>, StoreError> {
        let lookup: Option<EventLookup> = self.get(key(keys::event(event_id), META)).await?;
        Ok(lookup.map(|lookup| (lookup.conversation_id, lookup.message_id)))
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.get(Self::conversation_key(id)).await
    }

    async fn conversation_with_members(
        &self,
        id: &ConversationId,
    ) -> Result<Option<(Conversation, Vec<Member>)>, StoreError> {
        let mut conversation = None;
        let mut members = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(keys::conversation(id)))
                .expression_attribute_values(":from", s(keys::MEMBER_PREFIX))
                .expression_attribute_values(":to", s(META))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in output.items.unwrap_or_default() {
                if item.get("sk") == Some(&s(META)) {
                    conversation = Some(from_item::<Conversation>(item)?);
                } else {
                    members.push(from_item::<Member>(item)?);
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(conversation.map(|conversation| (conversation, members)))
    }

    async fn member(
        &self,
        id: &ConversationId,
        user: &UserId,
    ) -> Result<Option<Member>, StoreError> {
        self.get(key(keys::conversation(id), keys::member(user)))
            .await
    }

    async fn mark_joined(&self, id: &ConversationId, user: &UserId) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::conversation(id), keys::member(user))))
            .update_expression("SET #joined = :yes")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#joined", "joined")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn puppets(&self, users: &[AppUserId]) -> Result<Vec<Puppet>, StoreError> {
        let keys = users
            .iter()
            .map(|user| key(keys::puppet(user), "PUPPET"))
            .collect::<Vec<_>>();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.batch_get(keys)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    async fn put_puppet(&self, puppet: &Puppet) -> Result<(), StoreError> {
        self.put(keys::puppet(&puppet.user_id), "PUPPET", puppet)
            .await
    }

    async fn insert_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let id = &message.conversation_id;
        let member_key = key(
            keys::conversation(id),
            keys::member(&message.sender.matrix_user_id),
        );
        let mut items = vec![self.put_item(
            to_item(keys::conversation(id), keys::message(message.id), message)?,
            Some("attribute_not_exists(pk)"),
        )?];
        match message.delivery {
            Delivery::Direct => {
                items.push(self.check_item(
                    Self::conversation_key(id),
                    "#status = :active AND (attribute_not_exists(#outbox) OR #outbox <= :zero)",
                    names(&[("#status", "status"), ("#outbox", "outbox")]),
                    values(vec![(":active", s("active")), (":zero", n(0))]),
                )?);
                items.push(self.check_item(
                    member_key,
                    "#joined = :yes",
                    names(&[("#joined", "joined")]),
                    values(vec![(":yes", AttributeValue::Bool(true))]),
                )?);
            }
            Delivery::Queued => {
                items.push(self.outbox_change(id, 1, true)?);
                items.push(self.check_item(
                    member_key,
                    "attribute_exists(#pk)",
                    names(&[("#pk", "pk")]),
                    HashMap::new(),
                )?);
            }
        }
        if let Some(record) = idempotency {
            items.push(self.put_item(
                to_item(keys::idempotency(&record.scope), META, record)?,
                Some("attribute_not_exists(pk)"),
            )?);
        }
        self.transact(items).await
    }

    async fn send_context(
        &self,
        id: &ConversationId,
        user: &UserId,
        idempotency_scope: Option<&str>,
    ) -> Result<SendContext, StoreError> {
        let mut wanted = vec![
            Self::conversation_key(id),
            key(keys::conversation(id), keys::member(user)),
        ];
        if let Some(scope) = idempotency_scope {
            wanted.push(key(keys::idempotency(scope), META));
        }
        let mut context = SendContext::default();
        for item in self.batch_get(wanted).await? {
            let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) =
                (item.get("pk"), item.get("sk"))
            else {
                continue;
            };
            if pk.starts_with("IDEM#") {
                context.idempotency = Some(from_item(item)?);
            } else if sk == META {
                context.conversation = Some(from_item(item)?);
            } else {
                context.member = Some(from_item(item)?);
            }
        }
        Ok(context)
    }

    async fn mark_sent(&self, message: &Message, event_id: &EventId) -> Result<(), StoreError> {
        let lookup = EventLookup {
            conversation_id: message.conversation_id.clone(),
            message_id: message.id,
        };
        let lookup = self.put_item(to_item(keys::event(event_id), META, &lookup)?, None)?;
        self.settle(
            message,
            "SET #status = :sent, #event = :event",
            ("#event", "event_id"),
            vec![(":sent", s("sent")), (":event", s(event_id.as_str()))],
            Some(lookup),
        )
        .await
    }

    async fn mark_failed(&self, message: &Message, reason: &str) -> Result<(), StoreError> {
        self.settle(
            message,
            "SET #status = :failed, #failure = :reason",
            ("#failure", "failure"),
            vec![(":failed", s("failed")), (":reason", s(reason))],
            None,
        )
        .await
    }

    async fn mark_queued(&self, message: &Message) -> Result<(), StoreError> {
        let id = &message.conversation_id;
        self.transact(vec![
            self.update_item(
                key(keys::conversation(id), keys::message(message.id)),
                "SET #delivery = :queued",
                Some("#status = :pending AND #delivery = :direct"),
                names(&[("#status", "status"), ("#delivery", "delivery")]),
                values(vec![
                    (":queued", s("queued")),
                    (":direct", s("direct")),
                    (":pending", s("pending")),
                ]),
            )?,
            self.outbox_change(id, 1, false)?,
        ])
        .await
    }

    async fn message(
        &self,
        id: &ConversationId,
        message: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.get(key(keys::conversation(id), keys::message(message)))
            .await
    }

    async fn messages(
        &self,
        id: &ConversationId,
        limit: usize,
        before: Option<MessageId>,
    ) -> Result<Page, StoreError> {
        // One more than asked tells whether there is a next page; with a
        // cursor, the range is inclusive and may hold the cursor itself.
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(keys::conversation(id)))
            .expression_attribute_values(":from", s(keys::MESSAGE_PREFIX))
            .scan_index_forward(false)
            .consistent_read(true);
        let query = match before {
            Some(before) => query
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":to", s(keys::message(before)))
                .limit(i32::try_from(limit + 2).unwrap_or(i32::MAX)),
            None => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :from)")
                .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX)),
        };
        let output = query.send().await.map_err(classify)?;
        let mut messages = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_item::<Message>)
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
}
