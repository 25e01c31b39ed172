//! Provisioning on the fakes: membership and roles, direct and public
//! rooms, profiles and avatars, updates and archive, one room across a
//! failure or a crash, and bad requests that create nothing.

use bridge::fetch::{FetchPolicy, Reach};
use bridge::matrix::fake::Op;
use bridge::matrix::{Matrix, RoomSpec};
use bridge::model::{Conversation, ConversationKind, ConversationStatus, Role, SyncSubject};
use ruma::{OwnedRoomId, RoomVersionId};

use super::*;

#[path = "../support/images.rs"]
mod images;
use images::ImageServer;

impl Bridge {
    /// The provision function called by the service with the sample event
    /// `name`, its path parameters and body replaced.
    async fn as_service(
        &self,
        name: &str,
        params: &[(&str, &str)],
        body: Option<Value>,
    ) -> Response<Body> {
        let mut event = Event::load(name).by("svc", true);
        for (param, value) in params {
            event = event.path_param(param, value);
        }
        if let Some(body) = body {
            event = event.body(body);
        }
        self.call("provision", event.request()).await
    }

    async fn provision(&self, body: Value) -> Response<Body> {
        self.as_service("provision-create-conversation", &[], Some(body))
            .await
    }

    async fn put_member(&self, id: &str, user: &str, body: Value) -> Response<Body> {
        let params = [("id", id), ("user_id", user)];
        self.as_service("provision-put-member", &params, Some(body))
            .await
    }

    async fn remove_member(&self, id: &str, user: &str) -> Response<Body> {
        let params = [("id", id), ("user_id", user)];
        self.as_service("provision-remove-member", &params, None)
            .await
    }

    async fn patch(&self, id: &str, body: Value) -> Response<Body> {
        self.as_service("provision-update-conversation", &[("id", id)], Some(body))
            .await
    }

    async fn archive(&self, id: &str) -> Response<Body> {
        self.as_service("provision-archive-conversation", &[("id", id)], None)
            .await
    }

    async fn put_user(&self, user: &str, body: Value) -> Response<Body> {
        self.as_service("provision-put-user", &[("user_id", user)], Some(body))
            .await
    }

    async fn room_of(&self, id: &str) -> OwnedRoomId {
        self.store
            .conversation(&ConversationId::parse(id).unwrap())
            .await
            .unwrap()
            .and_then(|conversation| conversation.room_id)
            .expect("a room")
    }

    /// The power level `user` has in `room`, as its power levels say.
    fn level(&self, room: &OwnedRoomId, user: &ruma::UserId) -> Option<i64> {
        self.matrix
            .state_of(room, "m.room.power_levels", "")
            .unwrap()["users"]
            .get(user.as_str())
            .and_then(Value::as_i64)
    }

    fn count(&self, wanted: impl Fn(&Call) -> bool) -> usize {
        self.matrix
            .calls()
            .iter()
            .filter(|call| wanted(call))
            .count()
    }
}

fn rooms_created(calls: &[Call]) -> usize {
    calls
        .iter()
        .filter(|c| matches!(c, Call::CreateRoom(_)))
        .count()
}

#[tokio::test]
async fn members_join_change_roles_and_leave() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    let carol = puppet("carol");

    let added = bridge
        .put_member(
            "grp-42",
            "carol",
            json!({"role": "moderator", "display_name": "Carol (lead)"}),
        )
        .await;
    assert_eq!(added.status(), 200, "{:?}", json_of(&added));
    assert_eq!(json_of(&added)["role"], "moderator");
    assert!(
        bridge
            .matrix
            .calls()
            .contains(&Call::Invite(room.clone(), carol.clone()))
    );
    assert_eq!(
        bridge.matrix.membership_of(&room, &carol).as_deref(),
        Some("join")
    );
    assert_eq!(bridge.level(&room, &carol), Some(50));
    assert_eq!(
        bridge
            .matrix
            .state_of(&room, "m.room.member", carol.as_str())
            .unwrap()["displayname"],
        "Carol (lead)"
    );
    assert!(
        bridge.level(&room, bridge.matrix.bot()).is_none(),
        "room version 12: the creator is not listed"
    );
    let member = bridge
        .store
        .member(&Bridge::conversation(), &carol)
        .await
        .unwrap()
        .unwrap();
    assert!(member.joined);
    assert_eq!(bridge.outbox().await, 0);

    // The same again changes nothing, in the table or in Matrix.
    let calls = bridge.matrix.calls().len();
    let again = bridge
        .put_member("grp-42", "carol", json!({"role": "moderator"}))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        json_of(&again)["display_name"],
        "Carol (lead)",
        "kept when left out"
    );
    assert_eq!(bridge.matrix.calls().len(), calls);

    // A role change is one read-modify-write of the power levels.
    let promoted = bridge
        .put_member("grp-42", "carol", json!({"role": "owner"}))
        .await;
    assert_eq!(promoted.status(), 200);
    assert_eq!(bridge.level(&room, &carol), Some(100));
    assert_eq!(
        bridge.level(&room, &puppet("alice")),
        Some(100),
        "others untouched"
    );
    let demoted = bridge
        .put_member("grp-42", "carol", json!({"role": "member"}))
        .await;
    assert_eq!(demoted.status(), 200);
    assert_eq!(
        bridge.level(&room, &carol),
        None,
        "the default level is no entry"
    );

    // Removed: the puppet leaves, and its sends and reads are 404.
    let removed = bridge.remove_member("grp-42", "carol").await;
    assert_eq!(removed.status(), 204);
    assert_eq!(
        bridge.matrix.membership_of(&room, &carol).as_deref(),
        Some("leave")
    );
    assert!(
        bridge
            .store
            .member(&Bridge::conversation(), &carol)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(bridge.send("carol", "still here?").await.status(), 404);
    let read = bridge
        .handle(Event::load("provision-get-conversation").by("carol", false))
        .await;
    assert_eq!(read.status(), 404);
    let leaves = bridge.count(|c| matches!(c, Call::Leave(..)));
    assert_eq!(
        bridge.remove_member("grp-42", "carol").await.status(),
        204,
        "idempotent"
    );
    assert_eq!(bridge.count(|c| matches!(c, Call::Leave(..))), leaves);

    // Back again: invited anew (the room is invite-only) and joined.
    let back = bridge
        .put_member("grp-42", "carol", json!({"role": "member"}))
        .await;
    assert_eq!(back.status(), 200);
    assert_eq!(
        bridge.matrix.membership_of(&room, &carol).as_deref(),
        Some("join")
    );
    assert_eq!(bridge.send("carol", "back").await.status(), 201);
}

#[tokio::test]
async fn matrix_users_are_invited_and_removed_by_a_kick() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    let dan: ruma::OwnedUserId = "@dan:elsewhere.org".try_into().unwrap();
    let added = bridge
        .put_member(
            "grp-42",
            "%40dan%3Aelsewhere.org",
            json!({"role": "moderator"}),
        )
        .await;
    assert_eq!(added.status(), 200, "{:?}", json_of(&added));
    assert_eq!(json_of(&added)["matrix_user_id"], dan.as_str());
    assert_eq!(
        bridge.matrix.membership_of(&room, &dan).as_deref(),
        Some("invite")
    );
    assert!(
        !bridge
            .matrix
            .calls()
            .contains(&Call::Join(room.clone(), dan.clone())),
        "not joined for them"
    );
    assert_eq!(bridge.level(&room, &dan), Some(50));

    let named = bridge
        .put_member(
            "grp-42",
            "@dan:elsewhere.org",
            json!({"role": "member", "display_name": "Dan"}),
        )
        .await;
    assert_eq!(named.status(), 400, "a Matrix user keeps its own name");
    let puppet_by_matrix_id = bridge
        .put_member("grp-42", puppet("bob").as_str(), json!({"role": "member"}))
        .await;
    assert_eq!(puppet_by_matrix_id.status(), 400);
    let bot = bridge
        .put_member("grp-42", "@bridgebot:localhost", json!({"role": "owner"}))
        .await;
    assert_eq!(bot.status(), 400);

    let removed = bridge.remove_member("grp-42", "@dan:elsewhere.org").await;
    assert_eq!(removed.status(), 204);
    assert!(
        bridge
            .matrix
            .calls()
            .contains(&Call::Kick(room.clone(), dan.clone()))
    );
    assert_eq!(
        bridge.matrix.membership_of(&room, &dan).as_deref(),
        Some("leave")
    );
    assert_eq!(bridge.level(&room, &dan), None);
}

#[tokio::test]
async fn a_queued_member_change_leaves_a_moderators_ban_in_place() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    let bob = puppet("bob");
    let id = ConversationId::parse("grp-42").unwrap();

    // Down for the role change: it waits in the outbox.
    bridge.matrix.fail_next(Op::PutState, Failure::Down);
    let queued = bridge
        .put_member("grp-42", "bob", json!({"role": "moderator"}))
        .await;
    assert_eq!(queued.status(), 202, "{:?}", json_of(&queued));
    // Meanwhile a Matrix moderator bans bob; the webhook has not said so.
    let moderator = ruma::owned_user_id!("@mod:localhost");
    bridge
        .matrix
        .moderator_ban(&room, &bob, &moderator, Some("trolling"));

    let retry = bridge.retry().await;
    let jobs = bridge.queue.jobs();
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(
        bridge.count(|call| matches!(call, Call::Invite(_, user) if *user == bob)),
        0,
        "not invited back"
    );
    assert_eq!(
        bridge.matrix.membership_of(&room, &bob).as_deref(),
        Some("ban")
    );
    let member = bridge.store.member(&id, &bob).await.unwrap().unwrap();
    let removal = member.removed.expect("the ban is recorded");
    assert!(removal.banned && removal.by == moderator);
    assert!(!member.joined);
    assert_eq!(bridge.outbox().await, 0, "the change is done");
    let again = bridge
        .put_member("grp-42", "bob", json!({"role": "moderator"}))
        .await;
    assert_eq!(again.status(), 409, "{:?}", json_of(&again));
}

#[tokio::test]
async fn member_changes_wait_in_the_outbox_behind_messages_when_the_homeserver_is_down() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;

    // Down for a join: accepted (202), delivered by the retry function.
    bridge.matrix.fail_next(Op::Invite, Failure::Down);
    let queued = bridge
        .put_member("grp-42", "carol", json!({"role": "moderator"}))
        .await;
    assert_eq!(queued.status(), 202, "{:?}", json_of(&queued));
    assert_eq!(bridge.outbox().await, 1);
    let jobs = bridge.queue.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].operation, Operation::Sync);
    assert!(
        matches!(&jobs[0].subject, Some(SyncSubject::Member { matrix_user_id, .. }) if *matrix_user_id == puppet("carol"))
    );
    let retry = bridge.retry().await;
    bridge.matrix.fail_next(Op::Invite, Failure::Down);
    assert_eq!(
        failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).len(),
        1,
        "still down: handed back"
    );
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 2)).await).is_empty());
    assert_eq!(
        bridge
            .matrix
            .membership_of(&room, &puppet("carol"))
            .as_deref(),
        Some("join")
    );
    assert_eq!(bridge.level(&room, &puppet("carol")), Some(50));
    assert!(
        bridge
            .store
            .member(&Bridge::conversation(), &puppet("carol"))
            .await
            .unwrap()
            .unwrap()
            .joined
    );
    assert_eq!(bridge.outbox().await, 0);

    // A message waits in the outbox; bob's removal queues behind it.
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(bridge.send("bob", "last words").await.status(), 202);
    let removed = bridge.remove_member("grp-42", "bob").await;
    assert_eq!(removed.status(), 202);
    assert_eq!(json_of(&removed)["status"], "pending");
    assert_eq!(
        bridge
            .matrix
            .membership_of(&room, &puppet("bob"))
            .as_deref(),
        Some("join"),
        "not before the message"
    );
    assert_eq!(
        bridge.send("bob", "too late").await.status(),
        404,
        "removed from the table at once"
    );
    let jobs = bridge.queue.jobs()[1..].to_vec();
    assert_eq!(
        jobs.iter().map(|job| job.operation).collect::<Vec<_>>(),
        [Operation::Send, Operation::Sync]
    );
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    let timeline = bridge.matrix.timeline(&room);
    assert_eq!(timeline.last().unwrap().content["body"], "last words");
    assert_eq!(
        bridge
            .matrix
            .membership_of(&room, &puppet("bob"))
            .as_deref(),
        Some("leave")
    );
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn direct_conversations_have_two_members_in_a_private_room() {
    let bridge = Bridge::new(Fakes::new()).await;
    let two = json!([{"user_id": "ann", "role": "owner"}, {"user_id": "bo", "role": "owner"}]);
    let created = bridge
        .provision(json!({"id": "dm-1", "kind": "direct", "members": two}))
        .await;
    assert_eq!(created.status(), 201, "{:?}", json_of(&created));
    let room = bridge.room_of("dm-1").await;
    let calls = bridge.matrix.calls();
    let Some(Call::CreateRoom(spec)) = calls.iter().find(|c| matches!(c, Call::CreateRoom(_)))
    else {
        panic!("no room")
    };
    assert_eq!(spec.kind, Some(ConversationKind::Direct));
    assert_eq!(
        bridge
            .matrix
            .state_of(&room, "m.room.member", puppet("bo").as_str())
            .unwrap()["membership"],
        "join"
    );
    assert_eq!(
        bridge
            .matrix
            .state_of(&room, "m.room.join_rules", "")
            .unwrap()["join_rule"],
        "invite"
    );
    assert!(!bridge.matrix.is_listed(&room));

    for members in [
        json!([{"user_id": "ann"}]),
        json!([{"user_id": "a"}, {"user_id": "b"}, {"user_id": "c"}]),
        json!([]),
    ] {
        let refused = bridge
            .provision(json!({"id": "dm-2", "kind": "direct", "members": members}))
            .await;
        assert_eq!(refused.status(), 400);
        assert!(
            json_of(&refused)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("exactly two members")
        );
    }
    assert_eq!(
        bridge
            .put_member("dm-1", "cy", json!({"role": "member"}))
            .await
            .status(),
        400
    );
    assert_eq!(bridge.remove_member("dm-1", "bo").await.status(), 400);
    assert_eq!(
        bridge
            .put_member("dm-1", "bo", json!({"role": "member"}))
            .await
            .status(),
        200,
        "roles change"
    );
}

#[tokio::test]
async fn public_rooms_are_listed_with_their_name_topic_and_avatar() {
    let bridge = Bridge::new(Fakes::new()).await;
    let created = bridge
        .provision(
            json!({"id": "open-1", "kind": "event", "name": "Open day", "topic": "All welcome",
            "visibility": "public", "avatar_url": "mxc://localhost/open"}),
        )
        .await;
    assert_eq!(created.status(), 201, "{:?}", json_of(&created));
    assert_eq!(json_of(&created)["avatar_url"], "mxc://localhost/open");
    let room = bridge.room_of("open-1").await;
    assert_eq!(
        bridge
            .matrix
            .state_of(&room, "m.room.join_rules", "")
            .unwrap()["join_rule"],
        "public"
    );
    assert!(bridge.matrix.is_listed(&room));
    assert_eq!(
        bridge.matrix.state_of(&room, "m.room.name", "").unwrap()["name"],
        "Open day"
    );
    assert_eq!(
        bridge.matrix.state_of(&room, "m.room.topic", "").unwrap()["topic"],
        "All welcome"
    );
    assert_eq!(
        bridge.matrix.state_of(&room, "m.room.avatar", "").unwrap()["url"],
        "mxc://localhost/open"
    );
    assert_eq!(
        bridge
            .matrix
            .state_of(&room, "m.room.canonical_alias", "")
            .unwrap()["alias"],
        "#app_open-1:localhost"
    );
    let private = bridge
        .provision(json!({"id": "closed-1", "kind": "event"}))
        .await;
    assert_eq!(private.status(), 201);
    let closed = bridge.room_of("closed-1").await;
    assert_eq!(
        bridge
            .matrix
            .state_of(&closed, "m.room.join_rules", "")
            .unwrap()["join_rule"],
        "invite"
    );
    assert!(!bridge.matrix.is_listed(&closed));
}

#[tokio::test]
async fn per_conversation_names_are_member_events_and_global_names_profiles() {
    let bridge = Bridge::new(Fakes::new()).await;
    assert_eq!(
        bridge
            .put_user("dee", json!({"display_name": "Dee"}))
            .await
            .status(),
        200
    );
    let created = bridge
        .provision(json!({"id": "club", "kind": "group", "members": [
            {"user_id": "dee", "role": "owner", "display_name": "Dee (club)"},
            {"user_id": "eli", "display_name": "Eli"}]}))
        .await;
    assert_eq!(created.status(), 201, "{:?}", json_of(&created));
    let room = bridge.room_of("club").await;
    let name = |user: &str| {
        bridge
            .matrix
            .state_of(&room, "m.room.member", puppet(user).as_str())
            .unwrap()["displayname"]
            .clone()
    };
    assert_eq!(name("dee"), "Dee (club)", "the room's name for her");
    assert_eq!(name("eli"), "Eli");
    let calls = bridge.matrix.calls();
    assert!(
        !calls.contains(&Call::DisplayName(puppet("dee"), "Dee (club)".into())),
        "her global name stays"
    );
    assert!(
        calls.contains(&Call::DisplayName(puppet("eli"), "Eli".into())),
        "a new puppet takes it as its global name"
    );
    let renamed = bridge
        .put_member(
            "club",
            "eli",
            json!({"role": "member", "display_name": "Eli E."}),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(name("eli"), "Eli E.");
}

#[tokio::test]
async fn updates_change_the_room_and_archiving_closes_it() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    let patched = bridge
        .handle(Event::load("provision-update-conversation").by("svc", true))
        .await;
    assert_eq!(patched.status(), 200, "{:?}", json_of(&patched));
    assert_eq!(json_of(&patched)["name"], "Hiking club (2027)");
    assert_eq!(json_of(&patched)["members"].as_array().unwrap().len(), 2);
    assert_eq!(
        bridge.matrix.state_of(&room, "m.room.name", "").unwrap()["name"],
        "Hiking club (2027)"
    );
    assert_eq!(
        bridge.matrix.state_of(&room, "m.room.topic", "").unwrap()["topic"],
        "Weekend hikes and a summer trip"
    );
    let puts = bridge.count(|c| matches!(c, Call::PutState { .. }));
    assert_eq!(
        bridge
            .handle(Event::load("provision-update-conversation").by("svc", true))
            .await
            .status(),
        200
    );
    assert_eq!(
        bridge.count(|c| matches!(c, Call::PutState { .. })),
        puts,
        "the same again changes nothing"
    );
    assert_eq!(
        bridge.patch("grp-42", json!({"name": ""})).await.status(),
        400
    );
    assert_eq!(
        bridge.patch("nope", json!({"name": "x"})).await.status(),
        404
    );
    assert_eq!(
        bridge
            .handle(Event::load("provision-update-conversation").by("alice", false))
            .await
            .status(),
        403
    );

    let archived = bridge
        .handle(Event::load("provision-archive-conversation").by("svc", true))
        .await;
    assert_eq!(archived.status(), 204);
    for user in ["alice", "bob"] {
        assert_eq!(
            bridge.matrix.membership_of(&room, &puppet(user)).as_deref(),
            Some("leave"),
            "{user}"
        );
    }
    assert_eq!(
        bridge
            .matrix
            .state_of(&room, "m.room.join_rules", "")
            .unwrap()["join_rule"],
        "invite"
    );
    let conversation = bridge
        .store
        .conversation(&Bridge::conversation())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conversation.status, ConversationStatus::Archived);
    assert_eq!(
        conversation.room_id,
        Some(room.clone()),
        "the mapping is kept"
    );

    assert_eq!(bridge.send("alice", "hello?").await.status(), 409);
    let again = bridge
        .handle(Event::load("provision-create-conversation").by("svc", true))
        .await;
    assert_eq!(again.status(), 409, "no second room for an archived id");
    assert_eq!(rooms_created(&bridge.matrix.calls()), 1);
    assert_eq!(
        bridge
            .put_member("grp-42", "carol", json!({"role": "member"}))
            .await
            .status(),
        409
    );
    assert_eq!(bridge.remove_member("grp-42", "bob").await.status(), 409);
    assert_eq!(
        bridge.patch("grp-42", json!({"name": "x"})).await.status(),
        409
    );
    assert_eq!(
        bridge.archive("grp-42").await.status(),
        204,
        "archiving again is no error"
    );
    let read = bridge
        .handle(Event::load("provision-get-conversation").by("svc", true))
        .await;
    assert_eq!(json_of(&read)["status"], "archived");
}

#[tokio::test]
async fn archiving_waits_behind_queued_messages() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    bridge.matrix.fail_next_send(Failure::Down);
    assert_eq!(bridge.send("alice", "see you").await.status(), 202);
    let archived = bridge.archive("grp-42").await;
    assert_eq!(archived.status(), 202);
    assert_eq!(
        bridge
            .matrix
            .membership_of(&room, &puppet("alice"))
            .as_deref(),
        Some("join")
    );
    let retry = bridge.retry().await;
    assert!(
        failed_ids(
            &retry
                .call(bridge.retry_batch(&bridge.queue.jobs(), 1))
                .await
        )
        .is_empty()
    );
    assert_eq!(
        bridge.matrix.timeline(&room).last().unwrap().content["body"],
        "see you"
    );
    assert_eq!(
        bridge
            .matrix
            .membership_of(&room, &puppet("alice"))
            .as_deref(),
        Some("leave")
    );
    assert_eq!(bridge.outbox().await, 0);
}

#[tokio::test]
async fn a_lost_answer_to_the_room_creation_does_not_make_a_second_room() {
    let bridge = Bridge::new(Fakes::new()).await;
    let body = json!({"id": "once", "kind": "group", "members": [
        {"user_id": "ann", "role": "owner"}, {"user_id": "bo"}]});
    bridge.matrix.fail_next(Op::CreateRoom, Failure::AnswerLost);
    let failed = bridge.provision(body.clone()).await;
    assert_eq!(failed.status(), 503, "{:?}", json_of(&failed));
    assert_eq!(
        bridge.matrix.rooms_created(),
        1,
        "the room was made, its answer lost"
    );

    let retried = bridge.provision(body.clone()).await;
    assert_eq!(retried.status(), 201, "{:?}", json_of(&retried));
    assert_eq!(
        bridge.matrix.rooms_created(),
        1,
        "the alias led to the first room"
    );
    let room = bridge.room_of("once").await;
    assert_eq!(json_of(&retried)["room_id"], room.as_str());
    for user in ["ann", "bo"] {
        assert_eq!(
            bridge.matrix.membership_of(&room, &puppet(user)).as_deref(),
            Some("join")
        );
    }
    assert_eq!(bridge.level(&room, &puppet("ann")), Some(100));

    // A join that fails after the room was recorded: the retry reuses it.
    bridge.matrix.fail_next_join(Failure::Down);
    let body =
        json!({"id": "twice", "kind": "group", "members": [{"user_id": "ann", "role": "owner"}]});
    assert_eq!(bridge.provision(body.clone()).await.status(), 503);
    assert_eq!(bridge.provision(body).await.status(), 201);
    assert_eq!(
        bridge.matrix.rooms_created(),
        2,
        "one room per conversation"
    );
}

#[tokio::test]
async fn a_crash_between_creating_and_recording_the_room_leaves_one_room() {
    let bridge = Bridge::new(Fakes::new()).await;
    let id = ConversationId::parse("crashed").unwrap();
    // An earlier request claimed the id, made the room and died before
    // recording it: its claim runs out, and the room exists.
    let now = time::OffsetDateTime::now_utc();
    let draft = Conversation::draft(id.clone(), ConversationKind::Group, now);
    bridge
        .store
        .claim_conversation(&draft, now - time::Duration::seconds(1))
        .await
        .unwrap();
    let alias = bridge.fakes.namer.room_alias(&id);
    let spec = RoomSpec {
        kind: Some(ConversationKind::Group),
        name: Some("Crashed".into()),
        invite: vec![puppet("ann")],
        power_levels: [(puppet("ann"), 100)].into_iter().collect(),
        alias: Some(alias.alias().to_owned()),
        ..RoomSpec::default()
    };
    let made = bridge.matrix.create_room(&spec).await.unwrap();

    let retried = bridge
        .provision(
            json!({"id": "crashed", "kind": "group", "name": "Crashed", "members": [
            {"user_id": "ann", "role": "owner"}, {"user_id": "bo", "role": "moderator"}]}),
        )
        .await;
    assert_eq!(retried.status(), 201, "{:?}", json_of(&retried));
    assert_eq!(json_of(&retried)["room_id"], made.as_str());
    assert_eq!(bridge.matrix.rooms_created(), 1);
    assert_eq!(bridge.room_of("crashed").await, made);
    // The room is brought in line with the request, whatever the first
    // attempt got done: bo, whom it never invited, is in with his level.
    for user in ["ann", "bo"] {
        assert_eq!(
            bridge.matrix.membership_of(&made, &puppet(user)).as_deref(),
            Some("join"),
            "{user}"
        );
    }
    assert_eq!(bridge.level(&made, &puppet("bo")), Some(50));
    assert_eq!(
        bridge.store.conversation_by_room(&made).await.unwrap(),
        Some(id)
    );
}

#[tokio::test]
async fn bad_requests_create_nothing() {
    let bridge = Bridge::with_conversation().await;
    let owner = json!({"user_id": "ann", "role": "owner"});
    let many: Vec<Value> = (0..201)
        .map(|i| json!({"user_id": format!("u{i}"), "role": "owner"}))
        .collect();
    let cases = [
        (json!({"id": "bad-1", "kind": "chatroom"}), 400),
        (
            json!({"id": "bad-2", "kind": "group", "members": [owner, {"user_id": "ann"}]}),
            400,
        ),
        (
            json!({"id": "bad-3", "kind": "direct", "members": [owner]}),
            400,
        ),
        (
            json!({"id": "bad-4", "kind": "group", "members": [{"user_id": "ann"}, {"user_id": "bo"}]}),
            400,
        ),
        (
            json!({"id": "bad-5", "kind": "group", "members": [owner, {"user_id": "not valid!"}]}),
            400,
        ),
        (
            json!({"id": "bad-6", "kind": "group", "members": [owner, {"matrix_user_id": "carol@example.org"}]}),
            400,
        ),
        (
            json!({"id": "bad-7", "kind": "event", "parent_id": "grp-42"}),
            400,
        ),
        (
            json!({"id": "bad-8", "kind": "event", "parent_id": "no-such-space"}),
            400,
        ),
        (
            json!({"id": "bad-9", "kind": "group", "members": many}),
            400,
        ),
        (json!({"id": "bad id", "kind": "group"}), 400),
        (json!({"id": "grp-42", "kind": "event"}), 409),
    ];
    let calls = bridge.matrix.calls().len();
    for (body, status) in cases {
        let id = body["id"].as_str().unwrap().to_owned();
        let response = bridge.provision(body).await;
        assert_eq!(response.status(), status, "{id}: {:?}", json_of(&response));
        assert_eq!(
            json_of(&response)["error"]["code"],
            if status == 400 {
                "invalid_request"
            } else {
                "conflict"
            }
        );
        if let Ok(id) = ConversationId::parse(id.as_str())
            && id.as_str() != "grp-42"
        {
            assert!(
                bridge.store.conversation(&id).await.unwrap().is_none(),
                "{id} is not in the table"
            );
        }
    }
    assert_eq!(
        bridge.matrix.calls().len(),
        calls,
        "nothing asked of Matrix"
    );
}

#[tokio::test]
async fn groups_keep_an_owner() {
    let bridge = Bridge::with_conversation().await;
    let demoted = bridge
        .put_member("grp-42", "alice", json!({"role": "member"}))
        .await;
    assert_eq!(demoted.status(), 409, "{:?}", json_of(&demoted));
    assert_eq!(bridge.remove_member("grp-42", "alice").await.status(), 409);
    assert_eq!(
        bridge
            .put_member("grp-42", "bob", json!({"role": "owner"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        bridge
            .put_member("grp-42", "alice", json!({"role": "member"}))
            .await
            .status(),
        200
    );
    let stored = bridge
        .store
        .member(&Bridge::conversation(), &puppet("alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.role, Role::Member);
}

#[tokio::test]
async fn older_room_versions_keep_their_creator_in_the_power_levels() {
    let fakes = Fakes::new();
    fakes.matrix.set_default_room_version(RoomVersionId::V10);
    let bridge = Bridge::new(fakes).await;
    let created = bridge
        .handle(Event::load("provision-create-conversation").by("svc", true))
        .await;
    assert_eq!(created.status(), 201);
    let room = bridge.room_of("grp-42").await;
    assert_eq!(
        bridge.level(&room, bridge.matrix.bot()),
        Some(100),
        "listed before version 12"
    );
    assert_eq!(
        bridge
            .put_member("grp-42", "bob", json!({"role": "moderator"}))
            .await
            .status(),
        200
    );
    assert_eq!(bridge.level(&room, &puppet("bob")), Some(50));
    assert_eq!(
        bridge.level(&room, bridge.matrix.bot()),
        Some(100),
        "the creator's entry stays"
    );
}

#[tokio::test]
async fn https_avatars_are_fetched_once_within_limits() {
    let server = ImageServer::start().await;
    let fakes = Fakes {
        fetch: FetchPolicy {
            reach: Reach::PublicAndLoopback,
            max_bytes: 1024,
            ..FetchPolicy::default()
        },
        ..Fakes::new()
    };
    let bridge = Bridge::new(fakes).await;
    let put = bridge
        .put_user(
            "fay",
            json!({"display_name": "Fay", "avatar_url": server.url("/a.png")}),
        )
        .await;
    assert_eq!(put.status(), 200, "{:?}", json_of(&put));
    let avatar = json_of(&put)["avatar_url"].as_str().unwrap().to_owned();
    assert!(avatar.starts_with("mxc://"), "{avatar}");
    let media = bridge
        .matrix
        .media(&ruma::OwnedMxcUri::from(avatar.clone()))
        .unwrap();
    assert_eq!(
        (media.content_type.as_str(), media.bytes.len()),
        ("image/png", 64)
    );
    assert!(
        bridge
            .matrix
            .calls()
            .contains(&Call::Avatar(puppet("fay"), avatar.clone()))
    );
    assert_eq!(server.hits(), 1);
    let again = bridge
        .put_user("fay", json!({"avatar_url": server.url("/a.png")}))
        .await;
    assert_eq!(
        (
            again.status().as_u16(),
            json_of(&again)["avatar_url"].as_str()
        ),
        (200, Some(avatar.as_str()))
    );
    assert_eq!(server.hits(), 1, "the same address is not fetched again");

    let redirected = bridge
        .put_user("fay", json!({"avatar_url": server.url("/to-a")}))
        .await;
    assert_eq!(redirected.status(), 200, "{:?}", json_of(&redirected));
    for (path, words) in [
        ("/big.png", "larger than 1024 bytes"),
        ("/text", "not an image"),
        ("/to-metadata", "not a public one"),
        ("/to-private", "not a public one"),
        ("/missing.png", "answered 404"),
    ] {
        let refused = bridge
            .put_user("fay", json!({"avatar_url": server.url(path)}))
            .await;
        assert_eq!(refused.status(), 400, "{path}");
        let message = json_of(&refused)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(words), "{path}: {message}");
    }

    // A conversation's avatar too, at creation and by PATCH.
    let created = bridge
        .provision(json!({"id": "pics", "kind": "event", "avatar_url": server.url("/a.png")}))
        .await;
    assert_eq!(created.status(), 201, "{:?}", json_of(&created));
    let room = bridge.room_of("pics").await;
    let first = bridge.matrix.state_of(&room, "m.room.avatar", "").unwrap()["url"].clone();
    assert!(first.as_str().unwrap().starts_with("mxc://"));
    let patched = bridge
        .patch("pics", json!({"avatar_url": server.url("/b.png")}))
        .await;
    assert_eq!(patched.status(), 200, "{:?}", json_of(&patched));
    let second = bridge.matrix.state_of(&room, "m.room.avatar", "").unwrap()["url"].clone();
    assert_ne!(first, second);
    assert_eq!(json_of(&patched)["avatar_url"], second);
}

#[tokio::test]
async fn only_public_addresses_are_fetched_by_default() {
    let server = ImageServer::start().await;
    let bridge = Bridge::new(Fakes::new()).await;
    let port = server.addr.port();
    for url in [
        server.url("/a.png"),
        format!("https://127.0.0.1:{port}/a.png"),
        format!("https://localhost:{port}/a.png"),
        format!("https://[::1]:{port}/a.png"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://10.1.2.3/a.png".to_owned(),
    ] {
        let refused = bridge.put_user("gus", json!({"avatar_url": url})).await;
        assert_eq!(refused.status(), 400, "{url}");
    }
    assert_eq!(server.hits(), 0, "nothing reached the server");
    assert!(
        !bridge
            .matrix
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Register(_))),
        "nothing half-done"
    );
}

#[tokio::test]
async fn a_member_change_in_flight_holds_back_sends_and_is_swept_if_its_request_died() {
    use bridge::model::{Member, PendingSync};
    use bridge::store::{MemberWrite, Outbox};
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    let id = Bridge::conversation();
    // A join stored as a request stores it, which then died before
    // reaching Matrix: pending, direct, no job.
    let carol = Member {
        conversation_id: id.clone(),
        matrix_user_id: puppet("carol"),
        user_id: Some(AppUserId::parse("carol").unwrap()),
        role: Role::Moderator,
        display_name: None,
        joined: false,
        typing_until: None,
        removed: None,
    };
    let now = time::OffsetDateTime::now_utc();
    let orphan = PendingSync {
        conversation_id: id.clone(),
        subject: SyncSubject::Member {
            matrix_user_id: carol.matrix_user_id.clone(),
            user_id: carol.user_id.clone(),
        },
        id: MessageId::new(),
        delivery: Delivery::Direct,
        since: now,
        readmit: false,
    };
    bridge
        .store
        .change_member(
            MemberWrite::Put(&carol),
            &orphan,
            None,
            Outbox::EnterIfEmpty,
        )
        .await
        .unwrap();
    assert_eq!(bridge.outbox().await, 1, "counted while in flight");
    let behind = bridge.send("alice", "after carol joined").await;
    assert_eq!(behind.status(), 202, "a send does not overtake it");
    assert_eq!(bridge.matrix.membership_of(&room, &puppet("carol")), None);
    let jobs_before = bridge.queue.jobs().len();

    let sweeper = bridge.sweeper();
    assert_eq!(sweeper.sweep(now).await.unwrap().found, 0, "not stale yet");
    let swept = sweeper
        .sweep(now + time::Duration::minutes(11))
        .await
        .unwrap();
    assert_eq!((swept.found, swept.requeued, swept.failed), (2, 2, 0));
    let jobs = bridge.queue.jobs()[jobs_before..].to_vec();
    assert_eq!(
        jobs.iter().map(|job| job.operation).collect::<Vec<_>>(),
        [Operation::Sync, Operation::Send],
        "the longest pending first"
    );
    let queued = bridge
        .store
        .sync_context(&id, &orphan.subject)
        .await
        .unwrap();
    assert_eq!(queued.sync.unwrap().delivery, Delivery::Queued);
    assert_eq!(bridge.outbox().await, 2, "each counted once");

    let retry = bridge.retry().await;
    assert!(failed_ids(&retry.call(bridge.retry_batch(&jobs, 1)).await).is_empty());
    assert_eq!(
        bridge
            .matrix
            .membership_of(&room, &puppet("carol"))
            .as_deref(),
        Some("join")
    );
    assert_eq!(bridge.level(&room, &puppet("carol")), Some(50));
    assert_eq!(
        bridge.matrix.timeline(&room).last().unwrap().content["body"],
        "after carol joined"
    );
    assert_eq!(bridge.outbox().await, 0);
    assert_eq!(
        bridge
            .sweeper()
            .sweep(now + time::Duration::minutes(11))
            .await
            .unwrap()
            .found,
        0,
        "nothing left pending"
    );
    assert_eq!(bridge.send("carol", "direct again").await.status(), 201);
}

#[tokio::test]
async fn member_changes_wait_for_the_homeserver_until_their_deadline() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    bridge.matrix.fail_next(Op::Invite, Failure::Down);
    let queued = bridge
        .put_member("grp-42", "carol", json!({"role": "member"}))
        .await;
    assert_eq!(queued.status(), 202);
    let jobs = bridge.queue.jobs();
    assert_eq!(jobs.len(), 1);

    // However often it was received, it is handed back before its deadline.
    bridge.matrix.fail_next(Op::Invite, Failure::Down);
    let retry = bridge.retry().await;
    assert_eq!(
        failed_ids(&retry.call(bridge.retry_batch(&jobs, 50)).await).len(),
        1
    );
    assert_eq!(bridge.outbox().await, 1);

    // Past it, the change is dropped and the conversation moves on.
    bridge.matrix.fail_next(Op::Invite, Failure::Down);
    let late = bridge.retry_with_deadline(time::Duration::ZERO).await;
    assert!(failed_ids(&late.call(bridge.retry_batch(&jobs, 51)).await).is_empty());
    assert_eq!(bridge.outbox().await, 0);
    assert_eq!(bridge.matrix.membership_of(&room, &puppet("carol")), None);
    let subject = SyncSubject::Member {
        matrix_user_id: puppet("carol"),
        user_id: Some(AppUserId::parse("carol").unwrap()),
    };
    let context = bridge
        .store
        .sync_context(&Bridge::conversation(), &subject)
        .await
        .unwrap();
    assert_eq!(context.sync, None);
    assert_eq!(bridge.send("alice", "moving on").await.status(), 201);

    // Another change of the same member brings Matrix in line.
    let again = bridge
        .put_member("grp-42", "carol", json!({"role": "moderator"}))
        .await;
    assert_eq!(again.status(), 200, "{:?}", json_of(&again));
    assert_eq!(
        bridge
            .matrix
            .membership_of(&room, &puppet("carol"))
            .as_deref(),
        Some("join")
    );
    assert_eq!(bridge.level(&room, &puppet("carol")), Some(50));
}

#[tokio::test]
async fn the_sweeper_drops_a_room_change_past_its_deadline() {
    let bridge = Bridge::with_conversation().await;
    let room = bridge.room_of("grp-42").await;
    bridge.matrix.fail_next(Op::PutState, Failure::Down);
    let patched = bridge.patch("grp-42", json!({"topic": "Never told"})).await;
    assert_eq!(patched.status(), 202, "{:?}", json_of(&patched));
    assert_eq!(bridge.outbox().await, 1);
    let now = time::OffsetDateTime::now_utc();
    let swept = bridge
        .sweeper()
        .sweep(now + time::Duration::hours(25))
        .await
        .unwrap();
    assert_eq!((swept.found, swept.requeued, swept.failed), (1, 0, 1));
    assert_eq!(bridge.outbox().await, 0);
    assert_eq!(bridge.send("alice", "flowing again").await.status(), 201);
    let topic = bridge.matrix.state_of(&room, "m.room.topic", "");
    assert_ne!(
        topic.map(|content| content["topic"].clone()),
        Some(json!("Never told"))
    );
}
