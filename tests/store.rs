//! One suite of store tests, run against the in-memory fake and against the
//! DynamoDB adapter on the emulator (moto, through the real AWS SDK), so the
//! fake cannot drift from the real thing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use bridge::ids::{AppUserId, ConversationId, PuppetNamer};
use bridge::media::MediaInfo;
use bridge::model::{
    Attachment, Conversation, ConversationKind, ConversationStatus, Delivery, Format,
    IdempotencyRecord, MediaId, MediaRecord, Member, Message, MessageId, MessageStatus, Origin,
    Puppet, Reaction, Removal, Role, Sender, SkippedEvent, TransactionRecord,
};
use bridge::model::{ChangeKind, PendingChange, PendingOperation, PendingSync, SyncSubject};
use bridge::store::{
    Claim, DynamoStore, MemberChange, MemberWrite, MemoryStore, Outbox, Store, StoreError,
    TransactionContext,
};
use ruma::{OwnedRoomId, OwnedUserId, event_id};
use time::{Duration, OffsetDateTime};

fn namer() -> PuppetNamer {
    PuppetNamer::new("app_", ruma::server_name!("localhost"))
}

fn user(name: &str) -> AppUserId {
    AppUserId::parse(name).unwrap()
}

fn puppet_id(name: &str) -> OwnedUserId {
    namer().user_id(&user(name))
}

/// A conversation id no other conversation of the test uses.
fn fresh_id() -> ConversationId {
    ConversationId::parse(format!("c-{}", uuid::Uuid::new_v4().simple())).unwrap()
}

fn draft(id: &ConversationId) -> Conversation {
    let created_at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    Conversation {
        name: Some("Hiking".into()),
        ..Conversation::draft(id.clone(), ConversationKind::Group, created_at)
    }
}

fn member(id: &ConversationId, name: &str, joined: bool) -> Member {
    Member {
        conversation_id: id.clone(),
        matrix_user_id: puppet_id(name),
        user_id: Some(user(name)),
        role: Role::Member,
        display_name: Some(name.to_uppercase()),
        joined,
        typing_until: None,
        removed: None,
    }
}

fn room() -> OwnedRoomId {
    OwnedRoomId::try_from(format!("!{}:localhost", uuid::Uuid::new_v4().simple())).unwrap()
}

fn message(id: &ConversationId, from: &str, body: &str, delivery: Delivery) -> Message {
    Message {
        id: MessageId::new(),
        conversation_id: id.clone(),
        sender: Sender {
            user_id: Some(user(from)),
            matrix_user_id: puppet_id(from),
            display_name: None,
        },
        body: body.into(),
        format: Format::Plain,
        html: None,
        reply_to: None,
        attachments: Vec::new(),
        status: MessageStatus::Pending,
        delivery,
        event_id: None,
        origin: Origin::App,
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        edited_at: None,
        deleted_at: None,
        failure: None,
        changes: 0,
        pending_change: None,
        in_doubt: false,
        thread_id: None,
        revision: 0,
        msgtype: None,
        file: None,
        mentions: None,
    }
}

fn granted(claim: Claim) -> (uuid::Uuid, Conversation) {
    match claim {
        Claim::Granted {
            token,
            conversation,
        } => (token, conversation),
        other => panic!("expected a granted claim, got {other:?}"),
    }
}

/// An active conversation with alice (joined) and bob (not joined).
async fn active_conversation(store: &impl Store) -> (ConversationId, OwnedRoomId) {
    let id = fresh_id();
    let (token, mut conversation) = granted(
        store
            .claim_conversation(
                &draft(&id),
                OffsetDateTime::now_utc() + Duration::minutes(1),
            )
            .await
            .unwrap(),
    );
    let room_id = room();
    store.record_room(&id, token, &room_id).await.unwrap();
    conversation.room_id = Some(room_id.clone());
    store
        .activate_conversation(
            &conversation,
            token,
            &[member(&id, "alice", true), member(&id, "bob", false)],
        )
        .await
        .unwrap();
    (id, room_id)
}

async fn claims_are_granted_once(store: &impl Store) {
    let id = fresh_id();
    let until = OffsetDateTime::now_utc() + Duration::minutes(1);
    let (token, claimed) = granted(store.claim_conversation(&draft(&id), until).await.unwrap());
    assert_eq!(claimed.status, ConversationStatus::Provisioning);
    assert!(matches!(
        store.claim_conversation(&draft(&id), until).await.unwrap(),
        Claim::Busy(_)
    ));

    let room_id = room();
    store.record_room(&id, token, &room_id).await.unwrap();
    let with_room = Conversation {
        room_id: Some(room_id.clone()),
        ..claimed
    };
    store
        .activate_conversation(&with_room, token, &[member(&id, "alice", true)])
        .await
        .unwrap();

    match store.claim_conversation(&draft(&id), until).await.unwrap() {
        Claim::Exists(existing) => {
            assert_eq!(existing.status, ConversationStatus::Active);
            assert_eq!(existing.room_id, Some(room_id.clone()));
            assert_eq!(existing.claim, None);
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        store.conversation_by_room(&room_id).await.unwrap(),
        Some(id.clone())
    );
    assert_eq!(store.conversation_by_room(&room()).await.unwrap(), None);
}

async fn expired_claims_are_taken_over_with_their_room(store: &impl Store) {
    let id = fresh_id();
    let past = OffsetDateTime::now_utc() - Duration::seconds(1);
    let (first, _) = granted(store.claim_conversation(&draft(&id), past).await.unwrap());
    let room_id = room();
    store.record_room(&id, first, &room_id).await.unwrap();

    let (second, taken) = granted(
        store
            .claim_conversation(
                &draft(&id),
                OffsetDateTime::now_utc() + Duration::minutes(1),
            )
            .await
            .unwrap(),
    );
    assert_ne!(first, second);
    assert_eq!(
        taken.room_id,
        Some(room_id.clone()),
        "a takeover must reuse the room"
    );
    assert!(matches!(
        store.record_room(&id, first, &room()).await,
        Err(StoreError::Rejected)
    ));
    assert!(matches!(
        store.activate_conversation(&taken, first, &[]).await,
        Err(StoreError::Rejected)
    ));
    store
        .activate_conversation(&taken, second, &[])
        .await
        .unwrap();
    assert_eq!(
        store.conversation(&id).await.unwrap().unwrap().status,
        ConversationStatus::Active
    );
}

async fn released_claims_can_be_retried_at_once(store: &impl Store) {
    let id = fresh_id();
    let until = OffsetDateTime::now_utc() + Duration::minutes(1);
    let (token, _) = granted(store.claim_conversation(&draft(&id), until).await.unwrap());
    store
        .release_claim(&id, uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert!(matches!(
        store.claim_conversation(&draft(&id), until).await.unwrap(),
        Claim::Busy(_)
    ));
    store.release_claim(&id, token).await.unwrap();
    granted(store.claim_conversation(&draft(&id), until).await.unwrap());
}

async fn members_are_read_with_their_conversation(store: &impl Store) {
    let (id, room_id) = active_conversation(store).await;
    let (conversation, mut members) = store.conversation_with_members(&id).await.unwrap().unwrap();
    assert_eq!(conversation.room_id, Some(room_id));
    assert_eq!(conversation.name.as_deref(), Some("Hiking"));
    members.sort_by(|a, b| a.matrix_user_id.cmp(&b.matrix_user_id));
    assert_eq!(
        members,
        vec![member(&id, "alice", true), member(&id, "bob", false)]
    );

    store.mark_joined(&id, &puppet_id("bob")).await.unwrap();
    assert!(
        store
            .member(&id, &puppet_id("bob"))
            .await
            .unwrap()
            .unwrap()
            .joined
    );
    assert_eq!(store.member(&id, &puppet_id("carol")).await.unwrap(), None);
    assert!(matches!(
        store.mark_joined(&id, &puppet_id("carol")).await,
        Err(StoreError::Rejected)
    ));
    assert_eq!(
        store.conversation_with_members(&fresh_id()).await.unwrap(),
        None
    );
    assert_eq!(store.conversation(&fresh_id()).await.unwrap(), None);
}

/// More members than one batch write takes.
async fn many_members_are_stored_in_batches(store: &impl Store) {
    let id = fresh_id();
    let until = OffsetDateTime::now_utc() + Duration::minutes(1);
    let (token, claimed) = granted(store.claim_conversation(&draft(&id), until).await.unwrap());
    let room_id = room();
    store.record_room(&id, token, &room_id).await.unwrap();
    let mut members = (0..60)
        .map(|n| member(&id, &format!("m{n:02}"), n % 2 == 0))
        .collect::<Vec<_>>();
    let with_room = Conversation {
        room_id: Some(room_id),
        ..claimed
    };
    store
        .activate_conversation(&with_room, token, &members)
        .await
        .unwrap();
    let (_, mut stored) = store.conversation_with_members(&id).await.unwrap().unwrap();
    stored.sort_by(|a, b| a.matrix_user_id.cmp(&b.matrix_user_id));
    members.sort_by(|a, b| a.matrix_user_id.cmp(&b.matrix_user_id));
    assert_eq!(stored, members);
}

async fn puppets_are_remembered(store: &impl Store) {
    let name = format!("p{}", uuid::Uuid::new_v4().simple());
    let (known, unknown) = (user(&name), user(&format!("{name}x")));
    assert!(store.puppets(&[]).await.unwrap().is_empty());
    assert!(
        store
            .puppets(&[known.clone(), unknown.clone()])
            .await
            .unwrap()
            .is_empty()
    );
    let puppet = Puppet {
        user_id: known.clone(),
        matrix_user_id: namer().user_id(&known),
        display_name: Some("Known".into()),
        avatar_url: Some("mxc://localhost/abc".into()),
        registered: true,
        avatar_source: Some("https://example.org/known.png".into()),
    };
    store.put_puppet(&puppet).await.unwrap();
    assert_eq!(
        store.puppets(&[known, unknown]).await.unwrap(),
        vec![puppet]
    );
}

/// More puppets than one batch read takes.
async fn many_puppets_are_read_in_batches(store: &impl Store) {
    let name = format!("p{}", uuid::Uuid::new_v4().simple());
    let users = (0..150)
        .map(|n| user(&format!("{name}-{n}")))
        .collect::<Vec<_>>();
    let mut known = Vec::new();
    for user in users.iter().step_by(7) {
        let puppet = Puppet {
            user_id: user.clone(),
            matrix_user_id: namer().user_id(user),
            display_name: None,
            avatar_url: None,
            registered: false,
            avatar_source: None,
        };
        store.put_puppet(&puppet).await.unwrap();
        known.push(puppet);
    }
    let mut found = store.puppets(&users).await.unwrap();
    found.sort_by(|a, b| a.matrix_user_id.cmp(&b.matrix_user_id));
    known.sort_by(|a, b| a.matrix_user_id.cmp(&b.matrix_user_id));
    assert_eq!(found, known);
}

async fn direct_sends_need_a_joined_member_and_an_empty_outbox(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let from_bob = message(&id, "bob", "not joined yet", Delivery::Direct);
    assert!(matches!(
        store.insert_message(&from_bob, None).await,
        Err(StoreError::Rejected)
    ));
    let from_carol = message(&id, "carol", "not a member", Delivery::Direct);
    assert!(matches!(
        store.insert_message(&from_carol, None).await,
        Err(StoreError::Rejected)
    ));
    assert!(matches!(
        store
            .insert_message(
                &message(
                    &fresh_id(),
                    "alice",
                    "no such conversation",
                    Delivery::Direct
                ),
                None
            )
            .await,
        Err(StoreError::Rejected)
    ));

    let hello = message(&id, "alice", "hello", Delivery::Direct);
    store.insert_message(&hello, None).await.unwrap();
    assert!(
        matches!(
            store.insert_message(&hello, None).await,
            Err(StoreError::Rejected)
        ),
        "ids are unique"
    );
    assert_eq!(
        store.message(&id, hello.id).await.unwrap(),
        Some(hello.clone())
    );
    assert_eq!(store.message(&id, MessageId::new()).await.unwrap(), None);

    let event = event_id!("$sent-hello");
    store.mark_sent(&hello, event).await.unwrap();
    let sent = store.message(&id, hello.id).await.unwrap().unwrap();
    assert_eq!(
        (sent.status, sent.event_id.as_deref()),
        (MessageStatus::Sent, Some(event))
    );
    store.mark_sent(&hello, event_id!("$again")).await.unwrap();
    assert_eq!(
        store
            .message(&id, hello.id)
            .await
            .unwrap()
            .unwrap()
            .event_id
            .as_deref(),
        Some(event)
    );
    assert_eq!(
        store.message_by_event(event).await.unwrap(),
        Some((id.clone(), hello.id))
    );
}

async fn the_bots_notices_need_no_member_but_an_active_conversation(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let notice = |delivery| {
        let mut notice = message(&id, "svc", "The venue changed", delivery);
        notice.sender.user_id = None;
        notice.sender.matrix_user_id = ruma::owned_user_id!("@bridge:localhost");
        notice.msgtype = Some(bridge::model::MsgType::Notice);
        notice
    };
    let direct = notice(Delivery::Direct);
    store.insert_message(&direct, None).await.unwrap();
    assert_eq!(
        store.message(&id, direct.id).await.unwrap(),
        Some(direct.clone())
    );
    assert!(
        matches!(
            store.insert_message(&notice(Delivery::Direct), None).await,
            Err(StoreError::Rejected)
        ),
        "the first is in flight: the outbox is not empty"
    );
    store
        .insert_message(&notice(Delivery::Queued), None)
        .await
        .unwrap();
    let elsewhere = Message {
        conversation_id: fresh_id(),
        ..notice(Delivery::Queued)
    };
    assert!(matches!(
        store.insert_message(&elsewhere, None).await,
        Err(StoreError::Rejected)
    ));
    // A user's message still needs its member.
    let from_carol = message(&id, "carol", "not a member", Delivery::Queued);
    assert!(matches!(
        store.insert_message(&from_carol, None).await,
        Err(StoreError::Rejected)
    ));
}

async fn idempotency_keys_are_used_once(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let first = message(&id, "alice", "once", Delivery::Direct);
    let record = IdempotencyRecord {
        scope: IdempotencyRecord::scope(&user("alice"), &id, "key-1"),
        body_hash: "abc".into(),
        message_id: first.id,
        conversation_id: id.clone(),
        expires_at: (OffsetDateTime::now_utc() + IdempotencyRecord::LIFETIME)
            .replace_nanosecond(0)
            .unwrap(),
    };
    store.insert_message(&first, Some(&record)).await.unwrap();
    let second = message(&id, "alice", "twice", Delivery::Direct);
    let reused = IdempotencyRecord {
        message_id: second.id,
        ..record.clone()
    };
    assert!(matches!(
        store.insert_message(&second, Some(&reused)).await,
        Err(StoreError::Rejected)
    ));
    assert_eq!(
        store.message(&id, second.id).await.unwrap(),
        None,
        "a refused transaction writes nothing"
    );

    let context = store
        .send_context(&id, &puppet_id("alice"), Some(&record.scope))
        .await
        .unwrap();
    assert_eq!(context.idempotency, Some(record));
    assert_eq!(context.member, Some(member(&id, "alice", true)));
    assert_eq!(context.conversation.unwrap().id, id);
    let context = store
        .send_context(&id, &puppet_id("carol"), None)
        .await
        .unwrap();
    assert_eq!((context.member, context.idempotency), (None, None));
}

async fn queued_messages_hold_back_direct_sends(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let first = message(
        &id,
        "bob",
        "queued even though bob has not joined",
        Delivery::Queued,
    );
    store.insert_message(&first, None).await.unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 1);

    let second = message(&id, "alice", "must wait", Delivery::Direct);
    assert!(matches!(
        store.insert_message(&second, None).await,
        Err(StoreError::Rejected)
    ));
    assert_eq!(
        store
            .send_context(&id, &puppet_id("alice"), None)
            .await
            .unwrap()
            .conversation
            .unwrap()
            .outbox,
        1
    );

    store.mark_sent(&first, event_id!("$first")).await.unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 0);
    store.insert_message(&second, None).await.unwrap();
}

async fn failures_and_queueing_move_messages_through_the_outbox(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let mut direct = message(&id, "alice", "homeserver down", Delivery::Direct);
    store.insert_message(&direct, None).await.unwrap();
    // The direct attempt may have landed: queued in doubt.
    direct.in_doubt = true;
    store.mark_queued(&direct).await.unwrap();
    assert!(
        matches!(store.mark_queued(&direct).await, Err(StoreError::Rejected)),
        "queued once"
    );
    let queued = store.message(&id, direct.id).await.unwrap().unwrap();
    assert_eq!(
        (queued.status, queued.delivery, queued.in_doubt),
        (MessageStatus::Pending, Delivery::Queued, true)
    );
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 1);

    store.mark_failed(&queued, "M_TOO_LARGE").await.unwrap();
    let failed = store.message(&id, direct.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.failure.as_deref()),
        (MessageStatus::Failed, Some("M_TOO_LARGE"))
    );
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 0);
    store.mark_failed(&queued, "again").await.unwrap();
    store.mark_sent(&queued, event_id!("$late")).await.unwrap();
    let still = store.message(&id, direct.id).await.unwrap().unwrap();
    assert_eq!(
        (still.status, still.failure.as_deref()),
        (MessageStatus::Failed, Some("M_TOO_LARGE"))
    );
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 0);

    // One that never reached the homeserver is queued without a doubt.
    let unreached = message(&id, "alice", "nothing listened", Delivery::Direct);
    store.insert_message(&unreached, None).await.unwrap();
    store.mark_queued(&unreached).await.unwrap();
    let stored = store.message(&id, unreached.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.delivery, stored.in_doubt),
        (Delivery::Queued, false)
    );
    store.mark_failed(&stored, "not delivered").await.unwrap();
}

async fn a_send_is_marked_only_as_the_content_that_was_sent(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let sent = message(&id, "alice", "as sent", Delivery::Direct);
    store.insert_message(&sent, None).await.unwrap();
    // Edited in place while its send was on its way.
    let mut edited = sent.clone();
    edited.body = "edited meanwhile".into();
    store
        .update_message(&sent, &edited, Outbox::Keep, None)
        .await
        .unwrap();
    assert!(
        !store.mark_sent(&sent, event_id!("$old")).await.unwrap(),
        "the stored text is not what was sent"
    );
    let stored = store.message(&id, sent.id).await.unwrap().unwrap();
    assert_eq!(stored.status, MessageStatus::Pending);
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 1);
    assert!(
        store.mark_sent(&stored, event_id!("$new")).await.unwrap(),
        "as read now, it is"
    );
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 0);
    assert!(!store.mark_sent(&stored, event_id!("$new")).await.unwrap());
    assert!(!store.mark_failed(&stored, "late").await.unwrap());
}

async fn updates_hold_only_while_the_message_is_as_read(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let original = message(&id, "alice", "before", Delivery::Direct);
    store.insert_message(&original, None).await.unwrap();
    store
        .mark_sent(&original, event_id!("$orig"))
        .await
        .unwrap();
    let read = store.message(&id, original.id).await.unwrap().unwrap();

    // An edit that waits in the outbox: counted in, with its key used once.
    let mut edited = read.clone();
    edited.body = "after".into();
    edited.changes = 1;
    edited.pending_change = Some(PendingChange {
        kind: ChangeKind::Edit,
        delivery: Delivery::Queued,
        since: None,
        in_doubt: false,
    });
    let key = IdempotencyRecord {
        scope: format!("edit:alice/{id}/k"),
        body_hash: "h".into(),
        message_id: read.id,
        conversation_id: id.clone(),
        expires_at: OffsetDateTime::now_utc() + Duration::hours(1),
    };
    store
        .update_message(&read, &edited, Outbox::Enter, Some(&key))
        .await
        .unwrap();
    let stored = store.message(&id, read.id).await.unwrap().unwrap();
    assert_eq!((stored.body.as_str(), stored.revision), ("after", 1));
    assert_eq!(stored.pending_change, edited.pending_change);
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 1);

    // A stale copy, a used key, or a direct change past a queued one: refused.
    assert!(matches!(
        store
            .update_message(&read, &edited, Outbox::Keep, None)
            .await,
        Err(StoreError::Rejected)
    ));
    assert!(matches!(
        store
            .update_message(&stored, &edited, Outbox::Keep, Some(&key))
            .await,
        Err(StoreError::Rejected)
    ));
    assert!(matches!(
        store
            .update_message(&stored, &edited, Outbox::EnterIfEmpty, None)
            .await,
        Err(StoreError::Rejected)
    ));
    let unchanged = store.message(&id, read.id).await.unwrap().unwrap();
    assert_eq!(unchanged.revision, 1, "nothing was written");

    // Delivered: out of the outbox.
    let mut delivered = stored.clone();
    delivered.pending_change = None;
    store
        .update_message(&stored, &delivered, Outbox::Leave, None)
        .await
        .unwrap();
    let done = store.message(&id, read.id).await.unwrap().unwrap();
    assert_eq!((done.pending_change.clone(), done.revision), (None, 2));
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 0);
    // A status that changed under a copy makes it stale too.
    store
        .mark_failed(&done, "ignored: not pending")
        .await
        .unwrap();
    let mut deleted = done.clone();
    deleted.status = MessageStatus::Deleted;
    store
        .update_message(&done, &deleted, Outbox::EnterIfEmpty, None)
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_message(&done, &deleted, Outbox::Keep, None)
            .await,
        Err(StoreError::Rejected)
    ));
}

async fn pending_operations_are_found_until_they_settle(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let pending = message(&id, "alice", "lost job", Delivery::Queued);
    store.insert_message(&pending, None).await.unwrap();
    let later = OffsetDateTime::now_utc() + Duration::seconds(2);
    let ours = |found: Vec<Message>| -> Vec<MessageId> {
        found
            .into_iter()
            .filter(|m| m.conversation_id == id)
            .map(|m| m.id)
            .collect()
    };
    let earlier = OffsetDateTime::now_utc() - Duration::minutes(10);
    assert!(ours(store.stale_pending(earlier, 100).await.unwrap()).is_empty());
    assert_eq!(
        ours(store.stale_pending(later, 1000).await.unwrap()),
        [pending.id]
    );
    store
        .mark_sent(&pending, event_id!("$found"))
        .await
        .unwrap();
    assert!(ours(store.stale_pending(later, 1000).await.unwrap()).is_empty());

    // A pending change is pending too, until it settles.
    let read = store.message(&id, pending.id).await.unwrap().unwrap();
    let mut edited = read.clone();
    edited.pending_change = Some(PendingChange {
        kind: ChangeKind::Edit,
        delivery: Delivery::Direct,
        since: None,
        in_doubt: false,
    });
    store
        .update_message(&read, &edited, Outbox::EnterIfEmpty, None)
        .await
        .unwrap();
    let later = OffsetDateTime::now_utc() + Duration::seconds(2);
    let found = store.stale_pending(later, 1000).await.unwrap();
    assert_eq!(ours(found), [pending.id]);
    let changed = store.message(&id, pending.id).await.unwrap().unwrap();
    let mut settled = changed.clone();
    settled.pending_change = None;
    store
        .update_message(&changed, &settled, Outbox::Leave, None)
        .await
        .unwrap();
    assert!(ours(store.stale_pending(later, 1000).await.unwrap()).is_empty());
}

async fn a_conversations_outbox_lists_what_waits_in_it_oldest_first(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let (other, _) = active_conversation(store).await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |seconds_ago: i64| now - Duration::seconds(seconds_ago);
    let first = Message {
        created_at: at(300),
        ..message(&id, "alice", "first", Delivery::Queued)
    };
    let second = Message {
        created_at: at(200),
        ..message(&id, "alice", "second", Delivery::Queued)
    };
    let elsewhere = Message {
        created_at: at(250),
        ..message(&other, "alice", "elsewhere", Delivery::Queued)
    };
    for message in [&first, &second, &elsewhere] {
        store.insert_message(message, None).await.unwrap();
    }
    let rename = PendingSync {
        subject: SyncSubject::Room,
        since: at(100),
        ..member_sync(&id, "unused", Delivery::Queued)
    };
    let read = store.conversation(&id).await.unwrap().unwrap();
    let renamed = Conversation {
        name: Some("Renamed".into()),
        ..read.clone()
    };
    store
        .change_room(&read, &renamed, &rename, None, Outbox::Enter)
        .await
        .unwrap();
    // (kind, id, delivery), in the order listed.
    let listed = |found: Vec<PendingOperation>| -> Vec<(&'static str, MessageId, Delivery)> {
        found
            .iter()
            .map(|operation| match operation {
                PendingOperation::Message(message) => ("message", message.id, operation.delivery()),
                PendingOperation::Sync(sync) => ("sync", sync.id, operation.delivery()),
            })
            .collect()
    };
    assert_eq!(
        listed(store.outbox(&id, now, 10).await.unwrap()),
        [
            ("message", first.id, Delivery::Queued),
            ("message", second.id, Delivery::Queued),
            ("sync", rename.id, Delivery::Queued),
        ],
        "since acceptance, whatever the kind; no other conversation's"
    );
    assert_eq!(
        listed(store.outbox(&id, at(150), 10).await.unwrap()),
        [
            ("message", first.id, Delivery::Queued),
            ("message", second.id, Delivery::Queued)
        ],
        "only what was accepted before"
    );
    assert_eq!(listed(store.outbox(&id, now, 1).await.unwrap()).len(), 1);

    // Settled, it leaves; a change of a sent message joins, since the change.
    store.mark_sent(&first, event_id!("$first")).await.unwrap();
    let sent = store.message(&id, first.id).await.unwrap().unwrap();
    let edited = Message {
        body: "first, edited".into(),
        edited_at: Some(at(50)),
        changes: 1,
        pending_change: Some(PendingChange {
            kind: ChangeKind::Edit,
            delivery: Delivery::Direct,
            since: None,
            in_doubt: false,
        }),
        ..sent.clone()
    };
    store
        .update_message(&sent, &edited, Outbox::Enter, None)
        .await
        .unwrap();
    store.settle_sync(&rename).await.unwrap();
    assert_eq!(
        listed(store.outbox(&id, now, 10).await.unwrap()),
        [
            ("message", second.id, Delivery::Queued),
            ("message", first.id, Delivery::Direct),
        ]
    );
    store.mark_failed(&second, "refused").await.unwrap();
    let found = store.outbox(&id, now, 10).await.unwrap();
    let Some(PendingOperation::Message(message)) = found.first() else {
        panic!("the edit, read back whole: {found:?}");
    };
    assert_eq!(message.body, "first, edited");
    assert_eq!(found.len(), 1);
}

async fn messages_in_flight_count_in_the_outbox(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let first = message(&id, "alice", "in flight", Delivery::Direct);
    store.insert_message(&first, None).await.unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 1);
    // A send accepted while the first is in flight cannot overtake it.
    let second = message(&id, "alice", "right behind", Delivery::Direct);
    assert!(matches!(
        store.insert_message(&second, None).await,
        Err(StoreError::Rejected)
    ));
    // Handing it to the retry function keeps it counted.
    store.mark_queued(&first).await.unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 1);
    store.mark_sent(&first, event_id!("$flight")).await.unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 0);
    store.insert_message(&second, None).await.unwrap();
}

async fn the_outbox_counts_what_is_stored_not_a_stale_copy(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let direct = message(&id, "alice", "answer lost", Delivery::Direct);
    store.insert_message(&direct, None).await.unwrap();
    // Another request moved it to the outbox; this copy still says direct.
    store.mark_queued(&direct).await.unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 1);
    store.mark_sent(&direct, event_id!("$stale")).await.unwrap();
    assert_eq!(
        store.conversation(&id).await.unwrap().unwrap().outbox,
        0,
        "out of the outbox, as stored"
    );
    // And a queued copy of a direct message does not count it out.
    let other = message(&id, "alice", "direct", Delivery::Direct);
    store.insert_message(&other, None).await.unwrap();
    let mut stale_queued = other.clone();
    stale_queued.delivery = Delivery::Queued;
    store
        .mark_failed(&stale_queued, "the homeserver refused it (M_BAD_JSON)")
        .await
        .unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().outbox, 0);
}

async fn expired_idempotency_keys_count_as_absent(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let first = message(&id, "alice", "yesterday", Delivery::Direct);
    let scope = format!("alice/{id}/old-key");
    let expired = IdempotencyRecord {
        scope: scope.clone(),
        body_hash: "h".into(),
        message_id: first.id,
        conversation_id: id.clone(),
        expires_at: OffsetDateTime::now_utc() - Duration::minutes(1),
    };
    store.insert_message(&first, Some(&expired)).await.unwrap();
    store.mark_sent(&first, event_id!("$y")).await.unwrap();
    let context = store
        .send_context(&id, &puppet_id("alice"), Some(&scope))
        .await
        .unwrap();
    assert_eq!(context.idempotency, None, "expired: not remembered");
    let second = message(&id, "alice", "today", Delivery::Direct);
    let fresh = IdempotencyRecord {
        message_id: second.id,
        expires_at: OffsetDateTime::now_utc() + Duration::hours(24),
        ..expired
    };
    store.insert_message(&second, Some(&fresh)).await.unwrap();
    let context = store
        .send_context(&id, &puppet_id("alice"), Some(&scope))
        .await
        .unwrap();
    assert_eq!(context.idempotency.map(|r| r.message_id), Some(second.id));
}

async fn history_pages_past_a_megabyte(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    // 40 messages of 30 KiB: more than one 1 MB page of the table.
    for n in 0..40 {
        let m = message(
            &id,
            "alice",
            &format!("{n:02}{}", "x".repeat(30 * 1024)),
            Delivery::Direct,
        );
        store.insert_message(&m, None).await.unwrap();
        store
            .mark_sent(
                &m,
                &ruma::OwnedEventId::try_from(format!("$big{n}")).unwrap(),
            )
            .await
            .unwrap();
    }
    let page = store.messages(&id, 38, None).await.unwrap();
    assert_eq!(page.messages.len(), 38);
    assert!(page.next.is_some(), "two older messages are left");
    let rest = store.messages(&id, 38, page.next).await.unwrap();
    assert_eq!(rest.messages.len(), 2);
    assert_eq!(rest.next, None);
    assert!(rest.messages[1].body.starts_with("00"));
}

async fn history_pages_newest_first(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let mut sent = Vec::new();
    for n in 1..=5 {
        // Queued: each waits in the outbox behind the one before.
        let m = message(&id, "alice", &format!("message {n}"), Delivery::Queued);
        store.insert_message(&m, None).await.unwrap();
        sent.push(m.id);
    }
    let bodies = |page: &bridge::model::Page| {
        page.messages
            .iter()
            .map(|m| m.body.clone())
            .collect::<Vec<_>>()
    };
    let page = store.messages(&id, 2, None).await.unwrap();
    assert_eq!(bodies(&page), ["message 5", "message 4"]);
    assert_eq!(page.next, Some(sent[3]));
    let page = store.messages(&id, 2, page.next).await.unwrap();
    assert_eq!(bodies(&page), ["message 3", "message 2"]);
    let page = store.messages(&id, 2, page.next).await.unwrap();
    assert_eq!(bodies(&page), ["message 1"]);
    assert_eq!(page.next, None);
    let all = store.messages(&id, 5, None).await.unwrap();
    assert_eq!((all.messages.len(), all.next), (5, None));
    assert!(
        store
            .messages(&fresh_id(), 10, None)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}

async fn threads_page_newest_first_apart_from_the_rest(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let root = message(&id, "alice", "root", Delivery::Queued);
    store.insert_message(&root, None).await.unwrap();
    let mut in_thread = Vec::new();
    for n in 1..=3 {
        let mut m = message(&id, "alice", &format!("reply {n}"), Delivery::Queued);
        m.thread_id = Some(root.id);
        store.insert_message(&m, None).await.unwrap();
        in_thread.push(m.id);
        let other = message(&id, "alice", &format!("aside {n}"), Delivery::Queued);
        store.insert_message(&other, None).await.unwrap();
    }
    // From Matrix, too.
    let mut from_matrix = message(&id, "alice", "reply 4", Delivery::Direct);
    from_matrix.thread_id = Some(root.id);
    from_matrix.status = MessageStatus::Sent;
    from_matrix.event_id = Some(ruma::owned_event_id!("$reply4"));
    store
        .store_inbound(&[from_matrix.clone()], &[])
        .await
        .unwrap();
    let bodies = |page: &bridge::model::Page| {
        page.messages
            .iter()
            .map(|m| m.body.clone())
            .collect::<Vec<_>>()
    };
    let page = store.thread(&id, root.id, 2, None).await.unwrap();
    assert_eq!(bodies(&page), ["reply 4", "reply 3"]);
    assert_eq!(page.next, Some(in_thread[2]));
    let page = store.thread(&id, root.id, 2, page.next).await.unwrap();
    assert_eq!(bodies(&page), ["reply 2", "reply 1"]);
    assert_eq!(page.next, None);
    // Edited in place, it stays in its thread; the rest of history has all.
    let mut edited = store.message(&id, in_thread[0]).await.unwrap().unwrap();
    let read = edited.clone();
    edited.body = "reply 1, edited".into();
    store
        .update_message(&read, &edited, Outbox::Keep, None)
        .await
        .unwrap();
    let page = store.thread(&id, root.id, 10, None).await.unwrap();
    assert_eq!(page.messages.last().unwrap().body, "reply 1, edited");
    assert_eq!(
        store.messages(&id, 100, None).await.unwrap().messages.len(),
        8
    );
    assert!(
        store
            .thread(&id, in_thread[0], 10, None)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}

fn member_sync(id: &ConversationId, name: &str, delivery: Delivery) -> PendingSync {
    PendingSync {
        conversation_id: id.clone(),
        subject: SyncSubject::Member {
            matrix_user_id: puppet_id(name),
            user_id: Some(user(name)),
        },
        id: MessageId::new(),
        delivery,
        since: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        readmit: false,
    }
}

async fn outbox_of(store: &impl Store, id: &ConversationId) -> i64 {
    store.conversation(id).await.unwrap().unwrap().outbox
}

async fn member_changes_carry_their_sync(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let carol = Member {
        role: Role::Moderator,
        ..member(&id, "carol", false)
    };
    let first = member_sync(&id, "carol", Delivery::Direct);
    let put = MemberWrite::Put(&carol);
    store
        .change_member(put, &first, None, Outbox::EnterIfEmpty)
        .await
        .unwrap();
    let context = store.sync_context(&id, &first.subject).await.unwrap();
    assert_eq!(context.member.as_ref(), Some(&carol));
    assert_eq!(context.sync.as_ref(), Some(&first));
    assert_eq!(context.conversation.unwrap().id, id);
    assert_eq!(outbox_of(store, &id).await, 1, "counted while in flight");

    // Nothing else goes directly while it is in flight.
    let dave = member(&id, "dave", false);
    let direct = member_sync(&id, "dave", Delivery::Direct);
    assert!(matches!(
        store
            .change_member(MemberWrite::Put(&dave), &direct, None, Outbox::EnterIfEmpty)
            .await,
        Err(StoreError::Rejected)
    ));
    let in_flight = message(&id, "alice", "behind the change", Delivery::Direct);
    assert!(matches!(
        store.insert_message(&in_flight, None).await,
        Err(StoreError::Rejected)
    ));

    // A change made against an older read is refused: a sync is pending.
    let second = member_sync(&id, "carol", Delivery::Queued);
    assert!(matches!(
        store.change_member(put, &second, None, Outbox::Keep).await,
        Err(StoreError::Rejected)
    ));
    // Replacing it keeps its place in the outbox.
    store
        .change_member(put, &second, Some(first.id), Outbox::Keep)
        .await
        .unwrap();
    assert_eq!(outbox_of(store, &id).await, 1);
    assert!(
        matches!(store.settle_sync(&first).await, Err(StoreError::Rejected)),
        "a replaced sync does not settle"
    );
    assert!(matches!(
        store.queue_sync(&first).await,
        Err(StoreError::Rejected)
    ));
    assert_eq!(outbox_of(store, &id).await, 1);

    // A direct one handed to the retry function stays counted, once.
    let removal = member_sync(&id, "carol", Delivery::Direct);
    let carol_id = puppet_id("carol");
    store
        .change_member(
            MemberWrite::Remove(&carol_id),
            &removal,
            Some(second.id),
            Outbox::Keep,
        )
        .await
        .unwrap();
    let context = store.sync_context(&id, &removal.subject).await.unwrap();
    assert_eq!(context.member, None, "removed from the table at once");
    store.queue_sync(&removal).await.unwrap();
    assert!(
        matches!(store.queue_sync(&removal).await, Err(StoreError::Rejected)),
        "queued already"
    );
    assert_eq!(outbox_of(store, &id).await, 1);
    let queued = store
        .sync_context(&id, &removal.subject)
        .await
        .unwrap()
        .sync
        .unwrap();
    assert_eq!(
        queued,
        PendingSync {
            delivery: Delivery::Queued,
            ..removal.clone()
        }
    );
    assert!(matches!(
        store.settle_sync(&second).await,
        Err(StoreError::Rejected)
    ));
    store.settle_sync(&queued).await.unwrap();
    assert_eq!(outbox_of(store, &id).await, 0);
    assert_eq!(
        store
            .sync_context(&id, &removal.subject)
            .await
            .unwrap()
            .sync,
        None
    );
    assert!(
        matches!(store.settle_sync(&queued).await, Err(StoreError::Rejected)),
        "settled once"
    );
    assert_eq!(outbox_of(store, &id).await, 0);

    // Entering the outbox counts it.
    let entering = member_sync(&id, "dave", Delivery::Queued);
    store
        .change_member(MemberWrite::Put(&dave), &entering, None, Outbox::Enter)
        .await
        .unwrap();
    assert_eq!(outbox_of(store, &id).await, 1);
    store.settle_sync(&entering).await.unwrap();
    assert_eq!(outbox_of(store, &id).await, 0);

    // Undoing a refused change writes the record alone.
    store
        .restore_member(&id, MemberWrite::Remove(&puppet_id("dave")))
        .await
        .unwrap();
    assert_eq!(store.member(&id, &puppet_id("dave")).await.unwrap(), None);
    store
        .restore_member(&id, MemberWrite::Put(&dave))
        .await
        .unwrap();
    assert_eq!(
        store.member(&id, &puppet_id("dave")).await.unwrap(),
        Some(dave)
    );
    assert_eq!(outbox_of(store, &id).await, 0);
}

async fn pending_syncs_are_found_until_they_settle(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let now = OffsetDateTime::now_utc();
    let ours = |found: Vec<PendingSync>| -> Vec<MessageId> {
        found
            .into_iter()
            .filter(|sync| sync.conversation_id == id)
            .map(|sync| sync.id)
            .collect()
    };
    let old = PendingSync {
        since: now - Duration::hours(1),
        ..member_sync(&id, "carol", Delivery::Direct)
    };
    store
        .change_member(
            MemberWrite::Put(&member(&id, "carol", false)),
            &old,
            None,
            Outbox::EnterIfEmpty,
        )
        .await
        .unwrap();
    let recent = PendingSync {
        subject: SyncSubject::Room,
        ..member_sync(&id, "unused", Delivery::Queued)
    };
    let read = store.conversation(&id).await.unwrap().unwrap();
    let renamed = Conversation {
        name: Some("Renamed".into()),
        ..read.clone()
    };
    store
        .change_room(&read, &renamed, &recent, None, Outbox::Enter)
        .await
        .unwrap();
    assert_eq!(outbox_of(store, &id).await, 2);

    let ten_minutes_ago = now - Duration::minutes(10);
    let stale = store.stale_syncs(ten_minutes_ago, 100).await.unwrap();
    assert_eq!(ours(stale.clone()), [old.id], "only the old one");
    assert_eq!(
        stale.into_iter().find(|sync| sync.id == old.id),
        Some(old.clone()),
        "read back whole"
    );
    let later = now + Duration::seconds(2);
    assert_eq!(
        ours(store.stale_syncs(later, 100).await.unwrap()),
        [old.id, recent.id],
        "the longest pending first"
    );
    assert!(
        store
            .stale_pending(later, 1000)
            .await
            .unwrap()
            .iter()
            .all(|message| message.conversation_id != id),
        "no sync among the messages"
    );

    // Handed to the retry function, it is still pending.
    store.queue_sync(&old).await.unwrap();
    let queued = PendingSync {
        delivery: Delivery::Queued,
        ..old.clone()
    };
    assert_eq!(
        store
            .stale_syncs(ten_minutes_ago, 100)
            .await
            .unwrap()
            .into_iter()
            .find(|sync| sync.id == old.id),
        Some(queued.clone())
    );
    store.settle_sync(&queued).await.unwrap();
    store.settle_sync(&recent).await.unwrap();
    assert!(ours(store.stale_syncs(later, 100).await.unwrap()).is_empty());
    assert_eq!(outbox_of(store, &id).await, 0);
}

async fn room_changes_hold_only_while_the_conversation_is_as_read(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let read = store.conversation(&id).await.unwrap().unwrap();
    let renamed = Conversation {
        name: Some("Renamed".into()),
        avatar_url: Some("mxc://localhost/room".into()),
        avatar_source: Some("https://example.org/room.png".into()),
        ..read.clone()
    };
    let sync = PendingSync {
        subject: SyncSubject::Room,
        ..member_sync(&id, "unused", Delivery::Direct)
    };
    store
        .change_room(&read, &renamed, &sync, None, Outbox::EnterIfEmpty)
        .await
        .unwrap();
    let context = store.sync_context(&id, &SyncSubject::Room).await.unwrap();
    assert_eq!(
        context.conversation.as_ref(),
        Some(&Conversation {
            outbox: 1,
            ..renamed.clone()
        }),
        "changed, and counted in the outbox while in flight"
    );
    assert_eq!(context.sync.as_ref(), Some(&sync));
    assert_eq!(context.member, None);
    store.settle_sync(&sync).await.unwrap();
    assert_eq!(outbox_of(store, &id).await, 0);

    // A send moved the outbox since: the read is stale.
    let queued = message(&id, "alice", "queued", Delivery::Queued);
    store.insert_message(&queued, None).await.unwrap();
    let archived = Conversation {
        status: ConversationStatus::Archived,
        ..renamed.clone()
    };
    let archive = PendingSync {
        id: MessageId::new(),
        ..sync.clone()
    };
    assert!(matches!(
        store
            .change_room(&renamed, &archived, &archive, None, Outbox::Enter)
            .await,
        Err(StoreError::Rejected)
    ));
    let read = store.conversation(&id).await.unwrap().unwrap();
    assert_eq!(read.outbox, 1);
    let archived = Conversation {
        status: ConversationStatus::Archived,
        ..read.clone()
    };
    assert!(
        matches!(
            store
                .change_room(&read, &archived, &archive, None, Outbox::EnterIfEmpty)
                .await,
            Err(StoreError::Rejected)
        ),
        "not directly while the outbox is not empty"
    );
    let archive = PendingSync {
        delivery: Delivery::Queued,
        ..archive
    };
    store
        .change_room(&read, &archived, &archive, None, Outbox::Enter)
        .await
        .unwrap();
    let stored = store.conversation(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.outbox, stored.name.as_deref()),
        (ConversationStatus::Archived, 2, Some("Renamed"))
    );
    // Nothing more changes an archived conversation.
    let late = member_sync(&id, "erin", Delivery::Queued);
    for outbox in [Outbox::Keep, Outbox::Enter] {
        assert!(matches!(
            store
                .change_member(
                    MemberWrite::Put(&member(&id, "erin", false)),
                    &late,
                    None,
                    outbox
                )
                .await,
            Err(StoreError::Rejected)
        ));
    }
    store.settle_sync(&archive).await.unwrap();
    assert_eq!(outbox_of(store, &id).await, 1);
}

fn reaction(id: &ConversationId, message: MessageId, from: &str, key: &str) -> Reaction {
    Reaction {
        id: MessageId::new(),
        conversation_id: id.clone(),
        message_id: message,
        key: key.into(),
        sender: Sender {
            user_id: Some(user(from)),
            matrix_user_id: puppet_id(from),
            display_name: None,
        },
        event_id: None,
        origin: Origin::App,
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
    }
}

async fn reactions_are_once_per_user_and_key_and_counted_per_page(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let first = message(&id, "alice", "first", Delivery::Queued);
    let second = message(&id, "alice", "second", Delivery::Queued);
    let later = message(&id, "alice", "later", Delivery::Queued);
    for m in [&first, &second, &later] {
        store.insert_message(m, None).await.unwrap();
    }
    // A key with `#` and an emoji, and another key.
    let thumbs = "#👍";
    let alice = reaction(&id, first.id, "alice", thumbs);
    store.add_reaction(&alice).await.unwrap();
    let again = reaction(&id, first.id, "alice", thumbs);
    assert!(matches!(
        store.add_reaction(&again).await,
        Err(StoreError::Rejected)
    ));
    let bob = reaction(&id, first.id, "bob", thumbs);
    store.add_reaction(&bob).await.unwrap();
    let party = reaction(&id, first.id, "bob", "🎉");
    store.add_reaction(&party).await.unwrap();
    let on_later = reaction(&id, later.id, "bob", thumbs);
    store.add_reaction(&on_later).await.unwrap();
    let found = store
        .reaction(&id, first.id, &puppet_id("alice"), thumbs)
        .await
        .unwrap();
    assert_eq!(found, Some(alice.clone()));

    let counts = |reader: Option<&'static str>, last: MessageId| {
        let id = id.clone();
        let first = first.id;
        async move {
            let reader = reader.map(puppet_id);
            store
                .reaction_counts(&id, first, last, reader.as_deref())
                .await
                .unwrap()
                .into_iter()
                .map(|(message, count)| (message, count.key, count.count, count.me))
                .collect::<Vec<_>>()
        }
    };
    let mut seen = counts(Some("alice"), second.id).await;
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    let mut expected = vec![
        (first.id, thumbs.to_owned(), 2, true),
        (first.id, "🎉".to_owned(), 1, false),
    ];
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(seen, expected, "the page's messages only");
    assert_eq!(counts(None, later.id).await.len(), 3);

    // Sent: the event leads back to it; only once.
    let event = event_id!("$reaction-1");
    store.mark_reaction_sent(&alice, event).await.unwrap();
    assert!(matches!(
        store.mark_reaction_sent(&alice, event).await,
        Err(StoreError::Rejected)
    ));
    let sent = store.reaction_by_event(event).await.unwrap().unwrap();
    assert_eq!(sent.event_id.as_deref(), Some(event));
    assert_eq!(sent.id, alice.id);

    // Removed: uncounted, the lookup gone; a stale copy removes nothing.
    store.remove_reaction(&sent).await.unwrap();
    assert!(matches!(
        store.remove_reaction(&sent).await,
        Err(StoreError::Rejected)
    ));
    assert!(store.reaction_by_event(event).await.unwrap().is_none());
    let seen = counts(Some("alice"), first.id).await;
    assert!(
        seen.contains(&(first.id, thumbs.to_owned(), 1, false)),
        "{seen:?}"
    );
    // Reacting again is a new reaction.
    let anew = reaction(&id, first.id, "alice", thumbs);
    store.add_reaction(&anew).await.unwrap();
    assert!(matches!(
        store.remove_reaction(&alice).await,
        Err(StoreError::Rejected)
    ));
    store.remove_reaction(&anew).await.unwrap();
    store.remove_reaction(&bob).await.unwrap();
    let seen = counts(Some("bob"), first.id).await;
    assert_eq!(seen, [(first.id, "🎉".to_owned(), 1, true)], "no key at 0");
    // One from Matrix arrives with its event.
    let mut from_matrix = reaction(&id, second.id, "carol", "ok");
    from_matrix.origin = Origin::Matrix;
    from_matrix.event_id = Some(ruma::owned_event_id!("$reaction-2"));
    store.add_reaction(&from_matrix).await.unwrap();
    let found = store
        .reaction_by_event(event_id!("$reaction-2"))
        .await
        .unwrap();
    assert_eq!(found, Some(from_matrix));
}

fn upload(id: &ConversationId, by: &str) -> MediaRecord {
    MediaRecord {
        media_id: MediaId::new(),
        conversation_id: id.clone(),
        uploader: user(by),
        content_uri: "mxc://localhost/abcdef".into(),
        info: MediaInfo {
            mimetype: "image/png".into(),
            size: 1234,
            width: Some(640),
            height: Some(480),
        },
        filename: "cat.png".into(),
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
    }
}

async fn media_are_recorded_once_in_their_conversation(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let image = upload(&id, "alice");
    store.put_media(&image).await.unwrap();
    assert_eq!(
        store.media(&id, image.media_id).await.unwrap(),
        Some(image.clone())
    );
    assert!(
        matches!(store.put_media(&image).await, Err(StoreError::Rejected)),
        "an id is recorded once"
    );
    assert_eq!(
        store.media(&fresh_id(), image.media_id).await.unwrap(),
        None,
        "not found from another conversation"
    );
    assert_eq!(store.media(&id, MediaId::new()).await.unwrap(), None);

    let pdf = MediaRecord {
        info: MediaInfo {
            mimetype: "application/pdf".into(),
            size: 9,
            width: None,
            height: None,
        },
        filename: "notes.pdf".into(),
        ..upload(&id, "bob")
    };
    store.put_media(&pdf).await.unwrap();
    assert_eq!(store.media(&id, pdf.media_id).await.unwrap(), Some(pdf));

    // Media share the conversation's partition with its members and
    // messages, and stay out of their reads.
    let mut with_file = message(&id, "alice", "a caption", Delivery::Direct);
    with_file.attachments = vec![Attachment::from(&image)];
    store.insert_message(&with_file, None).await.unwrap();
    let (_, members) = store.conversation_with_members(&id).await.unwrap().unwrap();
    assert_eq!(members.len(), 2);
    let page = store.messages(&id, 10, None).await.unwrap();
    assert_eq!(
        page.messages,
        vec![with_file.clone()],
        "the message keeps its file"
    );
}

async fn typing_windows_open_once_until_they_end(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let alice = puppet_id("alice");
    let now = OffsetDateTime::now_utc();
    let until = now + Duration::seconds(10);
    assert!(store.start_typing(&id, &alice, now, until).await.unwrap());
    let stored = store.member(&id, &alice).await.unwrap().unwrap();
    assert_eq!(
        stored
            .typing_until
            .map(|t| t.unix_timestamp_nanos() / 1_000_000),
        Some(until.unix_timestamp_nanos() / 1_000_000),
        "kept to the millisecond"
    );
    let later = now + Duration::seconds(5);
    assert!(
        !store
            .start_typing(&id, &alice, later, later + Duration::seconds(10))
            .await
            .unwrap(),
        "within the window: nothing to tell"
    );
    let after = until + Duration::milliseconds(1);
    assert!(
        store
            .start_typing(&id, &alice, after, after + Duration::seconds(10))
            .await
            .unwrap(),
        "the window ended: a new one"
    );
    assert!(store.stop_typing(&id, &alice).await.unwrap());
    assert!(
        !store.stop_typing(&id, &alice).await.unwrap(),
        "closed once"
    );
    assert_eq!(
        store.member(&id, &alice).await.unwrap().unwrap(),
        member(&id, "alice", true),
        "nothing else of the member changed"
    );
    assert!(
        store.start_typing(&id, &alice, now, until).await.unwrap(),
        "closed: a new one at once"
    );

    let carol = puppet_id("carol");
    assert!(!store.start_typing(&id, &carol, now, until).await.unwrap());
    assert!(!store.stop_typing(&id, &carol).await.unwrap());
    assert_eq!(
        store.member(&id, &carol).await.unwrap(),
        None,
        "no member made up"
    );
}

/// A message from Matrix, as the webhook stores it.
fn from_matrix(id: &ConversationId, n: u64) -> Message {
    let event_id =
        ruma::OwnedEventId::try_from(format!("${}-{n}", uuid::Uuid::new_v4().simple())).unwrap();
    Message {
        id: MessageId::for_event(1_795_000_000_000 + n, &event_id),
        sender: Sender {
            user_id: None,
            matrix_user_id: ruma::owned_user_id!("@carol:localhost"),
            display_name: Some("Carol".into()),
        },
        status: MessageStatus::Sent,
        event_id: Some(event_id),
        origin: Origin::Matrix,
        ..message(id, "alice", &format!("from Matrix {n}"), Delivery::Direct)
    }
}

async fn transactions_are_found_by_id_and_fingerprint_with_the_lookups(store: &impl Store) {
    let (id, room_id) = active_conversation(store).await;
    let txn = uuid::Uuid::new_v4().simple().to_string();
    let stored = from_matrix(&id, 1);
    store
        .store_inbound(std::slice::from_ref(&stored), &[])
        .await
        .unwrap();
    let event = stored.event_id.clone().unwrap();
    let unknown_event = ruma::owned_event_id!("$unknown");
    let rooms = [room_id.clone(), room()];
    let events = [event.clone(), unknown_event];
    let nothing = store
        .transaction_context(&txn, "f1", &rooms, &events)
        .await
        .unwrap();
    assert_eq!(nothing.record, None);
    assert_eq!(nothing.rooms.len(), 1);
    assert_eq!(nothing.rooms[&room_id], id);
    assert_eq!(nothing.events.len(), 1);
    assert_eq!(nothing.events[&event], (id.clone(), stored.id));

    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let record = TransactionRecord {
        txn_id: txn.clone(),
        fingerprint: "f1".into(),
        ephemeral_fingerprint: "e1".into(),
        events: 2,
        ephemeral: 1,
        published: 1,
        skipped: vec![SkippedEvent {
            index: 1,
            event_id: Some("$bad".into()),
            event_type: Some("m.room.message".into()),
            reason: "malformed event".into(),
        }],
        processed_at: now,
        expires_at: now + TransactionRecord::LIFETIME,
    };
    store.record_transaction(&record).await.unwrap();
    let found = store
        .transaction_context(&txn, "f1", &[], &[])
        .await
        .unwrap();
    assert_eq!(
        found,
        TransactionContext {
            record: Some(record.clone()),
            ..TransactionContext::default()
        }
    );
    assert!(found.record.unwrap().is_repeated_by("f1", None));
    // The same id with other events (a homeserver that started again).
    let other = store
        .transaction_context(&txn, "f2", &[], &[])
        .await
        .unwrap();
    assert_eq!(other.record, None);
}

async fn messages_from_matrix_are_stored_in_batches_and_found_by_event(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let messages: Vec<Message> = (0..120).map(|n| from_matrix(&id, n)).collect();
    store.store_inbound(&messages, &[]).await.unwrap();
    let keys: Vec<(ConversationId, MessageId)> =
        messages.iter().map(|m| (id.clone(), m.id)).collect();
    let mut found = store.messages_by_id(&keys).await.unwrap();
    found.sort_by_key(|m| m.id);
    assert_eq!(found, messages);
    let last = messages.last().unwrap();
    assert_eq!(
        store
            .message_by_event(last.event_id.as_ref().unwrap())
            .await
            .unwrap(),
        Some((id.clone(), last.id))
    );
    let page = store.messages(&id, 200, None).await.unwrap();
    assert_eq!(page.messages.len(), 120);
    assert_eq!(page.messages[0], *last, "newest first, by the event's time");
    assert!(
        store
            .messages_by_id(&[(id, MessageId::new())])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn member_changes_touch_only_what_a_membership_says(store: &impl Store) {
    let (id, _) = active_conversation(store).await;
    let carol = ruma::owned_user_id!("@carol:localhost");
    let joined = |user: &OwnedUserId, name: Option<&str>| {
        MemberChange::Joined(Member {
            conversation_id: id.clone(),
            matrix_user_id: user.clone(),
            user_id: None,
            role: Role::Member,
            display_name: name.map(str::to_owned),
            joined: true,
            removed: None,
            typing_until: None,
        })
    };
    // A Matrix user the bridge did not know; bob, known and not joined yet.
    store
        .store_inbound(
            &[],
            &[
                joined(&carol, Some("Carol")),
                joined(&puppet_id("bob"), None),
            ],
        )
        .await
        .unwrap();
    let member = |user: OwnedUserId| {
        let id = id.clone();
        async move { store.member(&id, &user).await.unwrap() }
    };
    let carol_record = member(carol.clone()).await.unwrap();
    assert!(carol_record.joined);
    assert_eq!(carol_record.role, Role::Member);
    assert_eq!(carol_record.display_name.as_deref(), Some("Carol"));
    assert_eq!(carol_record.user_id, None);
    let bob = member(puppet_id("bob")).await.unwrap();
    assert!(bob.joined);
    assert_eq!(
        bob.display_name.as_deref(),
        Some("BOB"),
        "kept without a new name"
    );
    assert_eq!(
        bob.user_id,
        Some(user("bob")),
        "the rest of the record kept"
    );

    // A moderator kicks bob; carol leaves; someone unknown leaves.
    let removal = Removal {
        by: carol.clone(),
        banned: false,
        reason: Some("spam".into()),
        at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
    };
    let stranger = ruma::owned_user_id!("@stranger:localhost");
    let left = |user: &OwnedUserId, removal: Option<Removal>| MemberChange::Left {
        conversation_id: id.clone(),
        matrix_user_id: user.clone(),
        removal,
    };
    store
        .store_inbound(
            &[],
            &[
                left(&puppet_id("bob"), Some(removal.clone())),
                left(&carol, None),
                left(&stranger, None),
            ],
        )
        .await
        .unwrap();
    let bob = member(puppet_id("bob")).await.unwrap();
    assert!(!bob.joined);
    assert_eq!(bob.removed, Some(removal));
    assert_eq!(bob.role, Role::Member);
    assert!(!member(carol.clone()).await.unwrap().joined);
    assert_eq!(
        member(stranger).await,
        None,
        "no record for someone unknown"
    );
    // Joining again (put back by the bridge) clears the removal.
    store
        .store_inbound(&[], &[joined(&puppet_id("bob"), None)])
        .await
        .unwrap();
    let bob = member(puppet_id("bob")).await.unwrap();
    assert!(bob.joined && bob.removed.is_none());
}

async fn memory() -> MemoryStore {
    MemoryStore::new()
}

/// A table per test: moto undoes a cancelled transaction by restoring a copy
/// of the whole table taken when it began, which also undoes the writes other
/// tests made to that table in between.
async fn dynamo() -> DynamoStore {
    let sdk = support::sdk_config().await;
    let table = support::fresh_table(&sdk).await;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)
}

/// One module of tests per adapter, each test with the attributes in `[...]`.
macro_rules! store_suite {
    ($adapter:ident $attrs:tt: $($case:ident),+) => {
        mod $adapter {
            $(store_suite!(@case $adapter $attrs $case);)+
        }
    };
    (@case $adapter:ident [$(#[$attr:meta])*] $case:ident) => {
        #[tokio::test]
        $(#[$attr])*
        async fn $case() {
            super::$case(&super::$adapter().await).await;
        }
    };
}

/// The fake runs under a plain `cargo test`; the adapter needs the stack.
macro_rules! both_adapters {
    ($($case:ident),+ $(,)?) => {
        store_suite!(memory []: $($case),+);
        store_suite!(
            dynamo [#[ignore = "needs the local stack (moto): run make test"]]: $($case),+
        );
    };
}

both_adapters!(
    claims_are_granted_once,
    expired_claims_are_taken_over_with_their_room,
    released_claims_can_be_retried_at_once,
    members_are_read_with_their_conversation,
    many_members_are_stored_in_batches,
    puppets_are_remembered,
    many_puppets_are_read_in_batches,
    direct_sends_need_a_joined_member_and_an_empty_outbox,
    the_bots_notices_need_no_member_but_an_active_conversation,
    idempotency_keys_are_used_once,
    queued_messages_hold_back_direct_sends,
    failures_and_queueing_move_messages_through_the_outbox,
    a_send_is_marked_only_as_the_content_that_was_sent,
    updates_hold_only_while_the_message_is_as_read,
    the_outbox_counts_what_is_stored_not_a_stale_copy,
    messages_in_flight_count_in_the_outbox,
    a_conversations_outbox_lists_what_waits_in_it_oldest_first,
    pending_operations_are_found_until_they_settle,
    expired_idempotency_keys_count_as_absent,
    history_pages_past_a_megabyte,
    history_pages_newest_first,
    threads_page_newest_first_apart_from_the_rest,
    reactions_are_once_per_user_and_key_and_counted_per_page,
    member_changes_carry_their_sync,
    pending_syncs_are_found_until_they_settle,
    room_changes_hold_only_while_the_conversation_is_as_read,
    media_are_recorded_once_in_their_conversation,
    typing_windows_open_once_until_they_end,
    transactions_are_found_by_id_and_fingerprint_with_the_lookups,
    messages_from_matrix_are_stored_in_batches_and_found_by_event,
    member_changes_touch_only_what_a_membership_says,
);
