//! The running stack's answers against `docs/openapi.yaml`: every route of
//! the route table is called through the front door, its successes and its
//! usual refusals, and each answer's status must be documented for the
//! route and its body must match the documented schema (the request bodies
//! sent must match theirs too). A field the API adds, renames or drops
//! without the file fails here.

use std::collections::BTreeSet;

use bridge::api::routes::ROUTES;
use serde_json::{Value, json};

use crate::client::{Api, Reply, token, unique};
use crate::matrix_ops::png;
use crate::openapi_spec::Spec;
use crate::support::var;

/// Calls the API and checks the answer against the file, recording which
/// routes were checked.
struct Checked {
    api: Api,
    spec: Spec,
    seen: BTreeSet<String>,
}

impl Checked {
    fn new() -> Self {
        Self {
            api: Api::new(),
            spec: Spec::load(),
            seen: BTreeSet::new(),
        }
    }

    /// `method path` (the concrete path), documented as `template`, with a
    /// JSON body (checked against the request schema when `valid`).
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
        expected: u16,
    ) -> Value {
        let mut all = headers.to_vec();
        if let Some(body) = body {
            all.push(("content-type", "application/json"));
            if expected < 300
                && let Some(schema) = self.spec.request_schema(method, template)
            {
                self.spec
                    .check(schema, body)
                    .unwrap_or_else(|why| panic!("request of {method} {template}: {why}"));
            }
        }
        let bytes = body.map(|body| serde_json::to_vec(body).unwrap());
        let reply = self.api.call(method, path, auth, &all, bytes).await;
        self.check(method, template, expected, &reply);
        reply.body
    }

    async fn json(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: &str,
        body: &Value,
        expected: u16,
    ) -> Value {
        self.call(
            method,
            template,
            path,
            Some(token),
            &[],
            Some(body),
            expected,
        )
        .await
    }

    async fn get(&mut self, template: &str, path: &str, token: &str, expected: u16) -> Value {
        self.call("GET", template, path, Some(token), &[], None, expected)
            .await
    }

    /// The answer is the one expected, documented, and shaped as documented.
    fn check(&mut self, method: &str, template: &str, expected: u16, reply: &Reply) {
        assert_eq!(reply.status, expected, "{method} {template}: {reply:?}");
        let schema = self
            .spec
            .response_schema(method, template, reply.status)
            .unwrap_or_else(|why| panic!("{why} (the stack answered {reply:?})"));
        match schema {
            Some(schema) => self.spec.check(schema, &reply.body).unwrap_or_else(|why| {
                panic!(
                    "{method} {template} answered {} with a body the file does not describe: \
                     {why}\nbody: {}",
                    reply.status, reply.body
                )
            }),
            None => assert_eq!(
                reply.body,
                Value::Null,
                "{method} {template} {}: documented without a body",
                reply.status
            ),
        }
        self.seen.insert(format!("{method} {template}"));
    }
}

const CONVERSATION: &str = "/v1/conversations/{id}";
const MESSAGES: &str = "/v1/conversations/{id}/messages";
const MESSAGE: &str = "/v1/conversations/{id}/messages/{message_id}";
const MEMBER: &str = "/v1/conversations/{id}/members/{user_id}";

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn the_api_answers_as_the_openapi_file_says() {
    let mut api = Checked::new();
    let service = token("svc", true);
    let (alice, bob, stranger, id) = (
        unique("alice"),
        unique("bob"),
        unique("stranger"),
        unique("grp"),
    );
    let (alice_token, bob_token) = (token(&alice, false), token(&bob, false));

    // Users and conversations.
    let user = "/v1/users/{user_id}";
    api.json(
        "PUT",
        user,
        &format!("/v1/users/{alice}"),
        &service,
        &json!({"display_name": "Alice"}),
        200,
    )
    .await;
    api.json(
        "PUT",
        user,
        &format!("/v1/users/{bob}"),
        &alice_token,
        &json!({}),
        403,
    )
    .await;
    api.json(
        "PUT",
        user,
        "/v1/users/not%20valid",
        &service,
        &json!({}),
        400,
    )
    .await;
    let create = json!({
        "id": id, "kind": "group", "name": "OpenAPI", "topic": "checked",
        "members": [
            {"user_id": alice, "role": "owner", "display_name": "Alice"},
            {"user_id": bob},
        ],
    });
    let conversations = "/v1/conversations";
    api.json("POST", conversations, conversations, &service, &create, 201)
        .await;
    api.json("POST", conversations, conversations, &service, &create, 200)
        .await;
    let other_kind = json!({"id": id, "kind": "event"});
    api.json(
        "POST",
        conversations,
        conversations,
        &service,
        &other_kind,
        409,
    )
    .await;
    api.json(
        "POST",
        conversations,
        conversations,
        &service,
        &json!({"id": id, "kind": "group", "colour": "red"}),
        400,
    )
    .await;
    api.call(
        "POST",
        conversations,
        conversations,
        None,
        &[],
        Some(&create),
        401,
    )
    .await;
    let at = format!("/v1/conversations/{id}");
    api.get(CONVERSATION, &at, &alice_token, 200).await;
    api.get(CONVERSATION, &at, &token(&stranger, false), 404)
        .await;
    api.get(CONVERSATION, &at, &service, 200).await;

    // Messages.
    let messages = format!("{at}/messages");
    let key = [("idempotency-key", "openapi-1")];
    let plain = json!({"body": "hello"});
    let sent = api
        .call(
            "POST",
            MESSAGES,
            &messages,
            Some(&alice_token),
            &key,
            Some(&plain),
            201,
        )
        .await;
    api.call(
        "POST",
        MESSAGES,
        &messages,
        Some(&alice_token),
        &key,
        Some(&plain),
        201,
    )
    .await;
    api.call(
        "POST",
        MESSAGES,
        &messages,
        Some(&alice_token),
        &key,
        Some(&json!({"body": "other"})),
        409,
    )
    .await;
    let markdown =
        json!({"body": "**bold** and `code`", "format": "markdown", "reply_to": sent["id"]});
    api.json("POST", MESSAGES, &messages, &bob_token, &markdown, 201)
        .await;
    api.json(
        "POST",
        MESSAGES,
        &messages,
        &bob_token,
        &json!({"body": "  "}),
        400,
    )
    .await;
    api.json(
        "POST",
        MESSAGES,
        &messages,
        &token(&stranger, false),
        &plain,
        404,
    )
    .await;
    api.call(
        "POST",
        MESSAGES,
        &messages,
        Some(&bob_token),
        &[("content-type", "text/plain")],
        None,
        415,
    )
    .await;
    let too_long = json!({"body": "x".repeat(33 * 1024)});
    api.json("POST", MESSAGES, &messages, &bob_token, &too_long, 413)
        .await;

    let message = format!("{messages}/{}", sent["id"].as_str().unwrap());
    api.get(MESSAGES, &format!("{messages}?limit=1"), &alice_token, 200)
        .await;
    api.get(
        MESSAGES,
        &format!("{messages}?limit=1000"),
        &alice_token,
        400,
    )
    .await;
    api.get(MESSAGE, &message, &bob_token, 200).await;
    api.get(
        MESSAGE,
        &format!("{messages}/{}", uuid::Uuid::now_v7()),
        &bob_token,
        404,
    )
    .await;
    api.get(MESSAGE, &format!("{messages}/not-an-id"), &bob_token, 400)
        .await;
    let edit = json!({"body": "hello, edited", "format": "plain"});
    let edited = api
        .json("PUT", MESSAGE, &message, &alice_token, &edit, 200)
        .await;
    assert!(edited["edited_at"].is_string(), "{edited}");
    api.json("PUT", MESSAGE, &message, &bob_token, &edit, 403)
        .await;

    // Media, typing, receipts.
    let media = "/v1/conversations/{id}/media";
    let upload = format!("{at}/media?filename=square.png");
    api.call("POST", media, &upload, Some(&alice_token), &[], None, 400)
        .await;
    let reply = api
        .api
        .call(
            "POST",
            &upload,
            Some(&alice_token),
            &[("content-type", "image/png")],
            Some(png(4, 4)),
        )
        .await;
    api.check("POST", media, 201, &reply);
    let attach = json!({"body": "a square", "attachments": [{"media_id": reply.body["media_id"]}]});
    let with_file = api
        .json("POST", MESSAGES, &messages, &alice_token, &attach, 201)
        .await;
    assert_eq!(with_file["attachments"][0]["width"], 4, "{with_file}");
    let reply = api
        .api
        .call(
            "POST",
            &upload,
            Some(&alice_token),
            &[("content-type", "image/png")],
            Some(b"not a png".to_vec()),
        )
        .await;
    api.check("POST", media, 415, &reply);

    let typing = "/v1/conversations/{id}/typing";
    api.json(
        "POST",
        typing,
        &format!("{at}/typing"),
        &bob_token,
        &json!({"typing": true, "timeout_ms": 5000}),
        204,
    )
    .await;
    api.json(
        "POST",
        typing,
        &format!("{at}/typing"),
        &bob_token,
        &json!({"typing": true, "timeout_ms": 5}),
        400,
    )
    .await;
    let read = "/v1/conversations/{id}/read";
    api.json(
        "POST",
        read,
        &format!("{at}/read"),
        &bob_token,
        &json!({"message_id": sent["id"]}),
        204,
    )
    .await;

    // A reaction, as history shows it, a key too long, and its removal.
    let reaction = format!("{MESSAGE}/reactions/{{key}}");
    let thumbs = format!("{message}/reactions/%F0%9F%91%8D");
    api.call("PUT", &reaction, &thumbs, Some(&bob_token), &[], None, 204)
        .await;
    let reacted = api.get(MESSAGE, &message, &bob_token, 200).await;
    assert_eq!(
        reacted["reactions"]["\u{1f44d}"],
        json!({"count": 1, "me": true}),
        "{reacted}"
    );
    let long = format!("{message}/reactions/{}", "k".repeat(65));
    api.call("PUT", &reaction, &long, Some(&bob_token), &[], None, 400)
        .await;
    api.call(
        "DELETE",
        &reaction,
        &thumbs,
        Some(&bob_token),
        &[],
        None,
        204,
    )
    .await;

    // Deletes, and a deleted message as history shows it.
    api.json("DELETE", MESSAGE, &message, &bob_token, &json!({}), 403)
        .await;
    api.json(
        "DELETE",
        MESSAGE,
        &message,
        &alice_token,
        &json!({"reason": "checked"}),
        204,
    )
    .await;
    let deleted = api.get(MESSAGE, &message, &alice_token, 200).await;
    assert_eq!(deleted["status"], "deleted", "{deleted}");

    // Room and member changes, then the archive.
    let conversation = format!("/v1/conversations/{id}");
    api.json(
        "PATCH",
        CONVERSATION,
        &conversation,
        &service,
        &json!({"name": "OpenAPI (renamed)", "topic": "changed"}),
        200,
    )
    .await;
    api.json(
        "PATCH",
        CONVERSATION,
        &conversation,
        &alice_token,
        &json!({"name": "not a service"}),
        403,
    )
    .await;
    api.json(
        "PATCH",
        CONVERSATION,
        &conversation,
        &service,
        &json!({"colour": "red"}),
        400,
    )
    .await;
    let carol = unique("carol");
    let member = format!("/v1/conversations/{id}/members/{carol}");
    let joined = api
        .json(
            "PUT",
            MEMBER,
            &member,
            &service,
            &json!({"role": "moderator", "display_name": "Carol"}),
            200,
        )
        .await;
    assert_eq!(joined["role"], "moderator", "{joined}");
    api.json(
        "PUT",
        MEMBER,
        &format!("/v1/conversations/{}/members/{carol}", unique("nowhere")),
        &service,
        &json!({"role": "member"}),
        404,
    )
    .await;
    api.json("PUT", MEMBER, &member, &service, &json!({}), 400)
        .await;
    api.call("DELETE", MEMBER, &member, Some(&service), &[], None, 204)
        .await;
    api.call(
        "DELETE",
        MEMBER,
        &member,
        Some(&alice_token),
        &[],
        None,
        403,
    )
    .await;
    api.call(
        "DELETE",
        CONVERSATION,
        &conversation,
        Some(&service),
        &[],
        None,
        204,
    )
    .await;
    api.json(
        "PATCH",
        CONVERSATION,
        &conversation,
        &service,
        &json!({"name": "archived"}),
        409,
    )
    .await;

    // Every application route was checked against the file at least once.
    let unchecked: Vec<String> = ROUTES
        .iter()
        .filter(|route| route.path.starts_with("/v1/"))
        .map(|route| route.key())
        .filter(|key| !api.seen.contains(key))
        .collect();
    assert!(
        unchecked.is_empty(),
        "routes whose answers tests/stack/openapi.rs does not check yet (add calls for them): {unchecked:?}"
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn the_appservice_routes_answer_as_the_openapi_file_says() {
    let mut api = Checked::new();
    let hs_token = var("MATRIX_HS_TOKEN");
    let hs = Some(hs_token.as_str());

    let ping = "/_matrix/app/v1/ping";
    api.call(
        "POST",
        ping,
        ping,
        hs,
        &[],
        Some(&json!({"transaction_id": "t1"})),
        200,
    )
    .await;
    api.call("POST", ping, ping, None, &[], Some(&json!({})), 401)
        .await;
    api.call(
        "POST",
        ping,
        ping,
        Some("not-the-token"),
        &[],
        Some(&json!({})),
        403,
    )
    .await;
    let by_query = format!("{ping}?access_token={hs_token}");
    api.call("POST", ping, &by_query, None, &[], Some(&json!({})), 200)
        .await;

    let transaction = "/_matrix/app/v1/transactions/{txnId}";
    let path = format!("/_matrix/app/v1/transactions/{}", unique("txn"));
    api.call(
        "PUT",
        transaction,
        &path,
        hs,
        &[],
        Some(&json!({"events": []})),
        200,
    )
    .await;
    let reply = api
        .api
        .call(
            "PUT",
            &path,
            hs,
            &[("content-type", "application/json")],
            Some(b"{not json".to_vec()),
        )
        .await;
    api.check("PUT", transaction, 400, &reply);
    assert_eq!(reply.body["errcode"], "M_NOT_JSON", "{reply:?}");

    // A puppet the application provisioned exists; anyone else does not.
    let alice = unique("alice");
    let service = token("svc", true);
    let put = Api::new()
        .json("PUT", &format!("/v1/users/{alice}"), &service, &json!({}))
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let puppet = put.body["matrix_user_id"].as_str().unwrap();
    let users = "/_matrix/app/v1/users/{userId}";
    let encode = |id: &str| {
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    api.call(
        "GET",
        users,
        &format!("/_matrix/app/v1/users/{}", encode(puppet)),
        hs,
        &[],
        None,
        200,
    )
    .await;
    let nobody = format!("@{}:{}", unique("nobody"), var("MATRIX_SERVER_NAME"));
    api.call(
        "GET",
        users,
        &format!("/_matrix/app/v1/users/{}", encode(&nobody)),
        hs,
        &[],
        None,
        404,
    )
    .await;
    let alias = "/_matrix/app/v1/rooms/{roomAlias}";
    let name = format!("#{}:{}", unique("room"), var("MATRIX_SERVER_NAME"));
    api.call(
        "GET",
        alias,
        &format!("/_matrix/app/v1/rooms/{}", encode(&name)),
        hs,
        &[],
        None,
        404,
    )
    .await;

    // The catch-all: Matrix's shape, as the file's x-catch-all says.
    let unknown = api
        .api
        .call(
            "GET",
            "/_matrix/app/v1/thirdparty/protocol/x",
            hs,
            &[],
            None,
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let matrix_error = json!({"$ref": "#/components/schemas/MatrixError"});
    api.spec.check(&matrix_error, &unknown.body).unwrap();
    assert_eq!(unknown.body["errcode"], "M_UNRECOGNIZED");

    let unchecked: Vec<String> = ROUTES
        .iter()
        .filter(|route| route.path.starts_with("/_matrix/"))
        .map(|route| route.key())
        .filter(|key| !api.seen.contains(key))
        .collect();
    assert!(
        unchecked.is_empty(),
        "appservice routes tests/stack/openapi.rs does not check yet: {unchecked:?}"
    );
}
