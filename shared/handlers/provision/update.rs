//! Conversation changes: its name, topic and avatar (`PATCH`), and its
//! archiving (`DELETE`): the record changes in the table and the room is
//! brought in line through [`apply`](super::apply). An archived
//! conversation keeps its record and members, as `archived`; its puppets
//! leave and its room becomes invite-only, out of the directory.

use super::apply::Change;
use super::avatar;
use super::members::{ATTEMPTS, changed_meanwhile, writable};
use super::plan::{Avatar, MAX_NAME, MAX_TOPIC, UpdateConversation, checked_text};
use super::service::{Applied, Provisioning};
use crate::error::Error;
use crate::ids::ConversationId;
use crate::matrix::Matrix;
use crate::model::{Conversation, ConversationStatus, SyncSubject};
use crate::queue::RetryQueue;
use crate::store::{Store, StoreError};

impl<S: Store, M: Matrix, Q: RetryQueue> Provisioning<S, M, Q> {
    /// Changes what `input` gives of a conversation's name, topic and avatar.
    pub async fn update_conversation(
        &self,
        id: &ConversationId,
        input: UpdateConversation,
    ) -> Result<(Conversation, Applied), Error> {
        let name = input
            .name
            .map(|name| checked_text("name", name, MAX_NAME))
            .transpose()?;
        let topic = input
            .topic
            .map(|topic| checked_text("topic", topic, MAX_TOPIC))
            .transpose()?;
        let wanted_avatar = input
            .avatar_url
            .map(|url| Avatar::parse("avatar_url", &url))
            .transpose()?;
        let mut avatar = None;
        for _ in 0..ATTEMPTS {
            let context = self.store.sync_context(id, &SyncSubject::Room).await?;
            let read = writable(id, &context)?;
            if let (Some(wanted), None) = (&wanted_avatar, &avatar) {
                let current = (read.avatar_url.as_deref(), read.avatar_source.as_deref());
                avatar = Some(
                    avatar::store(&self.matrix, &self.fetcher, "avatar_url", wanted, current)
                        .await?,
                );
            }
            let mut next = read.clone();
            next.name = name.clone().or(next.name);
            next.topic = topic.clone().or(next.topic);
            if let Some((uri, source)) = &avatar {
                next.avatar_url = Some(uri.to_string());
                next.avatar_source = source.clone();
            }
            if next == *read && context.sync.is_none() {
                return Ok((next, Applied::Done));
            }
            let change = Change::Room { read, next: &next };
            match self.apply(&context, SyncSubject::Room, change).await {
                Ok(applied) => return Ok((next, applied)),
                Err(Error::Store(StoreError::Rejected)) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(changed_meanwhile(id))
    }

    /// Archives a conversation; archiving it again changes nothing.
    pub async fn archive_conversation(&self, id: &ConversationId) -> Result<Applied, Error> {
        for _ in 0..ATTEMPTS {
            let context = self.store.sync_context(id, &SyncSubject::Room).await?;
            if context
                .conversation
                .as_ref()
                .is_some_and(|c| c.status == ConversationStatus::Archived)
            {
                return Ok(Applied::Done);
            }
            let read = writable(id, &context)?;
            let next = Conversation {
                status: ConversationStatus::Archived,
                ..read.clone()
            };
            let change = Change::Room { read, next: &next };
            match self.apply(&context, SyncSubject::Room, change).await {
                Ok(applied) => return Ok(applied),
                Err(Error::Store(StoreError::Rejected)) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(changed_meanwhile(id))
    }
}
