//! Provisioning on the real Synapse, as a plain Matrix user sees it through
//! its own client API: members joining, changing roles and leaving, Matrix
//! users invited and kicked, display names, direct, public and private
//! rooms, updates and archive, one room across a crash, and avatars
//! fetched from an `https://` address.

use std::collections::HashMap;

use bridge::config::MatrixConfig;
use bridge::handlers::provision::{self, plan::PutUser};
use bridge::ids::{AppUserId, ConversationId};
use bridge::matrix::{AppserviceClient, Matrix, RoomSpec};
use bridge::metrics::Metrics;
use bridge::model::{Conversation, ConversationKind};
use bridge::runtime::Adapters;
use bridge::store::{ConversationStore, DynamoStore};
use serde_json::{Value, json};

use crate::client::{Api, MatrixUser, Reply, token, unique};
use crate::flows::puppet;
use crate::support::{sdk_config, stack_env, var};

#[path = "../support/images.rs"]
mod images;

fn member_path(conversation: &str, user: &str) -> String {
    let user = percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC);
    format!("/v1/conversations/{conversation}/members/{user}")
}

/// `PUT` of a member, as the service.
pub(crate) async fn put_member(api: &Api, conversation: &str, user: &str, body: Value) -> Reply {
    let path = member_path(conversation, user);
    api.json("PUT", &path, &token("svc", true), &body).await
}

/// `DELETE` of a path, as the service.
async fn delete(api: &Api, path: &str) -> Reply {
    api.call("DELETE", path, Some(&token("svc", true)), &[], None)
        .await
}

/// A message sent by `user`.
async fn send(api: &Api, conversation: &str, user: &str, body: &str) -> Reply {
    let path = format!("/v1/conversations/{conversation}/messages");
    api.json("POST", &path, &token(user, false), &json!({"body": body}))
        .await
}

/// A member's membership and display name, as `viewer` reads them.
async fn member(viewer: &MatrixUser, room: &str, user: &str) -> (Value, Value) {
    let event = viewer.state(room, "m.room.member", user).await;
    (event["membership"].clone(), event["displayname"].clone())
}

/// The power level `user` is listed with, if any.
async fn level(viewer: &MatrixUser, room: &str, user: &str) -> Option<i64> {
    viewer.state(room, "m.room.power_levels", "").await["users"]
        .get(user)
        .and_then(Value::as_i64)
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn members_join_change_roles_and_leave_as_a_matrix_user_sees_it() {
    let api = Api::new();
    let admin = token("svc", true);
    let (alice, bob, conversation) = (unique("alice"), unique("bob"), unique("mem"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let dan = MatrixUser::register(&unique("dan")).await;
    let created = api
        .provision(
            &json!({"id": conversation, "kind": "group", "name": "Members",
            "members": [{"user_id": alice, "role": "owner", "display_name": "Alice"},
                        {"matrix_user_id": carol.user_id, "role": "member"}]}),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room).await;

    // The room version is the homeserver's default; from version 12 on the
    // bot, its creator, is not in the power levels' users.
    let default = carol.get("/_matrix/client/v3/capabilities").await["capabilities"]
        ["m.room_versions"]["default"]
        .clone();
    let create = carol.state(&room, "m.room.create", "").await;
    assert_eq!(create["room_version"], default);
    let bot = MatrixConfig::from_env(stack_env()).unwrap().bot_user_id;
    if default == "12" {
        assert_eq!(level(&carol, &room, bot.as_str()).await, None);
    }

    let added = put_member(
        &api,
        &conversation,
        &bob,
        json!({"role": "moderator", "display_name": "Bob (guide)"}),
    )
    .await;
    assert_eq!(added.status, 200, "{added:?}");
    assert_eq!(
        member(&carol, &room, &puppet(&bob)).await,
        (json!("join"), json!("Bob (guide)"))
    );
    assert_eq!(level(&carol, &room, &puppet(&bob)).await, Some(50));
    let sent = send(&api, &conversation, &bob, "Hello from the guide").await;
    assert_eq!(sent.status, 201, "{sent:?}");

    let promoted = put_member(&api, &conversation, &bob, json!({"role": "owner"})).await;
    assert_eq!(promoted.status, 200, "{promoted:?}");
    assert_eq!(level(&carol, &room, &puppet(&bob)).await, Some(100));
    let demoted = put_member(&api, &conversation, &alice, json!({"role": "member"})).await;
    assert_eq!(demoted.status, 200, "{demoted:?}");
    assert_eq!(
        level(&carol, &room, &puppet(&alice)).await,
        None,
        "members are at the default"
    );
    assert_eq!(
        member(&carol, &room, &puppet(&bob)).await.1,
        json!("Bob (guide)"),
        "role changes keep the name"
    );

    // A plain Matrix user: invited, not joined for them; removed by a kick.
    let invited = put_member(
        &api,
        &conversation,
        &dan.user_id,
        json!({"role": "moderator"}),
    )
    .await;
    assert_eq!(invited.status, 200, "{invited:?}");
    assert_eq!(member(&carol, &room, &dan.user_id).await.0, json!("invite"));
    assert_eq!(level(&carol, &room, &dan.user_id).await, Some(50));
    let kicked = delete(&api, &member_path(&conversation, &dan.user_id)).await;
    assert_eq!(kicked.status, 204, "{kicked:?}");
    let event = carol.state(&room, "m.room.member", &dan.user_id).await;
    assert_eq!(event["membership"], "leave");
    assert_eq!(level(&carol, &room, &dan.user_id).await, None);

    // A removed puppet leaves; its sends are 404. (Alice is an owner again
    // first: a group keeps an owner.)
    let owner_again = put_member(&api, &conversation, &alice, json!({"role": "owner"})).await;
    assert_eq!(owner_again.status, 200, "{owner_again:?}");
    assert_eq!(level(&carol, &room, &puppet(&alice)).await, Some(100));
    let removed = delete(&api, &member_path(&conversation, &bob)).await;
    assert_eq!(removed.status, 204, "{removed:?}");
    assert_eq!(member(&carol, &room, &puppet(&bob)).await.0, json!("leave"));
    assert_eq!(level(&carol, &room, &puppet(&bob)).await, None);
    let refused = send(&api, &conversation, &bob, "let me back").await;
    assert_eq!(refused.status, 404, "{refused:?}");
    let again = delete(&api, &member_path(&conversation, &bob)).await;
    assert_eq!(again.status, 204, "removing again is no error");
    let read = api
        .get(&format!("/v1/conversations/{conversation}"), &admin)
        .await;
    let members: Vec<&str> = read.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["matrix_user_id"].as_str())
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn direct_public_and_private_rooms_as_a_matrix_user_sees_them() {
    let api = Api::new();
    let carol = MatrixUser::register(&unique("carol")).await;
    let alice = unique("alice");

    let direct = api
        .provision(&json!({"id": unique("dm"), "kind": "direct", "members": [
            {"user_id": alice, "role": "owner"}, {"matrix_user_id": carol.user_id, "role": "owner"}]}))
        .await;
    let room = direct["room_id"].as_str().unwrap().to_owned();
    let sync = carol.sync_all().await;
    let invite = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("carol is invited")
        .iter()
        .find(|event| {
            event["type"] == "m.room.member" && event["state_key"] == carol.user_id.as_str()
        })
        .cloned()
        .unwrap();
    assert_eq!(invite["content"]["is_direct"], true, "{invite}");
    carol.join(&room).await;
    assert_eq!(
        carol.state(&room, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );
    assert!(!carol.listed(&room).await);
    assert_eq!(level(&carol, &room, &carol.user_id).await, Some(100));
    let create = carol.state(&room, "m.room.create", "").await;
    assert!(
        create.get("additional_creators").is_none(),
        "no member is a creator: {create}"
    );

    let open = api
        .provision(&json!({"id": unique("open"), "kind": "event", "name": "Open day",
            "topic": "All welcome", "visibility": "public", "avatar_url": "mxc://localhost/open-day"}))
        .await;
    let room = open["room_id"].as_str().unwrap().to_owned();
    carol.join(&room).await; // no invite needed
    assert_eq!(
        carol.state(&room, "m.room.join_rules", "").await["join_rule"],
        "public"
    );
    assert!(carol.listed(&room).await, "in the room directory");
    assert_eq!(
        carol.state(&room, "m.room.name", "").await["name"],
        "Open day"
    );
    assert_eq!(
        carol.state(&room, "m.room.topic", "").await["topic"],
        "All welcome"
    );
    assert_eq!(
        carol.state(&room, "m.room.avatar", "").await["url"],
        "mxc://localhost/open-day"
    );

    let closed = api
        .provision(
            &json!({"id": unique("closed"), "kind": "event", "name": "Closed",
            "members": [{"matrix_user_id": carol.user_id}]}),
        )
        .await;
    let room = closed["room_id"].as_str().unwrap().to_owned();
    carol.join(&room).await;
    assert_eq!(
        carol.state(&room, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );
    assert!(!carol.listed(&room).await);

    let refused = api
        .json(
            "POST",
            "/v1/conversations",
            &token("svc", true),
            &json!({"id": unique("dm"), "kind": "direct", "members": [{"user_id": alice}]}),
        )
        .await;
    assert_eq!(refused.status, 400, "{refused:?}");
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn updates_and_archiving_as_a_matrix_user_sees_them() {
    let api = Api::new();
    let admin = token("svc", true);
    let carol = MatrixUser::register(&unique("carol")).await;
    let (alice, id) = (unique("alice"), unique("arch"));
    let created = api
        .provision(
            &json!({"id": id, "kind": "group", "name": "Before", "visibility": "public",
            "members": [{"user_id": alice, "role": "owner"}, {"matrix_user_id": carol.user_id}]}),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room).await;

    let patched = api
        .json(
            "PATCH",
            &format!("/v1/conversations/{id}"),
            &admin,
            &json!({"name": "After", "topic": "New topic", "avatar_url": "mxc://localhost/after"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["name"], "After");
    assert_eq!(carol.state(&room, "m.room.name", "").await["name"], "After");
    assert_eq!(
        carol.state(&room, "m.room.topic", "").await["topic"],
        "New topic"
    );
    assert_eq!(
        carol.state(&room, "m.room.avatar", "").await["url"],
        "mxc://localhost/after"
    );

    let archived = delete(&api, &format!("/v1/conversations/{id}")).await;
    assert_eq!(archived.status, 204, "{archived:?}");
    assert_eq!(
        member(&carol, &room, &puppet(&alice)).await.0,
        json!("leave")
    );
    assert_eq!(
        carol.state(&room, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );
    assert!(!carol.listed(&room).await, "out of the directory");

    let read = api.get(&format!("/v1/conversations/{id}"), &admin).await;
    assert_eq!(
        (read.body["status"].as_str(), read.body["room_id"].as_str()),
        (Some("archived"), Some(room.as_str()))
    );
    let sent = send(&api, &id, &alice, "hello?").await;
    assert_eq!(sent.status, 409, "{sent:?}");
    let again = api
        .json(
            "POST",
            "/v1/conversations",
            &admin,
            &json!({"id": id, "kind": "group"}),
        )
        .await;
    assert_eq!(again.status, 409, "{again:?}");
    let member_change = put_member(&api, &id, &alice, json!({"role": "member"})).await;
    assert_eq!(member_change.status, 409);
    let archived_again = delete(&api, &format!("/v1/conversations/{id}")).await;
    assert_eq!(archived_again.status, 204);
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_crash_between_creating_and_recording_the_room_leaves_one_room() {
    let api = Api::new();
    let carol = MatrixUser::register(&unique("carol")).await;
    let searcher = MatrixUser::register_admin(&unique("admin")).await;
    let (alice, id) = (unique("alice"), unique("crash"));
    let name = unique("Crash room");
    let conversation = ConversationId::parse(id.as_str()).unwrap();

    // The request that crashed: it claimed the id in the table, made the
    // room under the conversation's alias, and died before recording it.
    let sdk = sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), var("BRIDGE_TABLE"));
    let matrix = AppserviceClient::local(
        AppserviceClient::http_client().unwrap(),
        &MatrixConfig::from_env(stack_env()).unwrap(),
    )
    .unwrap();
    let namer = bridge::config::puppet_namer(stack_env()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let draft = Conversation {
        name: Some(name.clone()),
        ..Conversation::draft(conversation.clone(), ConversationKind::Group, now)
    };
    store
        .claim_conversation(&draft, now - time::Duration::seconds(1))
        .await
        .unwrap();
    let alias = namer.room_alias(&conversation);
    let spec = RoomSpec {
        kind: Some(ConversationKind::Group),
        name: Some(name.clone()),
        invite: vec![carol.user_id.as_str().try_into().unwrap()],
        alias: Some(alias.alias().to_owned()),
        ..RoomSpec::default()
    };
    let made = matrix.create_room(&spec).await.unwrap();

    // The caller tries again.
    let retried = api
        .provision(
            &json!({"id": id, "kind": "group", "name": name, "members": [
            {"user_id": alice, "role": "owner", "display_name": "Alice"},
            {"matrix_user_id": carol.user_id}]}),
        )
        .await;
    assert_eq!(retried["room_id"], made.as_str(), "{retried}");
    assert_eq!(
        matrix.resolve_alias(&alias).await.unwrap(),
        Some(made.clone())
    );
    assert_eq!(
        store.conversation_by_room(&made).await.unwrap(),
        Some(conversation)
    );
    let search = format!(
        "/_synapse/admin/v1/rooms?search_term={}",
        percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
    );
    assert_eq!(
        searcher.get(&search).await["total_rooms"],
        1,
        "one room on the homeserver"
    );

    // It was brought in line with the request: alice is in, as owner.
    carol.join(made.as_str()).await;
    assert_eq!(
        member(&carol, made.as_str(), &puppet(&alice)).await,
        (json!("join"), json!("Alice"))
    );
    assert_eq!(
        level(&carol, made.as_str(), &puppet(&alice)).await,
        Some(100)
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn avatars_are_fetched_and_uploaded_once() {
    let server = images::ImageServer::start().await;
    // The provisioning service in process, as bridgectl builds it, allowed
    // to fetch from loopback (a test server), which deployments never are.
    let mut env: HashMap<String, String> = stack_env().clone();
    let strict = provision::from_ports(&Adapters::with_env(env.clone()), Metrics::off("provision"))
        .await
        .unwrap();
    env.insert("BRIDGE_FETCH_ALLOW_LOOPBACK".into(), "1".into());
    let service = provision::from_ports(&Adapters::with_env(env), Metrics::off("provision"))
        .await
        .unwrap();
    let user = AppUserId::parse(unique("ava")).unwrap();
    let profile = || PutUser {
        display_name: Some("Ava".into()),
        avatar_url: Some(server.url("/a.png")),
    };
    let refused = strict.put_user(user.clone(), profile()).await.unwrap_err();
    assert!(
        refused.to_string().contains("not a public one"),
        "{refused}"
    );
    assert_eq!(server.hits(), 0);

    let puppet = service.put_user(user.clone(), profile()).await.unwrap();
    let avatar = puppet.avatar_url.clone().unwrap();
    assert!(avatar.starts_with("mxc://localhost/"), "{avatar}");
    let seen: Value = reqwest::get(format!(
        "{}/_matrix/client/v3/profile/{}",
        var("MATRIX_HOMESERVER_URL"),
        puppet.matrix_user_id
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        (seen["displayname"].as_str(), seen["avatar_url"].as_str()),
        (Some("Ava"), Some(avatar.as_str()))
    );
    let again = service.put_user(user, profile()).await.unwrap();
    assert_eq!(again.avatar_url, Some(avatar));
    assert_eq!(server.hits(), 1, "fetched once");
}
