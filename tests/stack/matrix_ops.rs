//! The Matrix port's edits, deletes, media, typing and read receipts against
//! the real Synapse: `AppserviceClient` acting as puppets, and a plain Matrix
//! user (its own access token) checking what a person would see.

use std::time::Duration;

use bridge::config::MatrixConfig;
use bridge::matrix::content::{edit_content, media_content};
use bridge::matrix::{AppserviceClient, MESSAGE_ID_KEY, Matrix, RoomSpec, Sent};
use bridge::media;
use bridge::model::MessageId;
use ruma::api::error::ErrorKind;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde_json::json;

use crate::client::{MatrixUser, unique};
use crate::support::{stack_env, var};

/// A room the bot created with two puppets joined (`mod` with power 50)
/// and a plain Matrix user joined.
struct Room {
    matrix: AppserviceClient,
    room: OwnedRoomId,
    alice: OwnedUserId,
    moderator: OwnedUserId,
    person: MatrixUser,
}

async fn room() -> Room {
    let config = MatrixConfig::from_env(stack_env()).unwrap();
    let matrix =
        AppserviceClient::local(AppserviceClient::http_client().unwrap(), &config).unwrap();
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
    let person = MatrixUser::register(&unique("reader")).await;
    let spec = RoomSpec {
        name: Some(unique("ops")),
        invite: vec![
            alice.clone(),
            moderator.clone(),
            person.user_id.as_str().try_into().unwrap(),
        ],
        power_levels: [(moderator.clone(), 50)].into_iter().collect(),
        ..RoomSpec::default()
    };
    let room = matrix.create_room(&spec).await.unwrap();
    for user in [&alice, &moderator] {
        matrix.join(&room, user).await.unwrap();
    }
    person.join(room.as_str()).await;
    Room {
        matrix,
        room,
        alice,
        moderator,
        person,
    }
}

fn an_hour_ago() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - time::Duration::hours(1)
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_landed_send_is_found_however_many_events_came_after_it() {
    let room = room().await;
    let message_id = MessageId::new();
    let accepted = time::OffsetDateTime::now_utc();
    let event_id = room
        .say(&room.alice, "landed, answer lost", &message_id)
        .await;
    // More than a page of other events since (the old check read only the
    // latest 100).
    for n in 0..110 {
        room.say(&room.moderator, &format!("chatter {n}"), &MessageId::new())
            .await;
    }
    assert_eq!(
        room.matrix
            .find_sent_event(
                &room.room,
                &room.alice,
                Sent::Message(&message_id.to_string()),
                accepted
            )
            .await
            .unwrap(),
        Some(event_id),
        "found by time, not among the latest 100 events"
    );
    assert_eq!(
        room.matrix
            .find_sent_event(
                &room.room,
                &room.alice,
                Sent::Message(&MessageId::new().to_string()),
                accepted
            )
            .await
            .unwrap(),
        None
    );
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
    let content = media_content(
        &info,
        &url,
        "red.png",
        Some("a red rectangle"),
        None,
        None,
        &message_id,
    )
    .unwrap();
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

    let seen = room
        .person
        .event(room.room.as_str(), event_id.as_str())
        .await;
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
            .find_sent_event(
                &room.room,
                &room.alice,
                Sent::Message(&message_id.to_string()),
                an_hour_ago()
            )
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
        1,
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
    let seen = room
        .person
        .event(room.room.as_str(), original.as_str())
        .await;
    assert_eq!(seen["content"]["body"], "frist post");
    let replace = &seen["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], edit.as_str(), "{seen}");
    let seen_edit = room.person.event(room.room.as_str(), edit.as_str()).await;
    assert_eq!(seen_edit["content"]["m.new_content"]["body"], "first post");
    assert_eq!(
        seen_edit["content"]["m.new_content"]["formatted_body"],
        "<b>first</b> post"
    );
    assert_eq!(seen_edit["content"]["body"], "* first post");

    // A retry of the original send still finds the original, not its edit.
    assert_eq!(
        room.matrix
            .find_sent_event(
                &room.room,
                &room.alice,
                Sent::Message(&message_id.to_string()),
                an_hour_ago()
            )
            .await
            .unwrap(),
        Some(original.clone())
    );
    // A retry of the edit finds that very edit, and no other.
    let id = message_id.to_string();
    for (edit_number, found) in [(1, Some(edit.clone())), (2, None)] {
        assert_eq!(
            room.matrix
                .find_sent_event(
                    &room.room,
                    &room.alice,
                    Sent::Edit(&id, edit_number),
                    an_hour_ago()
                )
                .await
                .unwrap(),
            found,
            "edit number {edit_number}"
        );
    }

    // Synapse takes an edit of someone else's message, but does not apply it.
    let forged = edit_content(&original, "forged", None, &MessageId::new(), 1).unwrap();
    room.matrix
        .send_message(
            &room.room,
            &room.moderator,
            &MessageId::new().txn_id("edit"),
            &forged,
        )
        .await
        .unwrap();
    let seen = room
        .person
        .event(room.room.as_str(), original.as_str())
        .await;
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
    assert!(
        !room
            .matrix
            .is_redacted(&room.room, &room.alice, &event_id)
            .await
            .unwrap()
    );

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
    assert!(
        room.matrix
            .is_redacted(&room.room, &room.alice, &event_id)
            .await
            .unwrap(),
        "what a retried redaction looks at when an attempt is in doubt"
    );

    let seen = room
        .person
        .event(room.room.as_str(), event_id.as_str())
        .await;
    assert_eq!(seen["content"], json!({}), "{seen}");
    let because = &seen["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction.as_str());
    assert_eq!(because["sender"], room.alice.as_str());
    assert_eq!(because["content"]["reason"], "deleted in the app");
    assert_eq!(
        room.matrix
            .find_sent_event(
                &room.room,
                &room.alice,
                Sent::Message(&message_id.to_string()),
                an_hour_ago()
            )
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
    let seen = room.person.event(room.room.as_str(), by_mod.as_str()).await;
    assert_eq!(seen["unsigned"]["redacted_because"]["sender"], bot.as_str());
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn typing_and_read_receipts_reach_a_plain_user() {
    let room = room().await;
    let event_id = room.say(&room.alice, "read me", &MessageId::new()).await;
    let since = room.person.sync(room.room.as_str(), None).await["next_batch"]
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
        .sync_until(room.room.as_str(), &since, |event| {
            event["type"] == "m.typing" && event["content"]["user_ids"] == json!([alice])
        })
        .await;
    room.matrix
        .set_typing(&room.room, &room.alice, false, Duration::ZERO)
        .await
        .unwrap();
    let (_, since) = room
        .person
        .sync_until(room.room.as_str(), &since, |event| {
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
        .sync_until(room.room.as_str(), &since, |event| {
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
