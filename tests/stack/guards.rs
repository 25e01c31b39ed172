//! Bad input and bad callers get a clear 4xx, through the real front door.

use serde_json::json;

use crate::client::{Api, token, unique};

async fn conversation_of(api: &Api, member: &str) -> String {
    let id = unique("guarded");
    api.provision(
        &json!({"id": id, "kind": "group", "members": [{"user_id": member, "role": "owner"}]}),
    )
    .await;
    id
}

fn code(reply: &crate::client::Reply) -> &str {
    reply.body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn callers_see_only_their_conversations() {
    let api = Api::new();
    let member = unique("erin");
    let id = conversation_of(&api, &member).await;
    let stranger = token(&unique("mallory"), false);
    let messages = format!("/v1/conversations/{id}/messages");

    for reply in [
        api.get(&format!("/v1/conversations/{id}"), &stranger).await,
        api.get(&messages, &stranger).await,
        api.json("POST", &messages, &stranger, &json!({"body": "let me in"}))
            .await,
        api.get(
            "/v1/conversations/no-such-conversation",
            &token(&member, false),
        )
        .await,
    ] {
        assert_eq!(
            (reply.status, code(&reply)),
            (404, "not_found"),
            "{reply:?}"
        );
        assert!(reply.body["request_id"].is_string());
    }
    let as_other = api
        .json(
            "POST",
            &messages,
            &token(&member, false),
            &json!({"body": "x", "as_user": "someone"}),
        )
        .await;
    assert_eq!((as_other.status, code(&as_other)), (403, "forbidden"));
    let provision = api
        .json(
            "POST",
            "/v1/conversations",
            &token(&member, false),
            &json!({"id": unique("x"), "kind": "group"}),
        )
        .await;
    // The service routes' scope is checked by the authorizer, as in AWS:
    // API Gateway's own 403 body.
    assert_eq!(
        (provision.status, provision.body["message"].as_str()),
        (403, Some("Forbidden"))
    );
    let admin_as_stranger = api
        .json(
            "POST",
            &messages,
            &token("svc", true),
            &json!({"body": "x", "as_user": unique("mallory")}),
        )
        .await;
    assert_eq!(
        (admin_as_stranger.status, code(&admin_as_stranger)),
        (403, "forbidden")
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn missing_or_bad_tokens_are_unauthorized() {
    let api = Api::new();
    let path = "/v1/conversations/anything/messages";
    let none = api.call("GET", path, None, &[], None).await;
    assert_eq!(
        (none.status, &none.body),
        (401, &json!({"message": "Unauthorized"}))
    );
    let forged = api
        .call(
            "GET",
            path,
            Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"),
            &[],
            None,
        )
        .await;
    assert_eq!(forged.status, 401);
    let expired = crate::client::tokens()
        .mint("erin", false, time::Duration::minutes(-10))
        .unwrap();
    assert_eq!(
        api.call("GET", path, Some(&expired), &[], None)
            .await
            .status,
        401
    );
    let oversized = api
        .call(
            "POST",
            path,
            Some(&token("erin", false)),
            &[("content-type", "application/json")],
            Some(vec![b' '; 7 << 20]),
        )
        .await;
    assert_eq!(oversized.status, 413, "beyond API Gateway's payload limit");
    let unknown = api
        .call(
            "GET",
            "/v1/nothing-here",
            Some(&token("erin", false)),
            &[],
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn malformed_requests_are_explained() {
    let api = Api::new();
    let member = unique("frank");
    let id = conversation_of(&api, &member).await;
    let path = format!("/v1/conversations/{id}/messages");
    let user = token(&member, false);

    let broken = api
        .call(
            "POST",
            &path,
            Some(&user),
            &[("content-type", "application/json")],
            Some(b"{\"body\": ".to_vec()),
        )
        .await;
    assert_eq!(
        (broken.status, code(&broken)),
        (400, "invalid_request"),
        "{broken:?}"
    );
    assert!(
        broken.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON body")
    );

    let missing = api
        .json("POST", &path, &user, &json!({"text": "wrong field"}))
        .await;
    assert_eq!((missing.status, code(&missing)), (400, "invalid_request"));
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `text`"),
        "{missing:?}"
    );

    let empty = api
        .json("POST", &path, &user, &json!({"body": "   "}))
        .await;
    assert_eq!((empty.status, code(&empty)), (400, "invalid_request"));
    let format = api
        .json(
            "POST",
            &path,
            &user,
            &json!({"body": "x", "format": "html"}),
        )
        .await;
    assert_eq!((format.status, code(&format)), (400, "invalid_request"));

    let text = api
        .call(
            "POST",
            &path,
            Some(&user),
            &[("content-type", "text/plain")],
            Some(b"hello".to_vec()),
        )
        .await;
    assert_eq!((text.status, code(&text)), (415, "unsupported_media_type"));

    let huge = api
        .json(
            "POST",
            &path,
            &user,
            &json!({"body": "x".repeat(40 * 1024)}),
        )
        .await;
    assert_eq!(
        (huge.status, code(&huge)),
        (413, "payload_too_large"),
        "{huge:?}"
    );
    let huge_html = api
        .json(
            "POST",
            &path,
            &user,
            &json!({"body": "**a** ".repeat(5000), "format": "markdown"}),
        )
        .await;
    assert_eq!(
        (huge_html.status, code(&huge_html)),
        (413, "payload_too_large"),
        "{huge_html:?}"
    );

    let bad_key = api
        .json_with(
            "POST",
            &path,
            &user,
            &[("idempotency-key", &"k".repeat(129))],
            &json!({"body": "x"}),
        )
        .await;
    assert_eq!((bad_key.status, code(&bad_key)), (400, "invalid_request"));
    let first = api
        .json_with(
            "POST",
            &path,
            &user,
            &[("idempotency-key", "same")],
            &json!({"body": "one"}),
        )
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    let reused = api
        .json_with(
            "POST",
            &path,
            &user,
            &[("idempotency-key", "same")],
            &json!({"body": "two"}),
        )
        .await;
    assert_eq!((reused.status, code(&reused)), (409, "conflict"));

    let bad_limit = api.get(&format!("{path}?limit=0"), &user).await;
    assert_eq!(
        (bad_limit.status, code(&bad_limit)),
        (400, "invalid_request")
    );
    let bad_cursor = api.get(&format!("{path}?before=yesterday"), &user).await;
    assert_eq!(
        (bad_cursor.status, code(&bad_cursor)),
        (400, "invalid_request")
    );
    let bad_id = api.get(&format!("{path}/not-a-uuid"), &user).await;
    assert_eq!((bad_id.status, code(&bad_id)), (400, "invalid_request"));
    let no_message = api
        .get(&format!("{path}/{}", uuid::Uuid::now_v7()), &user)
        .await;
    assert_eq!((no_message.status, code(&no_message)), (404, "not_found"));
    let bad_reply = api
        .json(
            "POST",
            &path,
            &user,
            &json!({"body": "re", "reply_to": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(
        (bad_reply.status, code(&bad_reply)),
        (400, "invalid_request")
    );

    let admin = token("svc", true);
    let duplicate = api
        .json("POST", "/v1/conversations", &admin, &json!({"id": unique("dup"), "kind": "group",
            "members": [{"user_id": "gina", "role": "owner"}, {"user_id": "gina", "role": "member"}]}))
        .await;
    assert_eq!(
        (duplicate.status, code(&duplicate)),
        (400, "invalid_request")
    );
    let both_ids = api
        .json(
            "POST",
            "/v1/conversations",
            &admin,
            &json!({"id": unique("both"), "kind": "group",
            "members": [{"user_id": "gina", "matrix_user_id": "@gina:localhost"}]}),
        )
        .await;
    assert_eq!((both_ids.status, code(&both_ids)), (400, "invalid_request"));
    let bad_id = api
        .json(
            "POST",
            "/v1/conversations",
            &admin,
            &json!({"id": "no spaces allowed", "kind": "group"}),
        )
        .await;
    assert_eq!((bad_id.status, code(&bad_id)), (400, "invalid_request"));
    let bad_kind = api
        .json(
            "POST",
            "/v1/conversations",
            &admin,
            &json!({"id": unique("k"), "kind": "channel"}),
        )
        .await;
    assert_eq!((bad_kind.status, code(&bad_kind)), (400, "invalid_request"));
    let bad_user = api
        .json("PUT", "/v1/users/not%20valid", &admin, &json!({}))
        .await;
    assert_eq!((bad_user.status, code(&bad_user)), (400, "invalid_request"));
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn secrets_never_reach_the_logs() {
    // Some traffic first, failures included, so there is something to log.
    let api = Api::new();
    let member = unique("ivan");
    let id = conversation_of(&api, &member).await;
    api.json(
        "POST",
        &format!("/v1/conversations/{id}/messages"),
        &token(&member, false),
        &json!({"body": "hi"}),
    )
    .await;
    api.call(
        "GET",
        "/v1/conversations/x/messages",
        Some("not-a-token"),
        &[],
        None,
    )
    .await;

    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/logs");
    let secrets = [
        "MATRIX_AS_TOKEN",
        "MATRIX_HS_TOKEN",
        "BRIDGE_DEV_JWT_SECRET",
        "MATRIX_REGISTRATION_SHARED_SECRET",
    ];
    let mut read = 0;
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        read += 1;
        for name in secrets {
            assert!(
                !text.contains(&crate::support::var(name)),
                "{name} appears in {}",
                path.display()
            );
        }
        assert!(
            !text.contains(&token(&member, false)[..40]),
            "a JWT appears in {}",
            path.display()
        );
    }
    assert!(read >= 3, "expected the stack's logs in {}", logs.display());
}
