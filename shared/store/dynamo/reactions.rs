//! [`ReactionStore`] on the table: each reaction under
//! [`keys::reaction`] (written once), its key's count under
//! [`keys::reaction_count`] moved in the same transaction (`ADD`, so
//! concurrent reactions never conflict on a read-modify-write), and the
//! event -> reaction lookup once it has its event.

use ruma::{EventId, UserId};
use serde::{Deserialize, Serialize};

use super::DynamoStore;
use super::table::{Write, item, n, record, s};
use crate::ids::ConversationId;
use crate::model::{MessageId, Reaction, ReactionCount};
use crate::store::keys;
use crate::store::{ReactionStore, StoreError};

/// The count item of a message and key.
#[derive(Serialize, Deserialize)]
struct Count {
    message_id: MessageId,
    key: String,
    #[serde(default)]
    count: i64,
}

/// The event -> reaction lookup item: where the reaction is.
#[derive(Serialize, Deserialize)]
struct Lookup {
    conversation_id: ConversationId,
    message_id: MessageId,
    user: ruma::OwnedUserId,
    key: String,
}

/// Moves the count of `reaction`'s key by `delta`.
fn count(reaction: &Reaction, delta: i64) -> Write {
    Write::update(
        keys::reaction_count(
            &reaction.conversation_id,
            reaction.message_id,
            &reaction.key,
        ),
        "ADD #count :delta SET #message = :message, #key = :key",
    )
    .name("#count", "count")
    .name("#message", "message_id")
    .name("#key", "key")
    .value(":delta", n(delta))
    .value(":message", s(reaction.message_id.to_string()))
    .value(":key", s(reaction.key.clone()))
}

fn key_of(reaction: &Reaction) -> keys::Key {
    keys::reaction(
        &reaction.conversation_id,
        &reaction.sender.matrix_user_id,
        reaction.message_id,
        &reaction.key,
    )
}

fn lookup(reaction: &Reaction, event_id: &EventId) -> Result<Write, StoreError> {
    let lookup = Lookup {
        conversation_id: reaction.conversation_id.clone(),
        message_id: reaction.message_id,
        user: reaction.sender.matrix_user_id.clone(),
        key: reaction.key.clone(),
    };
    Ok(Write::put(item(keys::reaction_event(event_id), &lookup)?))
}

impl ReactionStore for DynamoStore {
    async fn add_reaction(&self, reaction: &Reaction) -> Result<(), StoreError> {
        let mut writes = vec![
            Write::put(item(key_of(reaction), reaction)?).if_new(),
            count(reaction, 1),
        ];
        if let Some(event_id) = &reaction.event_id {
            writes.push(lookup(reaction, event_id)?);
        }
        self.table.transact(writes).await
    }

    async fn reaction(
        &self,
        id: &ConversationId,
        message: MessageId,
        user: &UserId,
        key: &str,
    ) -> Result<Option<Reaction>, StoreError> {
        self.table.get(keys::reaction(id, user, message, key)).await
    }

    async fn mark_reaction_sent(
        &self,
        reaction: &Reaction,
        event_id: &EventId,
    ) -> Result<(), StoreError> {
        let sent = Write::update(key_of(reaction), "SET #event = :event")
            .when("#id = :id AND attribute_not_exists(#event)")
            .name("#event", "event_id")
            .name("#id", "id")
            .value(":event", s(event_id.as_str()))
            .value(":id", s(reaction.id.to_string()));
        self.table
            .transact(vec![sent, lookup(reaction, event_id)?])
            .await
    }

    async fn remove_reaction(&self, reaction: &Reaction) -> Result<(), StoreError> {
        let mut writes = vec![
            Write::delete(key_of(reaction))
                .when("#id = :id")
                .name("#id", "id")
                .value(":id", s(reaction.id.to_string())),
            count(reaction, -1),
        ];
        if let Some(event_id) = &reaction.event_id {
            writes.push(Write::delete(keys::reaction_event(event_id)));
        }
        self.table.transact(writes).await
    }

    async fn reaction_by_event(&self, event_id: &EventId) -> Result<Option<Reaction>, StoreError> {
        let Some(lookup) = self
            .table
            .get::<Lookup>(keys::reaction_event(event_id))
            .await?
        else {
            return Ok(None);
        };
        self.reaction(
            &lookup.conversation_id,
            lookup.message_id,
            &lookup.user,
            &lookup.key,
        )
        .await
    }

    async fn reaction_counts(
        &self,
        id: &ConversationId,
        first: MessageId,
        last: MessageId,
        reader: Option<&UserId>,
    ) -> Result<Vec<(MessageId, ReactionCount)>, StoreError> {
        let counts = self.table.query_all(keys::reaction_counts(id, first, last));
        let mine = async {
            match reader {
                Some(reader) => {
                    self.table
                        .query_all(keys::reactions_of(id, reader, first, last))
                        .await
                }
                None => Ok(Vec::new()),
            }
        };
        let (counts, mine) = futures::future::try_join(counts, mine).await?;
        let mine = mine
            .into_iter()
            .map(record::<Reaction>)
            .collect::<Result<Vec<_>, _>>()?;
        counts
            .into_iter()
            .map(record::<Count>)
            .filter(|count| count.as_ref().map_or(true, |count| count.count > 0))
            .map(|count| {
                let count = count?;
                let me = mine
                    .iter()
                    .any(|r| r.message_id == count.message_id && r.key == count.key);
                Ok((
                    count.message_id,
                    ReactionCount {
                        key: count.key,
                        count: u32::try_from(count.count).unwrap_or(u32::MAX),
                        me,
                    },
                ))
            })
            .collect()
    }
}
