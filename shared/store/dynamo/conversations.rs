//! [`ConversationStore`] on the table: a conversation's record under
//! [`keys::conversation`], claimed with a conditional put and a conditional
//! takeover, activated in one transaction with its room lookup.

use ruma::RoomId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::DynamoStore;
use super::table::{Write, item, key_of, n, record, s, unless_rejected, value};
use crate::ids::ConversationId;
use crate::model::{self, Conversation, ConversationStatus, Member};
use crate::store::keys;
use crate::store::{Claim, ConversationStore, StoreError};

/// The room -> conversation lookup item.
#[derive(Serialize, Deserialize)]
pub(super) struct RoomLookup {
    pub conversation_id: ConversationId,
}

/// `write`, only for as long as `claim` holds the conversation.
fn while_claimed(write: Write, claim: Uuid) -> Write {
    write
        .when("#claim.#token = :token")
        .name("#claim", "claim")
        .name("#token", "token")
        .value(":token", s(claim.to_string()))
}

impl ConversationStore for DynamoStore {
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
        let key = keys::conversation(&draft.id);
        let created = self
            .table
            .write(Write::put(item(key.clone(), &conversation)?).if_new())
            .await;
        match created {
            Ok(()) => {
                return Ok(Claim::Granted {
                    token,
                    conversation,
                });
            }
            Err(StoreError::Rejected) => {}
            Err(other) => return Err(other),
        }
        let existing: Conversation = self.table.get(key.clone()).await?.ok_or_else(|| {
            StoreError::Unavailable("the conversation vanished while being claimed".into())
        })?;
        if existing.status != ConversationStatus::Provisioning {
            return Ok(Claim::Exists(existing));
        }
        if existing
            .claim
            .as_ref()
            .is_some_and(|held| held.until > OffsetDateTime::now_utc())
        {
            return Ok(Claim::Busy(existing));
        }
        let takeover = Write::update(key, "SET #claim = :claim")
            .name("#claim", "claim")
            .value(":claim", value(&claim)?);
        let takeover = match &existing.claim {
            Some(held) => takeover
                .when("#claim.#token = :old")
                .name("#token", "token")
                .value(":old", s(held.token.to_string())),
            None => takeover.when("attribute_not_exists(#claim)"),
        };
        match self.table.write(takeover).await {
            Ok(()) => Ok(Claim::Granted {
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
        let update = Write::update(keys::conversation(id), "SET #room = :room")
            .name("#room", "room_id")
            .value(":room", s(room_id.as_str()));
        self.table.write(while_claimed(update, claim)).await
    }

    async fn release_claim(&self, id: &ConversationId, claim: Uuid) -> Result<(), StoreError> {
        let expire = Write::update(keys::conversation(id), "SET #claim.#until = :zero")
            .name("#until", "until")
            .value(":zero", n(0));
        unless_rejected(self.table.write(while_claimed(expire, claim)).await)
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
                item(
                    keys::member(&member.conversation_id, &member.matrix_user_id),
                    member,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.table.batch_put(member_items).await?;
        let active = Conversation {
            status: ConversationStatus::Active,
            claim: None,
            ..conversation.clone()
        };
        let lookup = RoomLookup {
            conversation_id: conversation.id.clone(),
        };
        self.table
            .transact(vec![
                while_claimed(
                    Write::put(item(keys::conversation(&conversation.id), &active)?),
                    claim,
                ),
                Write::put(item(keys::room(room_id), &lookup)?),
            ])
            .await
    }

    async fn conversation_by_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<ConversationId>, StoreError> {
        let lookup: Option<RoomLookup> = self.table.get(keys::room(room_id)).await?;
        Ok(lookup.map(|lookup| lookup.conversation_id))
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.table.get(keys::conversation(id)).await
    }

    async fn conversation_with_members(
        &self,
        id: &ConversationId,
    ) -> Result<Option<(Conversation, Vec<Member>)>, StoreError> {
        let own = keys::conversation(id);
        let mut conversation = None;
        let mut members = Vec::new();
        for item in self
            .table
            .query_all(keys::members_and_conversation(id))
            .await?
        {
            if key_of(&item).as_ref() == Some(&own) {
                conversation = Some(record::<Conversation>(item)?);
            } else {
                members.push(record::<Member>(item)?);
            }
        }
        Ok(conversation.map(|conversation| (conversation, members)))
    }
}
