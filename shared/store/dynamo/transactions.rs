//! [`TransactionStore`] on the table: transaction records under
//! [`keys::transaction`], the room and event lookups read in one
//! `BatchGetItem`, messages from Matrix written with `BatchWriteItem`, and
//! member changes as `UpdateItem`s that touch only what a membership event
//! says, all sent at once.

use aws_sdk_dynamodb::types::AttributeValue;
use ruma::{OwnedEventId, OwnedRoomId};

use super::DynamoStore;
use super::conversations::RoomLookup;
use super::messages::{EventLookup, thread_link};
use super::table::{Write, item, key_of, record, s, unless_rejected, value};
use crate::ids::ConversationId;
use crate::model::{Message, MessageId, Role, TransactionRecord};
use crate::store::keys::{self, Key};
use crate::store::{MemberChange, StoreError, TransactionContext, TransactionStore};

/// A member's join: its identity and role only where the record is new.
const JOINED: &str = "SET #conversation = if_not_exists(#conversation, :conversation), \
    #user = if_not_exists(#user, :user), #role = if_not_exists(#role, :role), \
    #joined = :yes REMOVE #removed";
const JOINED_NAMED: &str = "SET #conversation = if_not_exists(#conversation, :conversation), \
    #user = if_not_exists(#user, :user), #role = if_not_exists(#role, :role), \
    #joined = :yes, #name = :name REMOVE #removed";
const LEFT: &str = "SET #joined = :no";
const REMOVED: &str = "SET #joined = :no, #removed = :removal";

fn member_write(change: &MemberChange) -> Result<Write, StoreError> {
    Ok(match change {
        MemberChange::Joined(member) => {
            let key = keys::member(&member.conversation_id, &member.matrix_user_id);
            let expression = if member.display_name.is_some() {
                JOINED_NAMED
            } else {
                JOINED
            };
            let mut write = Write::update(key, expression)
                .name("#conversation", "conversation_id")
                .name("#user", "matrix_user_id")
                .name("#role", "role")
                .name("#joined", "joined")
                .name("#removed", "removed")
                .value(":conversation", s(member.conversation_id.as_str()))
                .value(":user", s(member.matrix_user_id.as_str()))
                .value(":role", value(&Role::Member)?)
                .value(":yes", AttributeValue::Bool(true));
            if let Some(name) = &member.display_name {
                write = write.name("#name", "display_name").value(":name", s(name));
            }
            write
        }
        MemberChange::Left {
            conversation_id,
            matrix_user_id,
            removal,
        } => {
            let key = keys::member(conversation_id, matrix_user_id);
            let write = match removal {
                Some(removal) => Write::update(key, REMOVED)
                    .name("#removed", "removed")
                    .value(":removal", value(removal)?),
                None => Write::update(key, LEFT),
            };
            write
                .if_exists()
                .name("#joined", "joined")
                .value(":no", AttributeValue::Bool(false))
        }
    })
}

impl TransactionStore for DynamoStore {
    async fn transaction_context(
        &self,
        txn_id: &str,
        fingerprint: &str,
        rooms: &[OwnedRoomId],
        events: &[OwnedEventId],
    ) -> Result<TransactionContext, StoreError> {
        let transaction = keys::transaction(txn_id, fingerprint);
        let room_keys: Vec<(Key, &OwnedRoomId)> =
            rooms.iter().map(|room| (keys::room(room), room)).collect();
        let event_keys: Vec<(Key, &OwnedEventId)> = events
            .iter()
            .map(|event| (keys::event(event), event))
            .collect();
        let wanted = std::iter::once(transaction.clone())
            .chain(room_keys.iter().map(|(key, _)| key.clone()))
            .chain(event_keys.iter().map(|(key, _)| key.clone()))
            .collect();
        let mut context = TransactionContext::default();
        for item in self.table.batch_get(wanted).await? {
            let Some(key) = key_of(&item) else { continue };
            if key == transaction {
                context.record = Some(record(item)?);
            } else if let Some((_, room)) = room_keys.iter().find(|(k, _)| *k == key) {
                let lookup: RoomLookup = record(item)?;
                context
                    .rooms
                    .insert((*room).clone(), lookup.conversation_id);
            } else if let Some((_, event)) = event_keys.iter().find(|(k, _)| *k == key) {
                let lookup: EventLookup = record(item)?;
                context.events.insert(
                    (*event).clone(),
                    (lookup.conversation_id, lookup.message_id),
                );
            }
        }
        Ok(context)
    }

    async fn messages_by_id(
        &self,
        keys: &[(ConversationId, MessageId)],
    ) -> Result<Vec<Message>, StoreError> {
        let keys = keys
            .iter()
            .map(|(conversation, message)| keys::message(conversation, *message))
            .collect();
        self.table
            .batch_get(keys)
            .await?
            .into_iter()
            .map(record)
            .collect()
    }

    async fn store_inbound(
        &self,
        messages: &[Message],
        members: &[MemberChange],
    ) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(messages.len() * 2);
        for message in messages {
            let id = &message.conversation_id;
            items.push(item(keys::message(id, message.id), message)?);
            items.extend(thread_link(message)?);
            if let Some(event_id) = &message.event_id {
                let lookup = EventLookup {
                    conversation_id: id.clone(),
                    message_id: message.id,
                };
                items.push(item(keys::event(event_id), &lookup)?);
            }
        }
        let writes = members
            .iter()
            .map(member_write)
            .collect::<Result<Vec<_>, _>>()?;
        let members = writes
            .into_iter()
            .map(|write| async { unless_rejected(self.table.write(write).await) });
        let (stored, changed) = tokio::join!(
            self.table.batch_put(items),
            futures::future::try_join_all(members)
        );
        stored?;
        changed?;
        Ok(())
    }

    async fn record_transaction(&self, record: &TransactionRecord) -> Result<(), StoreError> {
        let key = keys::transaction(&record.txn_id, &record.fingerprint);
        self.table.write(Write::put(item(key, record)?)).await
    }
}
