//! Threads, mentions, reactions and notices through the front door, as a
//! plain Matrix user in the room sees them, and back.

use serde_json::{Value, json};

use crate::client::{Api, MatrixUser, token, unique};

/// A conversation with alice (owner), bob (member) and carol, a plain
/// Matrix user who joined; returns its id and room.
async fn conversation(api: &Api, alice: &str, bob: &str, carol: &MatrixUser) -> (String, String) {
    let id = unique("thr");
    let created = api
        .provision(&json!({
            "id": id, "kind": "event",
            "members": [
                {"user_id": alice, "role": "owner", "display_name": "Alice"},
                {"user_id": bob, "role": "member", "display_name": "Bob"},
                {"matrix_user_id": carol.user_id},
            ],
        }))
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    carol.join(&room).await;
    (id, room)
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_notice_reaches_a_plain_matrix_user_as_an_m_notice_from_the_bot() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let (id, room) = conversation(&api, &alice, &bob, &carol).await;
    let path = format!("/v1/conversations/{id}/messages");
    let notice = json!({"body": "The event starts in one hour", "msgtype": "notice"});
    let service = token("svc", true);
    let send_notice = || {
        api.json_with(
            "POST",
            &path,
            &service,
            &[("idempotency-key", "notice-1")],
            &notice,
        )
    };
    let sent = send_notice().await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let again = send_notice().await;
    assert_eq!(
        again.body["id"], sent.body["id"],
        "the replay is the same message"
    );
    let refused = api
        .json("POST", &path, &token(&alice, false), &notice)
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");

    let creator = carol.events(&room, "m.room.create").await[0]["sender"].clone();
    let notices: Vec<Value> = carol
        .messages(&room)
        .await
        .into_iter()
        .filter(|event| event["content"]["msgtype"] == "m.notice")
        .collect();
    assert_eq!(notices.len(), 1, "one notice for two requests: {notices:?}");
    assert_eq!(notices[0]["sender"], creator, "from the bridge's bot");
    assert_eq!(
        notices[0]["content"]["body"],
        "The event starts in one hour"
    );
    assert_eq!(notices[0]["event_id"], sent.body["event_id"]);

    let message = api
        .get(
            &format!("{path}/{}", sent.body["id"].as_str().unwrap()),
            &token(&alice, false),
        )
        .await;
    assert_eq!(message.body["msgtype"], "notice");
    assert_eq!(message.body["sender"]["matrix_user_id"], creator);
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn threads_reach_a_plain_matrix_user_and_come_back_from_it() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let (id, room) = conversation(&api, &alice, &bob, &carol).await;
    let path = format!("/v1/conversations/{id}/messages");
    let send = |user: String, body: Value| {
        let (api, path) = (&api, &path);
        async move { api.json("POST", path, &token(&user, false), &body).await }
    };
    let root = send(alice.clone(), json!({"body": "Who brings food?"})).await;
    assert_eq!(root.status, 201, "{root:?}");
    let root_id = root.body["id"].as_str().unwrap().to_owned();
    let root_event = root.body["event_id"].as_str().unwrap().to_owned();
    let reply = send(bob.clone(), json!({"body": "I do", "thread_id": root_id})).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let nested = send(
        bob.clone(),
        json!({"body": "nested", "thread_id": reply.body["id"]}),
    )
    .await;
    assert_eq!(nested.status, 400, "{nested:?}");

    // Carol's client sees the thread relation with the reply fallback.
    let seen = carol
        .event(&room, reply.body["event_id"].as_str().unwrap())
        .await;
    let relation = &seen["content"]["m.relates_to"];
    assert_eq!(relation["rel_type"], "m.thread", "{seen}");
    assert_eq!(relation["event_id"], root_event.as_str());
    assert_eq!(relation["is_falling_back"], true);
    assert_eq!(relation["m.in_reply_to"]["event_id"], root_event.as_str());
    // The server counts it in the root's thread.
    let root_seen = carol.event(&room, &root_event).await;
    assert_eq!(
        root_seen["unsigned"]["m.relations"]["m.thread"]["count"], 1,
        "{root_seen}"
    );

    // Carol answers in the thread from her own client.
    let answer = carol
        .send(
            &room,
            json!({
                "msgtype": "m.text", "body": "I bring drinks",
                "m.relates_to": {
                    "rel_type": "m.thread", "event_id": root_event,
                    "is_falling_back": true,
                    "m.in_reply_to": {"event_id": reply.body["event_id"]},
                },
            }),
        )
        .await;
    // In history first (the webhook stores before it publishes).
    let started = std::time::Instant::now();
    let thread = loop {
        let thread = api
            .get(
                &format!("{path}?thread_id={root_id}"),
                &token(&alice, false),
            )
            .await;
        assert_eq!(thread.status, 200, "{thread:?}");
        if thread.body["messages"].as_array().unwrap().len() == 2 {
            break thread;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "carol's thread message not in history: {thread:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let bodies: Vec<&Value> = thread.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| &message["body"])
        .collect();
    assert_eq!(bodies, [&json!("I bring drinks"), &json!("I do")]);
    assert_eq!(thread.body["messages"][0]["origin"], "matrix");
    assert_eq!(thread.body["messages"][0]["event_id"], answer.as_str());
    assert_eq!(thread.body["messages"][0]["thread_id"], root_id.as_str());
    // On the inbound queue it is `message.created` with `thread_id`
    // (shared::handlers::transactions): not read here, so this test is no
    // further reader of the shared queue beside the webhook tests.
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn the_round_trips_of_a_warm_notice_and_thread_message_counted_on_the_wire() {
    use crate::round_trips::{Counted, send_event_with as send_event};

    let alice = unique("alice");
    let conversation = unique("trips");
    let ports = Counted::new().await;
    ports.provision(json!({"id": conversation, "kind": "group", "members": [{"user_id": alice, "role": "owner"}]})).await;
    let service = ports.send_service();
    let count = || ports.count();
    let root = service
        .handle(send_event(
            &conversation,
            &alice,
            false,
            &json!({"body": "root, cold"}),
        ))
        .await;
    assert_eq!(root.status(), 201, "{:?}", root.body());
    let root: Value = serde_json::from_slice(root.body()).unwrap();

    let before = count();
    let notice = json!({"body": "The event starts in one hour", "msgtype": "notice"});
    let sent = service
        .handle(send_event(&conversation, "svc", true, &notice))
        .await;
    assert_eq!(sent.status(), 201, "{:?}", sent.body());
    let after_notice = count();
    assert_eq!(
        (after_notice.0 - before.0, after_notice.1 - before.1),
        (2, 1),
        "a warm notice: insert + mark sent, one Matrix request, as any send"
    );

    let in_thread = json!({"body": "in the thread", "thread_id": root["id"]});
    let sent = service
        .handle(send_event(&conversation, &alice, false, &in_thread))
        .await;
    assert_eq!(sent.status(), 201, "{:?}", sent.body());
    let after_first = count();
    assert_eq!(
        (
            after_first.0 - after_notice.0,
            after_first.1 - after_notice.1
        ),
        (4, 1),
        "the first thread message: the root, the (empty) thread, insert, mark sent"
    );
    let sent = service
        .handle(send_event(&conversation, &alice, false, &in_thread))
        .await;
    assert_eq!(sent.status(), 201, "{:?}", sent.body());
    let after_second = count();
    assert_eq!(
        (
            after_second.0 - after_first.0,
            after_second.1 - after_first.1
        ),
        (5, 1),
        "a later one also reads the thread's latest messages"
    );
}

/// Polls `path` as `user` until `done` holds of the answer (90 s at most).
async fn poll(api: &Api, path: &str, user: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let reply = api.get(path, &token(user, false)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        if done(&reply.body) {
            return reply.body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "{path} never showed what was expected: {reply:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn mentions_reach_a_plain_matrix_user_as_m_mentions_with_pills_and_come_back() {
    let api = Api::new();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let carol = MatrixUser::register(&unique("carol")).await;
    let (id, room) = conversation(&api, &alice, &bob, &carol).await;
    let path = format!("/v1/conversations/{id}/messages");
    let sent = api
        .json(
            "POST",
            &path,
            &token(&alice, false),
            &json!({"body": "**Ready**, @Bob?", "format": "markdown",
                    "mentions": {"user_ids": [bob]}}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let by_bob = api
        .json(
            "POST",
            &path,
            &token(&bob, false),
            &json!({"body": "everyone!", "mentions": {"room": true}}),
        )
        .await;
    assert_eq!(by_bob.status, 403, "a member's @room: {by_bob:?}");

    // Carol's client sees whom it mentions, and Bob's name as a pill.
    let seen = carol
        .event(&room, sent.body["event_id"].as_str().unwrap())
        .await;
    let bob_puppet = api
        .get(&format!("/v1/conversations/{id}"), &token("svc", true))
        .await
        .body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["user_id"] == bob.as_str())
        .unwrap()["matrix_user_id"]
        .clone();
    assert_eq!(
        seen["content"]["m.mentions"],
        json!({"user_ids": [bob_puppet]}),
        "{seen}"
    );
    let pill = format!(
        "<a href=\"https://matrix.to/#/{}\">Bob</a>",
        bob_puppet.as_str().unwrap()
    );
    assert_eq!(
        seen["content"]["formatted_body"],
        format!("<p><strong>Ready</strong>, {pill}?</p>"),
        "{seen}"
    );

    // Carol mentions alice and herself: alice by her application id.
    let alice_puppet = sent.body["sender"]["matrix_user_id"].clone();
    let answer = carol
        .send(
            &room,
            json!({"msgtype": "m.text", "body": "Alice, me too",
                   "m.mentions": {"user_ids": [alice_puppet, carol.user_id]}}),
        )
        .await;
    let history = poll(&api, &path, &alice, |page| {
        page["messages"][0]["event_id"] == answer.as_str()
    })
    .await;
    let mut mentioned = history["messages"][0]["mentions"]["user_ids"]
        .as_array()
        .unwrap()
        .clone();
    mentioned.sort_by_key(|id| id.as_str().unwrap().to_owned());
    let mut expected = vec![json!(carol.user_id), json!(alice)];
    expected.sort_by_key(|id| id.as_str().unwrap().to_owned());
    assert_eq!(mentioned, expected);
    assert_eq!(history["messages"][0]["mentions"]["room"], false);
}
