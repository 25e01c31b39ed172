//! [`SyncStore`] on the table: a pending sync is an item of its
//! conversation's partition ([`keys::sync`]), written in the same
//! transaction as the change it carries and the outbox count it moves, and
//! in the pending index ([`keys::PENDING_SYNCS`]) until it settles.

use time::OffsetDateTime;

use super::DynamoStore;
use super::messages::{Only, index_pending, outbox_change};
use super::table::{Write, item, key_of, n, record, s, value};
use crate::ids::ConversationId;
use crate::model::{
    Conversation, ConversationStatus, Delivery, MessageId, PendingSync, SyncSubject,
};
use crate::store::keys;
use crate::store::{MemberWrite, Outbox, StoreError, SyncContext, SyncStore};

/// Puts `sync`, in the pending index, only if the subject's pending sync
/// is still `replaces`.
fn put_sync(sync: &PendingSync, replaces: Option<MessageId>) -> Result<Write, StoreError> {
    let mut item = item(keys::sync(&sync.conversation_id, &sync.subject), sync)?;
    index_pending(
        &mut item,
        keys::PENDING_SYNCS,
        &sync.conversation_id,
        sync.since,
    );
    let put = Write::put(item);
    Ok(match replaces {
        None => put.if_new(),
        Some(id) => put
            .when("#id = :replaced")
            .name("#id", "id")
            .value(":replaced", value(&id)?),
    })
}

/// What the conversation must say for a change to go in (active), and how
/// its outbox moves.
fn conversation_condition(id: &ConversationId, outbox: Outbox) -> Write {
    match outbox {
        Outbox::Keep => Write::check(keys::conversation(id), "#status = :active")
            .name("#status", "status")
            .value(":active", s(ConversationStatus::Active.as_str())),
        Outbox::EnterIfEmpty => outbox_change(id, 1, Only::IfActiveAndEmpty),
        Outbox::Enter => outbox_change(id, 1, Only::IfActive),
        Outbox::Leave => outbox_change(id, -1, Only::IfActive),
    }
}

fn member_write(id: &ConversationId, member: MemberWrite<'_>) -> Result<Write, StoreError> {
    Ok(match member {
        MemberWrite::Put(member) => {
            Write::put(item(keys::member(id, &member.matrix_user_id), member)?)
        }
        MemberWrite::Remove(user) => Write::delete(keys::member(id, user)),
    })
}

/// `write`, only while the pending sync is still `sync`.
fn while_pending(write: Write, sync: &PendingSync) -> Result<Write, StoreError> {
    Ok(write
        .when("#id = :id")
        .name("#id", "id")
        .value(":id", value(&sync.id)?))
}

impl SyncStore for DynamoStore {
    async fn sync_context(
        &self,
        id: &ConversationId,
        subject: &SyncSubject,
    ) -> Result<SyncContext, StoreError> {
        let conversation = keys::conversation(id);
        let member = match subject {
            SyncSubject::Member { matrix_user_id, .. } => Some(keys::member(id, matrix_user_id)),
            SyncSubject::Room => None,
        };
        let sync = keys::sync(id, subject);
        let mut wanted = vec![conversation.clone(), sync.clone()];
        wanted.extend(member.clone());
        let mut context = SyncContext::default();
        for item in self.table.batch_get(wanted).await? {
            let Some(key) = key_of(&item) else { continue };
            if key == conversation {
                context.conversation = Some(record(item)?);
            } else if key == sync {
                context.sync = Some(record(item)?);
            } else if member.as_ref() == Some(&key) {
                context.member = Some(record(item)?);
            }
        }
        Ok(context)
    }

    async fn change_member(
        &self,
        member: MemberWrite<'_>,
        sync: &PendingSync,
        replaces: Option<MessageId>,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let id = &sync.conversation_id;
        self.table
            .transact(vec![
                member_write(id, member)?,
                put_sync(sync, replaces)?,
                conversation_condition(id, outbox),
            ])
            .await
    }

    async fn change_room(
        &self,
        read: &Conversation,
        next: &Conversation,
        sync: &PendingSync,
        replaces: Option<MessageId>,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let delta = match outbox {
            Outbox::EnterIfEmpty if read.outbox > 0 => return Err(StoreError::Rejected),
            Outbox::Enter | Outbox::EnterIfEmpty => 1,
            Outbox::Leave => -1,
            Outbox::Keep => 0,
        };
        let next = Conversation {
            outbox: read.outbox + delta,
            ..next.clone()
        };
        // The whole record, only while what else writes it (sends moving
        // the outbox) has not changed it since it was read.
        let conversation = Write::put(item(keys::conversation(&read.id), &next)?)
            .when("#status = :active AND #outbox = :outbox")
            .name("#status", "status")
            .name("#outbox", "outbox")
            .value(":active", s(ConversationStatus::Active.as_str()))
            .value(":outbox", n(read.outbox));
        self.table
            .transact(vec![conversation, put_sync(sync, replaces)?])
            .await
    }

    async fn settle_sync(&self, sync: &PendingSync) -> Result<(), StoreError> {
        let id = &sync.conversation_id;
        // A pending sync is counted in the outbox, direct or queued.
        let writes = vec![
            while_pending(Write::delete(keys::sync(id, &sync.subject)), sync)?,
            outbox_change(id, -1, Only::Always),
        ];
        self.table.transact(writes).await
    }

    async fn queue_sync(&self, sync: &PendingSync) -> Result<(), StoreError> {
        let id = &sync.conversation_id;
        let queue = Write::update(keys::sync(id, &sync.subject), "SET #delivery = :queued")
            .when("#id = :id AND #delivery = :direct")
            .name("#id", "id")
            .name("#delivery", "delivery")
            .value(":id", value(&sync.id)?)
            .value(":queued", s(Delivery::Queued.as_str()))
            .value(":direct", s(Delivery::Direct.as_str()));
        // Counted in the outbox already, while in flight.
        self.table.write(queue).await
    }

    async fn stale_syncs(
        &self,
        older_than: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<PendingSync>, StoreError> {
        self.stale(keys::PENDING_SYNCS, older_than, limit).await
    }

    async fn restore_member(
        &self,
        id: &ConversationId,
        member: MemberWrite<'_>,
    ) -> Result<(), StoreError> {
        self.table.write(member_write(id, member)?).await
    }
}
