//! The bridge end to end: provision, send, and what a plain Matrix user and
//! the history API see.

use serde_json::{Value, json};

use crate::client::{Api, MatrixUser, token, unique};
use crate::support::var;

const MESSAGE_ID_KEY: &str = bridge::matrix::MESSAGE_ID_KEY;

pub fn puppet(user: &str) -> String {
    let namer =
        bridge::ids::PuppetNamer::new(var("BRIDGE_PUPPET_PREFIX"), ruma::server_name!("localhost"));
    namer
        .user_id(&bridge::ids::AppUserId::parse(user).unwrap())
        .to_string()
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn messages_reach_a_plain_matrix_user_once_from_the_right_puppet() {
    let api = Api::new();
    let (alice, bob) = (unique("Alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let conversation = unique("grp");

    let created = api
        .provision(&json!({
            "id": conversation, "kind": "group", "name": "Hiking club", "topic": "Weekend hikes",
            "members": [
                {"user_id": alice, "role": "owner", "display_name": "Alice Liddell"},
                {"user_id": bob, "role": "moderator", "display_name": "Bob Builder"},
                {"matrix_user_id": carol.user_id, "role": "member"},
            ],
        }))
        .await;
    let room_id = created["room_id"].as_str().expect("a room id").to_owned();
    assert_eq!(created["members"].as_array().unwrap().len(), 3);
    assert_eq!(created["members"][0]["matrix_user_id"], puppet(&alice));

    // The same request again: the same room, not a second one.
    let again = api
        .json(
            "POST",
            "/v1/conversations",
            &token("svc", true),
            &json!({"id": conversation, "kind": "group", "members": []}),
        )
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["room_id"], room_id.as_str());
    let other_kind = api
        .json(
            "POST",
            "/v1/conversations",
            &token("svc", true),
            &json!({"id": conversation, "kind": "event"}),
        )
        .await;
    assert_eq!(
        (other_kind.status, other_kind.body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    carol.join(&room_id).await;
    let levels = carol.state(&room_id, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][puppet(&alice)], 100, "{levels}");
    assert_eq!(levels["users"][puppet(&bob)], 50, "{levels}");
    let alice_member = carol
        .state(&room_id, "m.room.member", &puppet(&alice))
        .await;
    assert_eq!(
        (
            alice_member["membership"].as_str(),
            alice_member["displayname"].as_str()
        ),
        (Some("join"), Some("Alice Liddell"))
    );
    let room_name = carol.state(&room_id, "m.room.name", "").await;
    assert_eq!(room_name["name"], "Hiking club");

    let path = format!("/v1/conversations/{conversation}/messages");
    let plain = json!({"body": "Meet at the car park at 9"});
    let key = [("idempotency-key", "plain-1")];
    let first = api
        .json_with("POST", &path, &token(&alice, false), &key, &plain)
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["status"], "sent");
    let retried = api
        .json_with("POST", &path, &token(&alice, false), &key, &plain)
        .await;
    assert_eq!(retried.status, 201, "{retried:?}");
    assert_eq!(
        (&retried.body["id"], &retried.body["event_id"]),
        (&first.body["id"], &first.body["event_id"])
    );

    let markdown = json!({"body": "**Bring** _water_ and `snacks`", "format": "markdown"});
    let second = api
        .json("POST", &path, &token(&bob, false), &markdown)
        .await;
    assert_eq!(second.status, 201, "{second:?}");
    assert_eq!(
        second.body["html"],
        "<p><strong>Bring</strong> <em>water</em> and <code>snacks</code></p>"
    );

    // What Carol sees in the room: each message once, from the right puppet.
    let events = carol.messages(&room_id).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let (seen_plain, seen_markdown) = (&events[0], &events[1]);
    assert_eq!(seen_plain["sender"], puppet(&alice));
    assert_eq!(seen_plain["event_id"], first.body["event_id"]);
    assert_eq!(seen_plain["content"]["msgtype"], "m.text");
    assert_eq!(seen_plain["content"]["body"], "Meet at the car park at 9");
    assert!(seen_plain["content"].get("formatted_body").is_none());
    assert_eq!(seen_plain["content"][MESSAGE_ID_KEY], first.body["id"]);
    assert_eq!(seen_markdown["sender"], puppet(&bob));
    assert_eq!(
        seen_markdown["content"]["body"],
        "**Bring** _water_ and `snacks`"
    );
    assert_eq!(seen_markdown["content"]["format"], "org.matrix.custom.html");
    assert_eq!(
        seen_markdown["content"]["formatted_body"],
        second.body["html"]
    );

    // History: newest first, both sent, with their events.
    let history = api
        .get(&format!("{path}?limit=10"), &token(&alice, false))
        .await;
    assert_eq!(history.status, 200, "{history:?}");
    let listed: Vec<&Value> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (&listed[0]["id"], &listed[1]["id"]),
        (&second.body["id"], &first.body["id"])
    );
    assert!(
        listed
            .iter()
            .all(|m| m["status"] == "sent" && m["origin"] == "app")
    );
    assert_eq!(listed[1]["event_id"], first.body["event_id"]);
    assert_eq!(listed[1]["sender"]["display_name"], "Alice Liddell");
    assert_eq!(listed[0]["sender"]["user_id"], bob.as_str());
    assert_eq!(history.body["next"], Value::Null);

    let paged = api
        .get(&format!("{path}?limit=1"), &token(&bob, false))
        .await;
    assert_eq!(paged.body["messages"][0]["id"], second.body["id"]);
    let cursor = paged.body["next"].as_str().expect("a next cursor");
    let older = api
        .get(
            &format!("{path}?limit=1&before={cursor}"),
            &token(&bob, false),
        )
        .await;
    assert_eq!(older.body["messages"][0]["id"], first.body["id"]);
    assert_eq!(older.body["next"], Value::Null);

    let one = api
        .get(
            &format!("{path}/{}", first.body["id"].as_str().unwrap()),
            &token(&bob, false),
        )
        .await;
    assert_eq!(
        (one.status, &one.body["body"]),
        (200, &json!("Meet at the car park at 9"))
    );

    let read = api
        .get(
            &format!("/v1/conversations/{conversation}"),
            &token(&alice, false),
        )
        .await;
    assert_eq!(
        (read.status, read.body["room_id"].as_str()),
        (200, Some(room_id.as_str()))
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn racing_provision_requests_make_one_room() {
    let api = Api::new();
    let conversation = unique("race");
    let body = json!({"id": conversation, "kind": "group", "members": [{"user_id": unique("racer"), "role": "owner"}]});
    let admin = token("svc", true);
    let (a, b) = tokio::join!(
        api.json("POST", "/v1/conversations", &admin, &body),
        api.json("POST", "/v1/conversations", &admin, &body),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201], "{a:?} {b:?}");
    assert_eq!(a.body["room_id"], b.body["room_id"]);
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn users_get_puppets_with_profiles() {
    let api = Api::new();
    let user = unique("Dana");
    let admin = token("svc", true);
    let put = || async {
        api.json(
            "PUT",
            &format!("/v1/users/{user}"),
            &admin,
            &json!({"display_name": "Dana Scully"}),
        )
        .await
    };
    let reply = put().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["matrix_user_id"], puppet(&user));
    assert_eq!(reply.body["display_name"], "Dana Scully");
    let again = put().await;
    assert_eq!((again.status, &again.body), (200, &reply.body));

    let profile: Value = reqwest::get(format!(
        "{}/_matrix/client/v3/profile/{}",
        var("MATRIX_HOMESERVER_URL"),
        puppet(&user)
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(profile["displayname"], "Dana Scully", "{profile}");
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn conversations_nest_in_spaces_that_matrix_clients_see() {
    let api = Api::new();
    let carol = MatrixUser::register(&unique("carol")).await;
    let (space_id, child_id) = (unique("space"), unique("hike"));
    let space = api
        .provision(&json!({"id": space_id, "kind": "space", "name": "Hikers",
            "members": [{"matrix_user_id": carol.user_id, "role": "member"}]}))
        .await;
    let child = api
        .provision(
            &json!({"id": child_id, "kind": "event", "name": "Sunday hike", "parent_id": space_id,
            "members": [{"matrix_user_id": carol.user_id, "role": "member"}]}),
        )
        .await;
    assert_eq!(child["parent_id"], space_id.as_str());
    let (space_room, child_room) = (
        space["room_id"].as_str().unwrap(),
        child["room_id"].as_str().unwrap(),
    );

    carol.join(space_room).await;
    let create = carol.state(space_room, "m.room.create", "").await;
    assert_eq!(create["type"], "m.space");
    let listed = carol.state(space_room, "m.space.child", child_room).await;
    assert_eq!(listed["via"], json!(["localhost"]));
    carol.join(child_room).await;
    let parent = carol.state(child_room, "m.space.parent", space_room).await;
    assert_eq!(
        (&parent["via"], &parent["canonical"]),
        (&json!(["localhost"]), &json!(true))
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_puppet_that_left_its_room_is_invited_back_on_its_next_message() {
    let api = Api::new();
    let (alice, conversation) = (unique("alice"), unique("left"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let created = api
        .provision(&json!({"id": conversation, "kind": "group", "members": [
            {"user_id": alice, "role": "owner"}, {"matrix_user_id": carol.user_id, "role": "member"}]}))
        .await;
    let room_id = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room_id).await;

    // Alice's puppet leaves on the Matrix side; the room is invite-only.
    let leave = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/client/v3/rooms/{}/leave?user_id={}",
            var("MATRIX_HOMESERVER_URL"),
            percent_encoding::utf8_percent_encode(&room_id, percent_encoding::NON_ALPHANUMERIC),
            percent_encoding::utf8_percent_encode(
                &puppet(&alice),
                percent_encoding::NON_ALPHANUMERIC
            ),
        ))
        .bearer_auth(var("MATRIX_AS_TOKEN"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(
        leave.status().is_success(),
        "{}",
        leave.text().await.unwrap()
    );
    assert_eq!(
        carol
            .state(&room_id, "m.room.member", &puppet(&alice))
            .await["membership"],
        "leave"
    );

    let path = format!("/v1/conversations/{conversation}/messages");
    let sent = api
        .json(
            "POST",
            &path,
            &token(&alice, false),
            &json!({"body": "I am back"}),
        )
        .await;
    assert_eq!(
        (sent.status, sent.body["status"].as_str()),
        (201, Some("sent")),
        "{sent:?}"
    );
    assert_eq!(
        carol
            .state(&room_id, "m.room.member", &puppet(&alice))
            .await["membership"],
        "join"
    );
    let events = carol.messages(&room_id).await;
    assert_eq!(events.last().unwrap()["content"]["body"], "I am back");
    assert_eq!(events.last().unwrap()["sender"], puppet(&alice));
}
