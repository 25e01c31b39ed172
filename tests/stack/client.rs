//! Clients for the tests: the bridge API as a caller sees it, and a plain
//! Matrix user with its own access token, as a person would use Element.
#![allow(dead_code)]

use bridge::config::Secret;
use bridge_dev::token::TokenConfig;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::support::var;

/// A unique suffix, so tests never share ids.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn tokens() -> TokenConfig {
    TokenConfig {
        secret: Secret::new(var("BRIDGE_DEV_JWT_SECRET")),
        issuer: var("BRIDGE_JWT_ISSUER"),
        audience: var("BRIDGE_JWT_AUDIENCE"),
    }
}

pub fn token(user: &str, admin: bool) -> String {
    tokens()
        .mint(user, admin, time::Duration::minutes(10))
        .unwrap()
}

/// A response: status and JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// The bridge's API, through the front door.
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new() -> Self {
        // A connection per request (`Connection: close`): a pooled one may be
        // dead, after a test restarted the front door or after it refused an
        // oversized body without reading it, and a POST is not retried.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        );
        Self {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            base: var("BRIDGE_API_URL"),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("the front door answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply { status, body }
    }

    pub async fn json(&self, method: &str, path: &str, token: &str, body: &Value) -> Reply {
        self.json_with(method, path, token, &[], body).await
    }

    pub async fn json_with(
        &self,
        method: &str,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.call(
            method,
            path,
            Some(token),
            &all,
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), &[], None).await
    }

    /// Provisions a conversation as the service and asserts it worked.
    pub async fn provision(&self, body: &Value) -> Value {
        let reply = self
            .json("POST", "/v1/conversations", &token("svc", true), body)
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body
    }
}

/// A plain Matrix user on the local Synapse, with its own access token.
pub struct MatrixUser {
    pub user_id: String,
    token: String,
    http: reqwest::Client,
    base: String,
}

impl MatrixUser {
    /// Registers a new user through Synapse's shared-secret admin API.
    pub async fn register(name: &str) -> Self {
        Self::register_as(name, false).await
    }

    /// Registers a new homeserver admin (for the admin API's room search).
    pub async fn register_admin(name: &str) -> Self {
        Self::register_as(name, true).await
    }

    async fn register_as(name: &str, admin: bool) -> Self {
        let http = reqwest::Client::new();
        let base = var("MATRIX_HOMESERVER_URL");
        let url = format!("{base}/_synapse/admin/v1/register");
        let nonce: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap().to_owned();
        let password = uuid::Uuid::new_v4().to_string();
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(var("MATRIX_REGISTRATION_SHARED_SECRET").as_bytes())
                .unwrap();
        let kind = if admin { "admin" } else { "notadmin" };
        mac.update(format!("{nonce}\0{name}\0{password}\0{kind}").as_bytes());
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let reply: Value = http
            .post(&url)
            .json(&json!({"nonce": nonce, "username": name, "password": password, "admin": admin, "mac": mac}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            user_id: reply["user_id"]
                .as_str()
                .unwrap_or_else(|| panic!("registration failed: {reply}"))
                .to_owned(),
            token: reply["access_token"].as_str().unwrap().to_owned(),
            http,
            base,
        }
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    pub async fn join(&self, room_id: &str) {
        self.request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", encode(room_id)),
            Some(json!({})),
        )
        .await;
    }

    /// The room's `m.room.message` events, oldest first, as this user sees them.
    pub async fn messages(&self, room_id: &str) -> Vec<Value> {
        self.events(room_id, "m.room.message").await
    }

    /// The room's latest 100 events of `event_type`, oldest first.
    pub async fn events(&self, room_id: &str, event_type: &str) -> Vec<Value> {
        self.timeline(room_id)
            .await
            .into_iter()
            .filter(|event| event["type"] == event_type)
            .collect()
    }

    /// The room's latest 100 events, oldest first.
    pub async fn timeline(&self, room_id: &str) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            encode(room_id)
        );
        let reply = self.request(reqwest::Method::GET, &path, None).await;
        let mut events = reply["chunk"].as_array().unwrap().clone();
        events.reverse();
        events
    }

    /// Every event of the room, oldest first: all pages of `/messages`
    /// (redacted events included, as the server serves them).
    pub async fn all_events(&self, room_id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                encode(room_id)
            );
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", encode(from)));
            }
            let reply = self.request(reqwest::Method::GET, &path, None).await;
            let chunk = reply["chunk"].as_array().cloned().unwrap_or_default();
            if chunk.is_empty() {
                break;
            }
            events.extend(chunk);
            match reply["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => break,
            }
        }
        events.reverse();
        events
    }

    /// One event, as the server serves it (with its aggregations, or
    /// redacted).
    pub async fn event(&self, room_id: &str, event_id: &str) -> Value {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            encode(room_id),
            encode(event_id)
        );
        self.request(reqwest::Method::GET, &path, None).await
    }

    /// A GET of the client-server or admin API as this user.
    pub async fn get(&self, path: &str) -> Value {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// One `/sync`, without a filter: rooms joined, invites with their state.
    pub async fn sync_all(&self) -> Value {
        self.get("/_matrix/client/v3/sync?timeout=0").await
    }

    /// Whether a room is listed in the room directory.
    pub async fn listed(&self, room_id: &str) -> bool {
        let path = format!("/_matrix/client/v3/directory/list/room/{}", encode(room_id));
        self.get(&path).await["visibility"] == "public"
    }

    /// Downloads a file with authenticated media (Synapse serves new media
    /// only there): its content type and bytes.
    pub async fn download(&self, mxc: &str) -> (String, Vec<u8>) {
        let path = mxc.strip_prefix("mxc://").unwrap();
        let url = format!("{}/_matrix/client/v1/media/download/{path}", self.base);
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        (content_type, response.bytes().await.unwrap().to_vec())
    }

    /// One `/sync` of `room_id` since `since`, waiting up to 5 s for news.
    pub async fn sync(&self, room_id: &str, since: Option<&str>) -> Value {
        let filter = json!({"room": {"rooms": [room_id], "timeline": {"limit": 5}}}).to_string();
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout=5000&filter={}",
            encode(&filter)
        );
        if let Some(since) = since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        self.request(reqwest::Method::GET, &path, None).await
    }

    /// Syncs until an ephemeral event of `room_id` satisfies `found`, for up
    /// to 30 s; answers that event and the token to sync on from.
    pub async fn sync_until(
        &self,
        room_id: &str,
        since: &str,
        found: impl Fn(&Value) -> bool,
    ) -> (Value, String) {
        let mut since = since.to_owned();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let sync = self.sync(room_id, Some(&since)).await;
            let events = sync["rooms"]["join"][room_id]["ephemeral"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            since = sync["next_batch"].as_str().unwrap().to_owned();
            if let Some(event) = events.into_iter().find(|event| found(event)) {
                return (event, since);
            }
        }
        panic!("no matching ephemeral event in {room_id} within 30 s");
    }

    pub async fn state(&self, room_id: &str, event_type: &str, state_key: &str) -> Value {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{event_type}/{}",
            encode(room_id),
            encode(state_key)
        );
        self.request(reqwest::Method::GET, &path, None).await
    }
}

/// What a person does in a room, as Element would do it.
impl MatrixUser {
    /// Sends an `m.room.message` with `content`; its event id.
    pub async fn send(&self, room_id: &str, content: Value) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            encode(room_id),
            uuid::Uuid::new_v4().simple()
        );
        let reply = self
            .request(reqwest::Method::PUT, &path, Some(content))
            .await;
        reply["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn redact(&self, room_id: &str, event_id: &str, reason: &str) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/{}",
            encode(room_id),
            encode(event_id),
            uuid::Uuid::new_v4().simple()
        );
        let reply = self
            .request(reqwest::Method::PUT, &path, Some(json!({"reason": reason})))
            .await;
        reply["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn leave(&self, room_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(room_id));
        self.request(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    pub async fn kick(&self, room_id: &str, user_id: &str, reason: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/kick", encode(room_id));
        self.request(
            reqwest::Method::POST,
            &path,
            Some(json!({"user_id": user_id, "reason": reason})),
        )
        .await;
    }

    pub async fn typing(&self, room_id: &str, typing: bool) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            encode(room_id),
            encode(&self.user_id)
        );
        self.request(
            reqwest::Method::PUT,
            &path,
            Some(json!({"typing": typing, "timeout": 10_000})),
        )
        .await;
    }

    /// A public `m.read` receipt up to `event_id`.
    pub async fn read(&self, room_id: &str, event_id: &str) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            encode(room_id),
            encode(event_id)
        );
        self.request(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    /// Uploads a file to the media repository; its `mxc://` URI.
    pub async fn upload(&self, content_type: &str, filename: &str, bytes: Vec<u8>) -> String {
        let url = format!(
            "{}/_matrix/media/v3/upload?filename={}",
            self.base,
            encode(filename)
        );
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let reply: Value = response.json().await.unwrap();
        reply["content_uri"].as_str().unwrap().to_owned()
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}
