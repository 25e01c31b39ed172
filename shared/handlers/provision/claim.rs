//! The creation protocol: a conversation id is claimed in the table before
//! its room is made, so racing requests make one room; the room is created
//! under the conversation's alias ([`room`](super::room)), so an attempt
//! that failed or crashed after creating it is found again instead of
//! making another; its id is recorded as soon as it is known; the
//! conversation turns active, with its members, only while the claim still
//! holds. A failure releases the claim, so the request can be repeated at
//! once.

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use ruma::{OwnedRoomId, OwnedUserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::plan::{CreateConversation, Plan, ensure_same_kind};
use super::service::{Provisioned, Provisioning};
use super::{avatar, room, sync};
use crate::error::Error;
use crate::handlers::puppets::{WantedPuppet, ensure_puppets};
use crate::ids::ConversationId;
use crate::matrix::Matrix;
use crate::metrics::Counter;
use crate::model::{Conversation, ConversationKind, ConversationStatus, Member, Puppet};
use crate::queue::RetryQueue;
use crate::store::{Claim, Store, StoreError};

/// How long a provisioning claim holds: longer than the function may run.
pub const CLAIM_LEASE: time::Duration = time::Duration::seconds(35);
/// How long a request waits for a racing request to finish the same conversation.
const RACE_WAIT: Duration = Duration::from_secs(8);
/// How many members are brought into a new room at once.
const JOIN_CONCURRENCY: usize = 4;

fn taken_over(id: &ConversationId) -> Error {
    Error::Conflict(format!(
        "conversation '{id}' was taken over by another request; retry"
    ))
}

impl<S: Store, M: Matrix, Q: RetryQueue> Provisioning<S, M, Q> {
    /// Creates a conversation's room with its members, once; the same
    /// request again answers with what exists.
    pub async fn create_conversation(
        &self,
        input: CreateConversation,
    ) -> Result<Provisioned, Error> {
        let parent = match &input.parent_id {
            Some(parent_id) => Some(self.parent_space(parent_id).await?),
            None => None,
        };
        let plan = Plan::from_request(&self.namer, self.matrix.bot(), input, parent)?;
        self.create(&plan).await
    }

    /// Creates the conversation a checked request plans.
    pub async fn create(&self, plan: &Plan) -> Result<Provisioned, Error> {
        let now = OffsetDateTime::now_utc();
        let draft = Conversation {
            name: plan.name.clone(),
            topic: plan.topic.clone(),
            visibility: plan.visibility,
            parent_id: plan.parent.as_ref().map(|(id, _)| id.clone()),
            ..Conversation::draft(plan.id.clone(), plan.kind, now)
        };
        match self
            .store
            .claim_conversation(&draft, now + CLAIM_LEASE)
            .await?
        {
            Claim::Exists(existing) => self.existing(&draft, existing).await,
            Claim::Busy(existing) => {
                ensure_same_kind(&draft, &existing)?;
                self.await_racing_request(&draft).await
            }
            Claim::Granted {
                token,
                conversation,
            } => {
                // A claim taken over from an abandoned request keeps what
                // that request stored; it must be the same conversation.
                let provisioned = match ensure_same_kind(&draft, &conversation) {
                    Ok(()) => self.provision(plan, conversation, token).await,
                    Err(err) => Err(err),
                };
                if provisioned.is_err()
                    && let Err(err) = self.store.release_claim(&plan.id, token).await
                {
                    tracing::warn!(error = %err, "could not release a provisioning claim");
                }
                let (conversation, members) = provisioned?;
                self.metrics.count(Counter::RoomsCreated);
                Ok(Provisioned {
                    conversation,
                    members,
                    created: true,
                })
            }
        }
    }

    /// The space a new conversation goes in: an active conversation of kind
    /// `space` (`400` for another kind or none, `409` for one not active).
    pub async fn parent_space(
        &self,
        parent_id: &ConversationId,
    ) -> Result<(ConversationId, OwnedRoomId), Error> {
        let parent =
            self.store.conversation(parent_id).await?.ok_or_else(|| {
                Error::Invalid(format!("parent_id: no conversation '{parent_id}'"))
            })?;
        if parent.kind != ConversationKind::Space {
            return Err(Error::Invalid(format!(
                "parent_id: '{parent_id}' is not a conversation of kind 'space'"
            )));
        }
        match (parent.status, parent.room_id) {
            (ConversationStatus::Active, Some(room_id)) => Ok((parent.id, room_id)),
            _ => Err(Error::Conflict(format!(
                "parent_id: space '{parent_id}' is not active"
            ))),
        }
    }

    /// Does the Matrix side under a granted claim, then activates the conversation.
    async fn provision(
        &self,
        plan: &Plan,
        mut conversation: Conversation,
        token: Uuid,
    ) -> Result<(Conversation, Vec<Member>), Error> {
        let wanted: Vec<WantedPuppet> = plan
            .members
            .iter()
            .filter_map(|member| {
                member.user_id.clone().map(|user| WantedPuppet {
                    user,
                    matrix_user_id: member.matrix_user_id.clone(),
                    display_name: member.display_name.clone(),
                    avatar: None,
                    defaults_only: true,
                })
            })
            .collect();
        let puppets: HashMap<OwnedUserId, Puppet> =
            ensure_puppets(&self.store, &self.matrix, &self.metrics, &wanted)
                .await?
                .into_iter()
                .map(|puppet| (puppet.matrix_user_id.clone(), puppet))
                .collect();
        if let Some(wanted) = &plan.avatar {
            let current = (
                conversation.avatar_url.as_deref(),
                conversation.avatar_source.as_deref(),
            );
            let (uri, source) =
                avatar::store(&self.matrix, &self.fetcher, "avatar_url", wanted, current).await?;
            conversation.avatar_url = Some(uri.to_string());
            conversation.avatar_source = source;
        }

        let (room_id, fresh) = match conversation.room_id.clone() {
            Some(room_id) => (room_id, false),
            None => {
                let spec = plan.room_spec(Self::avatar_uri(&conversation));
                let (room_id, fresh) = room::create_once(&self.matrix, &spec, &plan.alias).await?;
                match self.store.record_room(&plan.id, token, &room_id).await {
                    Err(StoreError::Rejected) => return Err(taken_over(&plan.id)),
                    other => other?,
                }
                tracing::info!(conversation = %plan.id, %room_id, fresh, "room recorded");
                (room_id, fresh)
            }
        };

        if let Some((_, space)) = &plan.parent {
            self.matrix.add_space_child(space, &room_id).await?;
        }
        let members = if fresh {
            self.join_fresh(&room_id, &plan.members, &puppets).await?
        } else {
            // Made by an earlier attempt, which may have got anywhere.
            self.reconcile(&room_id, &plan.members).await?
        };
        conversation.room_id = Some(room_id);
        match self
            .store
            .activate_conversation(&conversation, token, &members)
            .await
        {
            Err(StoreError::Rejected) => return Err(taken_over(&plan.id)),
            other => other?,
        }
        conversation.status = ConversationStatus::Active;
        conversation.claim = None;
        Ok((conversation, members))
    }

    /// Brings the members into a room just made, which invited them all
    /// with their power levels: puppets join, with their per-conversation
    /// name where it differs from their global one.
    async fn join_fresh(
        &self,
        room_id: &OwnedRoomId,
        members: &[Member],
        puppets: &HashMap<OwnedUserId, Puppet>,
    ) -> Result<Vec<Member>, Error> {
        stream::iter(members.iter().cloned())
            .map(|mut member| async move {
                if member.user_id.is_some() {
                    let puppet = puppets.get(&member.matrix_user_id);
                    room::join_with_name(&self.matrix, room_id, &member, puppet).await?;
                    member.joined = true;
                }
                Ok::<_, Error>(member)
            })
            .buffered(JOIN_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Brings every member in line in a room an earlier attempt made.
    async fn reconcile(
        &self,
        room_id: &OwnedRoomId,
        members: &[Member],
    ) -> Result<Vec<Member>, Error> {
        stream::iter(members.iter().cloned())
            .map(|mut member| async move {
                let synced = sync::sync_member(
                    &self.store,
                    &self.matrix,
                    &self.metrics,
                    room_id,
                    &member.matrix_user_id,
                    member.user_id.is_some(),
                    Some(&member),
                    false,
                )
                .await;
                match synced {
                    Ok(joined) => member.joined = joined && member.user_id.is_some(),
                    // A moderator removed it from the room meanwhile: it stays out.
                    Err(Error::Removed(removal)) => {
                        member.joined = false;
                        member.removed = Some(removal);
                    }
                    Err(err) => return Err(err),
                }
                Ok::<_, Error>(member)
            })
            .buffered(JOIN_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The answer for a conversation that exists: the same request again
    /// gets it; another kind, or an archived conversation, is a conflict.
    async fn existing(
        &self,
        draft: &Conversation,
        existing: Conversation,
    ) -> Result<Provisioned, Error> {
        ensure_same_kind(draft, &existing)?;
        if existing.status == ConversationStatus::Archived {
            return Err(Error::Conflict(format!(
                "conversation '{}' was archived; its id cannot be provisioned again",
                existing.id
            )));
        }
        let (conversation, members) = self
            .store
            .conversation_with_members(&existing.id)
            .await?
            .ok_or_else(|| {
                Error::Store(StoreError::Unavailable(
                    "a conversation vanished while being read".into(),
                ))
            })?;
        Ok(Provisioned {
            conversation,
            members,
            created: false,
        })
    }

    /// Waits for a racing request to finish provisioning the same conversation.
    async fn await_racing_request(&self, draft: &Conversation) -> Result<Provisioned, Error> {
        let started = std::time::Instant::now();
        while started.elapsed() < RACE_WAIT {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(current) = self.store.conversation(&draft.id).await?
                && current.status != ConversationStatus::Provisioning
            {
                return self.existing(draft, current).await;
            }
        }
        Err(Error::Conflict(format!(
            "conversation '{}' is being provisioned by another request; retry shortly",
            draft.id
        )))
    }
}
