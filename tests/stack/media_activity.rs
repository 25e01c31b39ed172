//! The `media` and `activity` functions through the front door: a file
//! uploaded with the API and sent as an attachment, typing and a read
//! receipt, as a plain Matrix user (its own access token) sees them.

use serde_json::{Value, json};

use crate::client::MatrixUser;
use crate::client::{Api, token, unique};
use crate::matrix_ops::png;

/// A conversation with two puppets (`alice`, `bob`) and a plain Matrix user
/// who has joined its room.
struct Conversation {
    api: Api,
    id: String,
    room: String,
    alice: String,
    bob: String,
    /// The puppets' Matrix ids, as provisioning answered them.
    alice_puppet: String,
    bob_puppet: String,
    person: MatrixUser,
}

async fn conversation() -> Conversation {
    let api = Api::new();
    let (alice, bob, id) = (unique("alice"), unique("bob"), unique("grp"));
    let person = MatrixUser::register(&unique("reader")).await;
    let created = api
        .provision(&json!({
            "id": id, "kind": "group", "name": "Media and activity",
            "members": [
                {"user_id": alice, "role": "owner"},
                {"user_id": bob, "role": "member"},
                {"matrix_user_id": person.user_id, "role": "member"},
            ],
        }))
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    person.join(&room).await;
    let puppet = |n: usize| {
        created["members"][n]["matrix_user_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    Conversation {
        api,
        room,
        alice_puppet: puppet(0),
        bob_puppet: puppet(1),
        id,
        alice,
        bob,
        person,
    }
}

impl Conversation {
    async fn upload(&self, user: &str, content_type: &str, bytes: Vec<u8>) -> crate::client::Reply {
        self.upload_named(user, content_type, "red%20square.png", bytes)
            .await
    }

    /// Uploads `bytes` as `user`, named `filename` (URL-encoded).
    async fn upload_named(
        &self,
        user: &str,
        content_type: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> crate::client::Reply {
        let path = format!("/v1/conversations/{}/media?filename={filename}", self.id);
        self.api
            .call(
                "POST",
                &path,
                Some(&token(user, false)),
                &[("content-type", content_type)],
                Some(bytes),
            )
            .await
    }

    async fn post(&self, user: &str, what: &str, body: &Value) -> crate::client::Reply {
        let path = format!("/v1/conversations/{}/{what}", self.id);
        self.api
            .json("POST", &path, &token(user, false), body)
            .await
    }
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn an_uploaded_image_is_sent_as_an_attachment_a_plain_user_sees_and_downloads() {
    let conversation = conversation().await;
    let bytes = png(48, 32);
    let uploaded = conversation
        .upload(&conversation.alice, "image/png", bytes.clone())
        .await;
    assert_eq!(uploaded.status, 201, "{uploaded:?}");
    let content_uri = uploaded.body["content_uri"].as_str().unwrap().to_owned();
    assert!(content_uri.starts_with("mxc://localhost/"), "{uploaded:?}");
    assert_eq!(uploaded.body["size"], bytes.len());
    assert_eq!(
        (&uploaded.body["width"], &uploaded.body["height"]),
        (&json!(48), &json!(32))
    );
    assert_eq!(uploaded.body["filename"], "red square.png");

    let sent = conversation
        .post(
            &conversation.alice,
            "messages",
            &json!({"body": "a red rectangle", "attachments": [{"media_id": uploaded.body["media_id"]}]}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    assert_eq!(sent.body["status"], "sent");
    assert_eq!(
        sent.body["attachments"][0]["content_uri"],
        content_uri.as_str()
    );

    let event_id = sent.body["event_id"].as_str().unwrap();
    let seen = conversation
        .person
        .event(&conversation.room, event_id)
        .await;
    assert_eq!(seen["sender"], conversation.alice_puppet.as_str());
    let content = &seen["content"];
    assert_eq!(content["msgtype"], "m.image", "{seen}");
    assert_eq!(content["body"], "a red rectangle");
    assert_eq!(content["filename"], "red square.png");
    assert_eq!(content["url"], content_uri.as_str());
    assert_eq!(
        content["info"],
        json!({"mimetype": "image/png", "size": bytes.len(), "w": 48, "h": 32})
    );
    let (content_type, downloaded) = conversation.person.download(&content_uri).await;
    assert_eq!(content_type, "image/png");
    assert_eq!(downloaded, bytes, "the very bytes uploaded through the API");

    // History shows the attachment.
    let history = conversation
        .api
        .get(
            &format!("/v1/conversations/{}/messages", conversation.id),
            &token(&conversation.bob, false),
        )
        .await;
    assert_eq!(
        history.body["messages"][0]["attachments"],
        sent.body["attachments"]
    );

    // Refusals come from the function, in the API's words.
    let mut big = png(1, 1);
    big.resize(bridge::media::MAX_MEDIA + 1, 0);
    let too_large = conversation
        .upload(&conversation.alice, "image/png", big)
        .await;
    assert_eq!(too_large.status, 413, "{too_large:?}");
    assert_eq!(too_large.body["error"]["code"], "payload_too_large");
    let text = b"not a picture".to_vec();
    let mismatch = conversation
        .upload(&conversation.alice, "image/png", text)
        .await;
    assert_eq!(mismatch.status, 415, "{mismatch:?}");
    let stranger = conversation.upload("eve", "image/png", png(1, 1)).await;
    assert_eq!(stranger.status, 404, "{stranger:?}");
    let theirs = conversation
        .post(
            &conversation.bob,
            "messages",
            &json!({"body": "", "attachments": [{"media_id": uploaded.body["media_id"]}]}),
        )
        .await;
    assert_eq!(theirs.status, 403, "{theirs:?}");
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn typing_and_a_read_receipt_reach_a_plain_user() {
    let conversation = conversation().await;
    let (person, room) = (&conversation.person, &conversation.room);
    let sent = conversation
        .post(&conversation.alice, "messages", &json!({"body": "read me"}))
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let event_id = sent.body["event_id"].as_str().unwrap().to_owned();
    let since = person.sync(room, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let typing = json!({"typing": true, "timeout_ms": 30000});
    for _ in 0..2 {
        let reply = conversation
            .post(&conversation.alice, "typing", &typing)
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    let alice = conversation.alice_puppet.as_str();
    let (_, since) = person
        .sync_until(room, &since, |event| {
            event["type"] == "m.typing" && event["content"]["user_ids"] == json!([alice])
        })
        .await;
    let stop = conversation
        .post(&conversation.alice, "typing", &json!({"typing": false}))
        .await;
    assert_eq!(stop.status, 204, "{stop:?}");
    let (_, since) = person
        .sync_until(room, &since, |event| {
            event["type"] == "m.typing" && event["content"]["user_ids"] == json!([])
        })
        .await;

    let read = conversation
        .post(
            &conversation.bob,
            "read",
            &json!({"message_id": sent.body["id"]}),
        )
        .await;
    assert_eq!(read.status, 204, "{read:?}");
    let bob = conversation.bob_puppet.as_str();
    let (receipt, _) = person
        .sync_until(room, &since, |event| {
            event["type"] == "m.receipt"
                && event["content"][event_id.as_str()]["m.read"][bob].is_object()
        })
        .await;
    assert!(
        receipt["content"][event_id.as_str()]["m.read"][bob]["ts"].is_u64(),
        "{receipt}"
    );

    // Strangers, unknown messages and bad timeouts, in the API's words.
    let stranger = conversation.post("eve", "typing", &typing).await;
    assert_eq!(stranger.status, 404, "{stranger:?}");
    let unknown = json!({"message_id": bridge::model::MessageId::new()});
    let unknown = conversation.post(&conversation.bob, "read", &unknown).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let bad = json!({"typing": true, "timeout_ms": 500});
    let bad = conversation.post(&conversation.alice, "typing", &bad).await;
    assert_eq!(bad.status, 400, "{bad:?}");
}

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_file_and_a_reply_reach_a_plain_user_as_the_spec_shapes_them() {
    let conversation = conversation().await;
    let pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        .to_vec();
    let uploaded = conversation
        .upload_named(
            &conversation.bob,
            "application/pdf",
            "agenda.pdf",
            pdf.clone(),
        )
        .await;
    assert_eq!(uploaded.status, 201, "{uploaded:?}");
    let sent = conversation
        .post(
            &conversation.bob,
            "messages",
            &json!({"body": "", "attachments": [{"media_id": uploaded.body["media_id"]}]}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let file_event = sent.body["event_id"].as_str().unwrap().to_owned();
    let seen = conversation
        .person
        .event(&conversation.room, &file_event)
        .await;
    assert_eq!(seen["content"]["msgtype"], "m.file");
    assert_eq!(
        seen["content"]["body"], "agenda.pdf",
        "no caption: the name"
    );
    assert_eq!(seen["content"]["filename"], "agenda.pdf");
    assert_eq!(
        seen["content"]["info"],
        json!({"mimetype": "application/pdf", "size": pdf.len()})
    );

    let reply = conversation
        .post(
            &conversation.alice,
            "messages",
            &json!({"body": "thanks, see you there", "reply_to": sent.body["id"]}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let seen = conversation
        .person
        .event(&conversation.room, reply.body["event_id"].as_str().unwrap())
        .await;
    assert_eq!(
        seen["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        file_event.as_str(),
        "{seen}"
    );
    assert_eq!(reply.body["reply_to"], sent.body["id"]);
}
