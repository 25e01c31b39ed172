//! Member changes: a member added or its role or per-conversation name
//! changed, and a member removed, each written to the table and brought to
//! Matrix through [`apply`](super::apply).
//!
//! Rules: only active conversations change (else `409`); a direct
//! conversation keeps its two members (`400`); a group keeps an owner while
//! it has other members (`409`). The same change again changes nothing. A
//! change the homeserver refuses for good is undone in the table.
//!
//! A Matrix moderator's kick or ban stands: a member the webhook (or a
//! sync) found removed that way is not put back by a `PUT` (`409`, and
//! nothing changes) unless the application says so with `"rejoin": true`;
//! then a ban is lifted and the member invited and joined again.

use ruma::UserId;

use super::apply::Change;
use super::plan::{MemberRef, PutMember, checked_display_name, member_ids};
use super::service::{Applied, Provisioning};
use crate::error::Error;
use crate::ids::ConversationId;
use crate::matrix::Matrix;
use crate::model::{
    Conversation, ConversationKind, ConversationStatus, Member, Removal, Role, SyncSubject,
};
use crate::queue::RetryQueue;
use crate::store::{MemberWrite, Store, StoreError, SyncContext};

/// How many times a change is tried again when the conversation changed
/// under it.
pub(super) const ATTEMPTS: usize = 3;

/// The conversation a change is made in, if it may change.
pub(super) fn writable<'a>(
    id: &ConversationId,
    context: &'a SyncContext,
) -> Result<&'a Conversation, Error> {
    let conversation = context
        .conversation
        .as_ref()
        .ok_or_else(|| Error::NotFound(format!("conversation '{id}' not found")))?;
    match (conversation.status, &conversation.room_id) {
        (ConversationStatus::Active, Some(_)) => Ok(conversation),
        (ConversationStatus::Archived, _) => {
            Err(Error::Conflict(format!("conversation '{id}' is archived")))
        }
        _ => Err(Error::Conflict(format!(
            "conversation '{id}' is still being provisioned"
        ))),
    }
}

pub(super) fn changed_meanwhile(id: &ConversationId) -> Error {
    Error::Conflict(format!(
        "conversation '{id}' kept changing during the request; retry"
    ))
}

impl<S: Store, M: Matrix, Q: RetryQueue> Provisioning<S, M, Q> {
    /// Adds a member, or changes its role and per-conversation name.
    pub async fn put_member(
        &self,
        id: &ConversationId,
        who: &MemberRef,
        input: PutMember,
    ) -> Result<(Member, Applied), Error> {
        let (matrix_user_id, user_id) = member_ids(&self.namer, self.matrix.bot(), who)?;
        let display_name =
            checked_display_name("display_name", input.display_name, user_id.is_some())?;
        let subject = SyncSubject::Member {
            matrix_user_id: matrix_user_id.clone(),
            user_id: user_id.clone(),
        };
        for _ in 0..ATTEMPTS {
            let context = self.store.sync_context(id, &subject).await?;
            let conversation = writable(id, &context)?;
            let previous = context.member.clone();
            if let Some(removal) = previous.as_ref().and_then(|p| p.removed.as_ref())
                && !input.rejoin
            {
                return Err(stays_removed(&matrix_user_id, removal));
            }
            if previous.is_none() && conversation.kind == ConversationKind::Direct {
                return Err(Error::Invalid(format!(
                    "conversation '{id}' is direct: it keeps its two members"
                )));
            }
            let member = Member {
                conversation_id: id.clone(),
                matrix_user_id: matrix_user_id.clone(),
                user_id: user_id.clone(),
                role: input.role,
                display_name: display_name
                    .clone()
                    .or_else(|| previous.as_ref().and_then(|p| p.display_name.clone())),
                joined: previous.as_ref().is_some_and(|p| p.joined),
                // Its typing window, if one is open, stays.
                typing_until: previous.as_ref().and_then(|p| p.typing_until),
                // Not removed, or `rejoin`: the application wants it back.
                removed: None,
            };
            if previous.as_ref() == Some(&member) && context.sync.is_none() {
                return Ok((member, Applied::Done));
            }
            if previous.as_ref().is_some_and(|p| p.role == Role::Owner)
                && member.role != Role::Owner
            {
                self.keep_an_owner(conversation, &matrix_user_id).await?;
            }
            let change = Change::Member {
                write: MemberWrite::Put(&member),
                readmit: input.rejoin,
            };
            match self.apply(&context, subject.clone(), change).await {
                Ok(applied) => return Ok((member, applied)),
                Err(Error::Store(StoreError::Rejected)) => continue,
                Err(err) => {
                    return Err(self.undo(id, &matrix_user_id, previous.as_ref(), err).await);
                }
            }
        }
        Err(changed_meanwhile(id))
    }

    /// Removes a member: a puppet leaves the room, a Matrix user is kicked.
    /// Removing someone who is not a member is no error.
    pub async fn remove_member(
        &self,
        id: &ConversationId,
        who: &MemberRef,
    ) -> Result<Applied, Error> {
        let (matrix_user_id, user_id) = member_ids(&self.namer, self.matrix.bot(), who)?;
        let subject = SyncSubject::Member {
            matrix_user_id: matrix_user_id.clone(),
            user_id,
        };
        for _ in 0..ATTEMPTS {
            let context = self.store.sync_context(id, &subject).await?;
            let conversation = writable(id, &context)?;
            let previous = context.member.clone();
            if previous.is_none() && context.sync.is_none() {
                return Ok(Applied::Done);
            }
            if previous.is_some() && conversation.kind == ConversationKind::Direct {
                return Err(Error::Invalid(format!(
                    "conversation '{id}' is direct: it keeps its two members"
                )));
            }
            if previous.as_ref().is_some_and(|p| p.role == Role::Owner) {
                self.keep_an_owner(conversation, &matrix_user_id).await?;
            }
            let change = Change::Member {
                write: MemberWrite::Remove(&matrix_user_id),
                readmit: false,
            };
            match self.apply(&context, subject.clone(), change).await {
                Ok(applied) => return Ok(applied),
                Err(Error::Store(StoreError::Rejected)) => continue,
                Err(err) => {
                    return Err(self.undo(id, &matrix_user_id, previous.as_ref(), err).await);
                }
            }
        }
        Err(changed_meanwhile(id))
    }

    /// `409` if `leaving` is a group's last owner and others remain.
    async fn keep_an_owner(
        &self,
        conversation: &Conversation,
        leaving: &UserId,
    ) -> Result<(), Error> {
        if conversation.kind != ConversationKind::Group {
            return Ok(());
        }
        let members = self
            .store
            .conversation_with_members(&conversation.id)
            .await?
            .map(|(_, members)| members)
            .unwrap_or_default();
        let others = members.iter().filter(|m| m.matrix_user_id != leaving);
        let (owners, rest): (Vec<&Member>, Vec<&Member>) =
            others.partition(|m| m.role == Role::Owner);
        if owners.is_empty() && !rest.is_empty() {
            return Err(Error::Conflict(format!(
                "{leaving} is the last owner of group '{}'; make another member owner first",
                conversation.id
            )));
        }
        Ok(())
    }

    /// Puts a member's record back as it was after the homeserver refused
    /// the change for good, and returns the refusal. When the sync found
    /// the member removed by a Matrix moderator, the record keeps what was
    /// learnt (removed, not joined) and the answer is a `409`.
    async fn undo(
        &self,
        id: &ConversationId,
        user: &UserId,
        previous: Option<&Member>,
        err: Error,
    ) -> Error {
        if matches!(err, Error::Store(_)) {
            return err;
        }
        let removed = match &err {
            Error::Removed(removal) => previous.map(|previous| Member {
                joined: false,
                removed: Some(removal.clone()),
                ..previous.clone()
            }),
            _ => previous.cloned(),
        };
        let write = match &removed {
            Some(member) => MemberWrite::Put(member),
            None => MemberWrite::Remove(user),
        };
        if let Err(undo) = self.store.restore_member(id, write).await {
            tracing::error!(error = %undo, conversation = %id, %user, "a refused member change could not be undone");
        }
        match err {
            Error::Removed(removal) => stays_removed(user, &removal),
            err => err,
        }
    }
}

/// The `409` of a `PUT` of a member a Matrix moderator removed, without the
/// application's `"rejoin": true`.
fn stays_removed(user: &UserId, removal: &Removal) -> Error {
    Error::Conflict(format!(
        "{user} was {removal}; to add them back anyway, send the member again with \"rejoin\": true"
    ))
}
