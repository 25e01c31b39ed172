//! The Matrix port's edits, deletes, media, typing and read receipts against
//! the real Synapse: `AppserviceClient` acting as puppets, and a plain Matrix
//! user (its own access token) checking what a person would see.

use std::time::Duration;

use bridge::config::MatrixConfig;
use bridge::matrix::content::{edit_content, media_content};
use bridge::matrix::{AppserviceClient, MESSAGE_ID_KEY, Matrix, RoomSpec};
use bridge::media;
use bridge::model::MessageId;
use hmac::{Hmac, Mac};
use ruma::api::error::ErrorKind;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{Value, json};

use crate::client::unique;
use crate::support::{stack_env, var};

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A plain Matrix user with its own access token, registered with Synapse's
/// shared-secret admin API, reading what Element would.
struct Person {
    user_id: OwnedUserId,
    token: String,
    http: reqwest::Client,
    base: String,
}

impl Person {
    async fn register() -> Self {
        let name = unique("reader");
        let http = reqwest::Client::new();
        let base = var("MATRIX_HOMESERVER_URL");
        let url = format!("{base}/_synapse/admin/v1/register");
        let nonce: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap();
        let password = uuid::Uuid::new_v4().to_string();
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(var("MATRIX_REGISTRATION_SHARED_SECRET").as_bytes())
                .unwrap();
        mac.update(format!("{nonce}\0{name}\0{password}\0notadmin").as_bytes());
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let reply: Value = http
            .post(&url)
            .json(&json!({"nonce": nonce, "username": name, "password": password, "admin": false, "mac": mac}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            user_id: reply["user_id"].as_str().unwrap().try_into().unwrap(),
            token: reply["access_token"].as_str().unwrap().to_owned(),
            http,
            base,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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

    async fn join(&self, room: &RoomId) {
        let path = format!("/_matrix/client/v3/join/{}", encode(room.as_str()));
        self.call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    /// An event as this user sees it, with the server's bundled aggregations.
    async fn event(&self, room: &RoomId, event_id: &str) -> Value {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            encode(room.as_str()),
            encode(event_id)
        );
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Downloads a file with authenticated media (Synapse serves new media
    /// only there).
    async fn download(&self, mxc: &str) -> (String, Vec<u8>) {
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

    /// One `/sync` of `room` since `since`, waiting up to 5 s for news.
    async fn sync(&self, room: &RoomId, since: Option<&str>) -> Value {
        let filter = json!({"room": {"rooms": [room], "timeline": {"limit": 5}}}).to_string();
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout=5000&filter={}",
            encode(&filter)
        );
        if let Some(since) = since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Syncs until an ephemeral event of `room` satisfies `found`, for up to
    /// 30 s; answers that event and the token to sync on from.
    async fn sync_until(
        &self,
        room: &RoomId,
        since: &str,
        found: impl Fn(&Value) -> bool,
    ) -> (Value, String) {
        let mut since = since.to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let sync = self.sync(room, Some(&since)).await;
            let events = sync["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            since = sync["next_batch"].as_str().unwrap().to_owned();
            if let Some(event) = events.into_iter().find(|event| found(event)) {
                return (event, since);
            }
        }
        panic!("no matching ephemeral event in {room} within 30 s");
    }
}

/// A room the bot created with two puppets joined (`mod` with power 50)
/// and a plain Matrix user joined.
struct Room {
    matrix: AppserviceClient,
    room: OwnedRoomId,
    alice: OwnedUserId,
    moderator: OwnedUserId,
    person: Person,
}

async fn room() -> Room {
    let config = MatrixConfig::from_env(stack_env()).unwrap();
    let matrix = AppserviceClient::new(AppserviceClient::http_client().unwrap(), &config);
    let puppet = |name: &str| -> OwnedUserId {
        format!(
            "@{}{}:{}",
            config.puppet_prefix,
            unique(name),
            config.server_name
        )
        .try_into()
        .unwrap()
    };
    let (alice, moderator) = (puppet("alice"), puppet("mod"));
    for user in [&alice, &moderator] {
        matrix.register_puppet(user.localpart()).await.unwrap();
    }
    let person = Person::register().await;
    let spec = RoomSpec {
        name: Some(unique("ops")),
        invite: vec![alice.clone(), moderator.clone(), person.user_id.clone()],
        power_levels: [(moderator.clone(), 50)].into_iter().collect(),
        ..RoomSpec::default()
    };
    let room = matrix.create_room(&spec).await.unwrap();
    for user in [&alice, &moderator] {
        matrix.join(&room, user).await.unwrap();
    }
    person.join(&room).await;
    Room {
        matrix,
        room,
        alice,
        moderator,
        person,
    }
}

impl Room {
    /// Sends a plain text message as `sender`, carrying `message_id`.
    async fn say(&self, sender: &OwnedUserId, body: &str, message_id: &MessageId) -> OwnedEventId {
        let content =
            json!({"msgtype": "m.text", "body": body, MESSAGE_ID_KEY: message_id.to_string()});
        self.matrix
            .send_message(&self.room, sender, &message_id.txn_id("send"), &content)
            .await
            .unwrap()
    }
}

/// A real PNG of `width` x `height` opaque red pixels: IHDR, one IDAT of
/// stored (uncompressed) deflate blocks, IEND, with their CRCs, so Synapse
/// can thumbnail it.
pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        png.extend((data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend(kind);
        png.extend(data);
        let crc = crc32(&png[start..]);
        png.extend(crc.to_be_bytes());
    }
    // Each row: filter type 0 (none), then RGBA pixels.
    let mut row = vec![0u8];
    row.extend([255, 0, 0, 255].repeat(width as usize));
    let raw = row.repeat(height as usize);
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for byte in &raw {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([8, 6, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_puppet_uploads_an_image_and_sends_it_as_m_image() {
    let room = room().await;
    let bytes = png(40, 30);
    let info = media::inspect("image/png", &bytes).unwrap();
    assert_eq!((info.width, info.height), (Some(40), Some(30)));

    let url = room
        .matrix
        .upload_media(&room.alice, &info.mimetype, Some("red.png"), bytes.clone())
        .await
        .unwrap();
    assert_eq!(url.server_name().unwrap(), "localhost");
    let message_id = MessageId::new();
    let content =
        media_content(&info, &url, "red.png", Some("a red rectangle"), &message_id).unwrap();
    let event_id = room
        .matrix
        .send_message(
            &room.room,
            &room.alice,
            &message_id.txn_id("send"),
            &content,
        )
        .await
        .unwrap();

    let seen = room.person.event(&room.room, event_id.as_str()).await;
    assert_eq!(seen["sender"], room.alice.as_str());
    assert_eq!(seen["content"]["msgtype"], "m.image");
    assert_eq!(seen["content"]["body"], "a red rectangle");
    assert_eq!(seen["content"]["filename"], "red.png");
    assert_eq!(seen["content"]["url"], url.as_str());
    assert_eq!(
        seen["content"]["info"],
        json!({"mimetype": "image/png", "size": bytes.len(), "w": 40, "h": 30})
    );
    let (content_type, downloaded) = room.person.download(url.as_str()).await;
    assert_eq!(content_type, "image/png");
    assert_eq!(downloaded, bytes, "the plain user gets the very bytes");
    assert_eq!(
        room.matrix
            .find_sent_event(&room.room, &room.alice, &message_id.to_string())
            .await
            .unwrap(),
        Some(event_id)
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn an_edit_is_what_a_plain_user_sees() {
    let room = room().await;
    let message_id = MessageId::new();
    let original = room.say(&room.alice, "frist post", &message_id).await;

    let content = edit_content(
        &original,
        "first post",
        Some("<b>first</b> post"),
        &message_id,
    )
    .unwrap();
    let edit = room
        .matrix
        .send_message(
            &room.room,
            &room.alice,
            &message_id.txn_id("edit-1"),
            &content,
        )
        .await
        .unwrap();

    // Synapse bundles the latest edit into the original (spec v1.7+: the
    // original's content stays; the replacement is in unsigned).
    let seen = room.person.event(&room.room, original.as_str()).await;
    assert_eq!(seen["content"]["body"], "frist post");
    let replace = &seen["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], edit.as_str(), "{seen}");
    let seen_edit = room.person.event(&room.room, edit.as_str()).await;
    assert_eq!(seen_edit["content"]["m.new_content"]["body"], "first post");
    assert_eq!(
        seen_edit["content"]["m.new_content"]["formatted_body"],
        "<b>first</b> post"
    );
    assert_eq!(seen_edit["content"]["body"], "* first post");

    // A retry of the original send still finds the original, not its edit.
    assert_eq!(
        room.matrix
            .find_sent_event(&room.room, &room.alice, &message_id.to_string())
            .await
            .unwrap(),
        Some(original.clone())
    );

    // Synapse takes an edit of someone else's message, but does not apply it.
    let forged = edit_content(&original, "forged", None, &MessageId::new()).unwrap();
    room.matrix
        .send_message(
            &room.room,
            &room.moderator,
            &MessageId::new().txn_id("edit"),
            &forged,
        )
        .await
        .unwrap();
    let seen = room.person.event(&room.room, original.as_str()).await;
    assert_eq!(
        seen["unsigned"]["m.relations"]["m.replace"]["event_id"],
        edit.as_str(),
        "{seen}"
    );
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_redaction_empties_the_message_for_everyone() {
    let room = room().await;
    let message_id = MessageId::new();
    let event_id = room.say(&room.alice, "regrettable", &message_id).await;
    let txn = message_id.txn_id("delete");

    let redaction = room
        .matrix
        .redact(
            &room.room,
            &room.alice,
            &event_id,
            &txn,
            Some("deleted in the app"),
        )
        .await
        .unwrap();
    let again = room
        .matrix
        .redact(
            &room.room,
            &room.alice,
            &event_id,
            &txn,
            Some("deleted in the app"),
        )
        .await
        .unwrap();
    assert_eq!(again, redaction, "the same transaction, the same redaction");

    let seen = room.person.event(&room.room, event_id.as_str()).await;
    assert_eq!(seen["content"], json!({}), "{seen}");
    let because = &seen["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction.as_str());
    assert_eq!(because["sender"], room.alice.as_str());
    assert_eq!(because["content"]["reason"], "deleted in the app");
    assert_eq!(
        room.matrix
            .find_sent_event(&room.room, &room.alice, &message_id.to_string())
            .await
            .unwrap(),
        None,
        "a redacted message no longer carries its id"
    );

    // What the fake copies: an unknown event is M_NOT_FOUND; another's
    // event needs power 50; the moderator and the bot may.
    let missing: OwnedEventId = "$doesnotexist".try_into().unwrap();
    let err = room
        .matrix
        .redact(&room.room, &room.alice, &missing, &unique("txn"), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(matches!(err.kind(), Some(ErrorKind::NotFound)), "{err}");
    let by_mod = room.say(&room.moderator, "mine", &MessageId::new()).await;
    let err = room
        .matrix
        .redact(&room.room, &room.alice, &by_mod, &unique("txn"), None)
        .await
        .unwrap_err();
    assert!(err.is_forbidden(), "{err}");
    let other = room.say(&room.alice, "moderated", &MessageId::new()).await;
    room.matrix
        .redact(&room.room, &room.moderator, &other, &unique("txn"), None)
        .await
        .unwrap();
    let bot = room.matrix.bot().to_owned();
    room.matrix
        .redact(
            &room.room,
            &bot,
            &by_mod,
            &unique("txn"),
            Some("moderation"),
        )
        .await
        .unwrap();
    let seen = room.person.event(&room.room, by_mod.as_str()).await;
    assert_eq!(seen["unsigned"]["redacted_because"]["sender"], bot.as_str());
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn typing_and_read_receipts_reach_a_plain_user() {
    let room = room().await;
    let event_id = room.say(&room.alice, "read me", &MessageId::new()).await;
    let since = room.person.sync(&room.room, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    room.matrix
        .set_typing(&room.room, &room.alice, true, Duration::from_secs(30))
        .await
        .unwrap();
    let alice = room.alice.as_str();
    let (_, since) = room
        .person
        .sync_until(&room.room, &since, |event| {
            event["type"] == "m.typing" && event["content"]["user_ids"] == json!([alice])
        })
        .await;
    room.matrix
        .set_typing(&room.room, &room.alice, false, Duration::ZERO)
        .await
        .unwrap();
    let (_, since) = room
        .person
        .sync_until(&room.room, &since, |event| {
            event["type"] == "m.typing" && event["content"]["user_ids"] == json!([])
        })
        .await;

    room.matrix
        .send_read_receipt(&room.room, &room.moderator, &event_id)
        .await
        .unwrap();
    let moderator = room.moderator.as_str();
    let (receipt, _) = room
        .person
        .sync_until(&room.room, &since, |event| {
            event["type"] == "m.receipt"
                && event["content"][event_id.as_str()]["m.read"][moderator].is_object()
        })
        .await;
    assert!(
        receipt["content"][event_id.as_str()]["m.read"][moderator]["ts"].is_u64(),
        "{receipt}"
    );

    // A puppet that is not in the room may do neither.
    let outsider: OwnedUserId = format!(
        "@{}{}:localhost",
        var("BRIDGE_PUPPET_PREFIX"),
        unique("out")
    )
    .try_into()
    .unwrap();
    room.matrix
        .register_puppet(outsider.localpart())
        .await
        .unwrap();
    let err = room
        .matrix
        .set_typing(&room.room, &outsider, true, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_forbidden(), "{err}");
    let err = room
        .matrix
        .send_read_receipt(&room.room, &outsider, &event_id)
        .await
        .unwrap_err();
    assert!(err.is_forbidden(), "{err}");
}
