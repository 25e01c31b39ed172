//! The creation protocol: a conversation id is claimed in the table before
//! its room is made, so racing requests make one room; the room id is
//! recorded as soon as it exists, so a request that takes over an abandoned
//! claim reuses it; the conversation turns active, with its members, only
//! while the claim still holds.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use lambda_http::{Body, Response};
use ruma::OwnedRoomId;
use uuid::Uuid;

use super::Provisioner;
use super::plan::{Plan, ensure_same_kind};
use crate::api::views::ConversationView;
use crate::api::{self, ApiError};
use crate::handlers::puppets::WantedPuppet;
use crate::matrix::Matrix;
use crate::model::{Conversation, ConversationStatus, Member};
use crate::store::{Store, StoreError};

/// How long a provisioning claim holds: longer than the function may run.
pub(super) const CLAIM_LEASE: time::Duration = time::Duration::seconds(35);
/// How long a request waits for a racing request to finish the same conversation.
const RACE_WAIT: Duration = Duration::from_secs(8);
/// How many puppets join the new room at once.
const JOIN_CONCURRENCY: usize = 4;

impl<S: Store, M: Matrix> Provisioner<S, M> {
    /// Does the Matrix side under a granted claim, then activates the conversation.
    pub(super) async fn provision(
        &self,
        plan: &Plan,
        mut conversation: Conversation,
        token: Uuid,
    ) -> Result<(Conversation, Vec<Member>), ApiError> {
        let wanted: Vec<WantedPuppet> = plan
            .members
            .iter()
            .filter_map(|member| {
                member.user_id.clone().map(|user| WantedPuppet {
                    user,
                    display_name: member.display_name.clone(),
                    avatar_url: None,
                })
            })
            .collect();
        self.puppets(&wanted).await?;

        let room_id = match conversation.room_id.clone() {
            Some(room_id) => room_id,
            None => {
                // A refusal here is about the request (say, a member who
                // cannot be invited): the caller hears it as a 400.
                let room_id = self.matrix.create_room(&plan.room_spec()).await?;
                match self.store.record_room(&plan.id, token, &room_id).await {
                    Err(StoreError::Rejected) => {
                        return Err(ApiError::Conflict(format!(
                            "conversation '{}' was taken over by another request; retry",
                            plan.id
                        )));
                    }
                    other => other?,
                }
                tracing::info!(conversation = %plan.id, %room_id, "room created");
                room_id
            }
        };

        if let Some((_, space)) = &plan.parent {
            self.matrix.add_space_child(space, &room_id).await?;
        }
        let members = self.join_puppets(&room_id, &plan.members).await?;
        conversation.room_id = Some(room_id);
        match self
            .store
            .activate_conversation(&conversation, token, &members)
            .await
        {
            Err(StoreError::Rejected) => Err(ApiError::Conflict(format!(
                "conversation '{}' was taken over by another request; retry",
                plan.id
            ))),
            other => other.map_err(ApiError::from),
        }?;
        conversation.status = ConversationStatus::Active;
        conversation.claim = None;
        Ok((conversation, members))
    }

    /// Joins every puppet member to the room (they were invited at creation).
    async fn join_puppets(
        &self,
        room_id: &OwnedRoomId,
        members: &[Member],
    ) -> Result<Vec<Member>, ApiError> {
        stream::iter(members.iter().cloned())
            .map(|mut member| async move {
                if member.user_id.is_some() {
                    self.matrix.join(room_id, &member.matrix_user_id).await?;
                    member.joined = true;
                }
                Ok::<_, ApiError>(member)
            })
            .buffered(JOIN_CONCURRENCY)
            .try_collect()
            .await
    }

    pub(super) async fn existing(
        &self,
        draft: &Conversation,
        existing: Conversation,
    ) -> Result<Response<Body>, ApiError> {
        ensure_same_kind(draft, &existing)?;
        let (conversation, members) = self
            .store
            .conversation_with_members(&existing.id)
            .await?
            .ok_or_else(|| ApiError::unavailable("a conversation vanished while being read"))?;
        api::json(200, &ConversationView::new(&conversation, &members))
    }

    /// Waits for a racing request to finish provisioning the same conversation.
    pub(super) async fn await_racing_request(
        &self,
        draft: &Conversation,
    ) -> Result<Response<Body>, ApiError> {
        let started = std::time::Instant::now();
        while started.elapsed() < RACE_WAIT {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(current) = self.store.conversation(&draft.id).await? {
                if current.status != ConversationStatus::Provisioning {
                    return self.existing(draft, current).await;
                }
            }
        }
        Err(ApiError::Conflict(format!(
            "conversation '{}' is being provisioned by another request; retry shortly",
            draft.id
        )))
    }
}
