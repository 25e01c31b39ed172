//! The `m.room.message` contents the bridge sends (text with its reply
//! relation, edits, media), built with ruma's event types; each carries the
//! bridge's message id under [`MESSAGE_ID_KEY`] and is refused when Matrix
//! would refuse its size.

use ruma::events::relation::Reply;
use ruma::events::room::ImageInfo;
use ruma::events::room::message::{
    AudioInfo, AudioMessageEventContent, FileInfo, FileMessageEventContent, FormattedBody,
    ImageMessageEventContent, MessageType, Relation, ReplacementMetadata, RoomMessageEventContent,
    VideoInfo, VideoMessageEventContent,
};
use ruma::{EventId, MxcUri, UInt};

use super::MESSAGE_ID_KEY;
use crate::error::Error;
use crate::media::{MediaInfo, MediaKind};
use crate::model::MessageId;

/// The largest event content we send; Matrix caps a whole event at 64 KiB.
pub const MAX_CONTENT: usize = 60 * 1024;

/// A text message's content, without relations (HTML-formatted when `html`
/// is given).
pub fn text_message(body: &str, html: Option<&str>) -> RoomMessageEventContent {
    match html {
        Some(html) => RoomMessageEventContent::text_html(body, html),
        None => RoomMessageEventContent::text_plain(body),
    }
}

/// A notice's content (`m.notice`, what bots send), without relations.
pub fn notice_message(body: &str, html: Option<&str>) -> RoomMessageEventContent {
    match html {
        Some(html) => RoomMessageEventContent::notice_html(body, html),
        None => RoomMessageEventContent::notice_plain(body),
    }
}

/// The content of an edit of `original` (a spec `m.replace`): the new text
/// in `m.new_content`, and a `* `-prefixed fallback for clients that do not
/// know edits. It carries the id of the message it edits: an edit is about
/// that message, though [`super::carries_message`] does not take it for the
/// message itself.
pub fn edit_content(
    original: &EventId,
    body: &str,
    html: Option<&str>,
    message_id: &MessageId,
    edit: u32,
) -> Result<serde_json::Value, Error> {
    replacement(original, text_message(body, html), message_id, edit)
}

/// The content of edit number `edit` of `original` whose new content is
/// `new` (a text, or a file with a new caption). The number, under
/// [`super::EDIT_KEY`], lets a retry find this very edit. An edit keeps the
/// message's mentions: `m.new_content` carries them, and the edit's own
/// `m.mentions` is empty, so nobody is notified again
/// (<https://spec.matrix.org/v1.16/client-server-api/#editing-events-with-mentions>).
pub fn replacement(
    original: &EventId,
    new: RoomMessageEventContent,
    message_id: &MessageId,
    edit: u32,
) -> Result<serde_json::Value, Error> {
    let before = new.mentions.clone();
    let content = new.make_replacement(ReplacementMetadata::new(original.to_owned(), before));
    tagged_event(&content, message_id, Some(edit))
}

/// The content of a file already uploaded to `url`: `m.image`, `m.video`,
/// `m.audio` or `m.file` by its type, with `info` (type, size, and an
/// image's width and height) and `filename`, replying to `reply_to` when
/// given. The body is the caption when there is one (HTML-formatted when
/// `html` is given), else the file name: per the spec, a `body` that
/// differs from `filename` is a caption
/// (<https://spec.matrix.org/v1.16/client-server-api/#media-captions>).
pub fn media_content(
    info: &MediaInfo,
    url: &MxcUri,
    filename: &str,
    caption: Option<&str>,
    html: Option<&str>,
    reply_to: Option<&EventId>,
    message_id: &MessageId,
) -> Result<serde_json::Value, Error> {
    let mut content = media_message(info, url, filename, caption, html);
    content.relates_to =
        reply_to.map(|event_id| Relation::Reply(Reply::with_event_id(event_id.to_owned())));
    to_event(&content, message_id)
}

/// A file's message content, without relations: `m.image`, `m.video`,
/// `m.audio` or `m.file` by its type, the caption (formatted when `html`
/// is given) as its body, or the file name when there is no caption.
pub fn media_message(
    info: &MediaInfo,
    url: &MxcUri,
    filename: &str,
    caption: Option<&str>,
    html: Option<&str>,
) -> RoomMessageEventContent {
    let caption = caption.filter(|caption| !caption.trim().is_empty());
    let formatted = caption.and(html).map(FormattedBody::html);
    let body = caption.unwrap_or(filename).to_owned();
    let url = url.to_owned();
    let filename = Some(filename.to_owned());
    let mimetype = Some(info.mimetype.clone());
    let size = UInt::new(info.size);
    let msgtype = match info.kind() {
        MediaKind::Image => {
            let mut details = ImageInfo::new();
            details.mimetype = mimetype;
            details.size = size;
            details.width = info.width.map(UInt::from);
            details.height = info.height.map(UInt::from);
            let mut content = ImageMessageEventContent::plain(body, url).info(Box::new(details));
            content.filename = filename;
            content.formatted = formatted;
            MessageType::Image(content)
        }
        MediaKind::Video => {
            let mut details = VideoInfo::new();
            details.mimetype = mimetype;
            details.size = size;
            details.width = info.width.map(UInt::from);
            details.height = info.height.map(UInt::from);
            let mut content = VideoMessageEventContent::plain(body, url).info(Box::new(details));
            content.filename = filename;
            content.formatted = formatted;
            MessageType::Video(content)
        }
        MediaKind::Audio => {
            let mut details = AudioInfo::new();
            details.mimetype = mimetype;
            details.size = size;
            let mut content = AudioMessageEventContent::plain(body, url).info(Box::new(details));
            content.filename = filename;
            content.formatted = formatted;
            MessageType::Audio(content)
        }
        MediaKind::File => {
            let mut details = FileInfo::new();
            details.mimetype = mimetype;
            details.size = size;
            let mut content = FileMessageEventContent::plain(body, url).info(Box::new(details));
            content.filename = filename;
            content.formatted = formatted;
            MessageType::File(content)
        }
    };
    RoomMessageEventContent::new(msgtype)
}

/// The content as event JSON with the message id, if Matrix would take its size.
pub fn to_event(
    content: &RoomMessageEventContent,
    message_id: &MessageId,
) -> Result<serde_json::Value, Error> {
    tagged_event(content, message_id, None)
}

/// [`to_event`], with an edit's number when it is one.
fn tagged_event(
    content: &RoomMessageEventContent,
    message_id: &MessageId,
    edit: Option<u32>,
) -> Result<serde_json::Value, Error> {
    // Serialising strings and ids cannot fail; if it ever did, the event
    // could not be sent either.
    let mut content = serde_json::to_value(content)
        .map_err(|err| Error::Inconsistent(format!("message content: {err}")))?;
    content[MESSAGE_ID_KEY] = serde_json::Value::String(message_id.to_string());
    if let Some(edit) = edit {
        content[super::EDIT_KEY] = edit.into();
    }
    let size = serde_json::to_vec(&content).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_CONTENT {
        return Err(Error::EventTooLarge {
            size,
            max: MAX_CONTENT,
        });
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use ruma::events::room::message::Relation;
    use ruma::{event_id, mxc_uri};
    use serde_json::json;

    use super::*;
    use crate::matrix::carries_message;

    fn id() -> MessageId {
        "0190b8f0-0000-7000-8000-000000000001".parse().unwrap()
    }

    #[test]
    fn an_edit_is_a_spec_replacement_with_fallback_and_our_id() {
        let original = event_id!("$original:localhost");
        let content =
            edit_content(original, "new **text**", Some("new <b>text</b>"), &id(), 1).unwrap();
        assert_eq!(
            content,
            json!({
                "msgtype": "m.text",
                "body": "* new **text**",
                "format": "org.matrix.custom.html",
                "formatted_body": "* new <b>text</b>",
                "m.new_content": {
                    "msgtype": "m.text",
                    "body": "new **text**",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "new <b>text</b>",
                },
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$original:localhost"},
                MESSAGE_ID_KEY: "0190b8f0-0000-7000-8000-000000000001",
                crate::matrix::EDIT_KEY: 1,
            })
        );
        // ruma reads it back as the replacement it is.
        let parsed: RoomMessageEventContent = serde_json::from_value(content.clone()).unwrap();
        let Some(Relation::Replacement(replacement)) = parsed.relates_to else {
            panic!("not a replacement: {parsed:?}");
        };
        assert_eq!(replacement.event_id, original);
        assert_eq!(replacement.new_content.msgtype.body(), "new **text**");
        // The retry of the original send never mistakes the edit for it.
        assert!(!carries_message(&content, &id().to_string()));
    }

    #[test]
    fn a_plain_edit_has_no_html() {
        let content = edit_content(event_id!("$o:localhost"), "fixed", None, &id(), 1).unwrap();
        assert_eq!(content["body"], "* fixed");
        assert_eq!(
            content["m.new_content"],
            json!({"msgtype": "m.text", "body": "fixed"})
        );
        assert!(content.get("formatted_body").is_none());
    }

    #[test]
    fn an_edit_too_large_for_matrix_is_refused() {
        let body = "x".repeat(32 * 1024);
        // The body twice (fallback and new content): over 60 KiB.
        let err = edit_content(event_id!("$o:localhost"), &body, None, &id(), 1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::EventTooLarge {
                    max: MAX_CONTENT,
                    ..
                }
            ),
            "{err}"
        );
        let fits = "x".repeat(25 * 1024);
        assert!(edit_content(event_id!("$o:localhost"), &fits, None, &id(), 1).is_ok());
    }

    fn info(mimetype: &str, width: Option<u32>, height: Option<u32>) -> MediaInfo {
        MediaInfo {
            mimetype: mimetype.into(),
            size: 1234,
            width,
            height,
        }
    }

    #[test]
    fn an_image_is_m_image_with_its_size_and_dimensions() {
        let url = mxc_uri!("mxc://localhost/abc");
        let image = info("image/png", Some(640), Some(480));
        let content = media_content(&image, url, "cat.png", None, None, None, &id()).unwrap();
        assert_eq!(
            content,
            json!({
                "msgtype": "m.image",
                "body": "cat.png",
                "filename": "cat.png",
                "url": "mxc://localhost/abc",
                "info": {"mimetype": "image/png", "size": 1234, "w": 640, "h": 480},
                MESSAGE_ID_KEY: "0190b8f0-0000-7000-8000-000000000001",
            })
        );
        let parsed: RoomMessageEventContent = serde_json::from_value(content).unwrap();
        let MessageType::Image(image) = parsed.msgtype else {
            panic!("not an image: {parsed:?}");
        };
        assert_eq!(image.caption(), None, "the body is the file name");
    }

    #[test]
    fn a_caption_becomes_the_body() {
        let url = mxc_uri!("mxc://localhost/abc");
        let content = media_content(
            &info("image/jpeg", Some(1), Some(1)),
            url,
            "cat.jpg",
            Some("my cat"),
            None,
            None,
            &id(),
        )
        .unwrap();
        assert_eq!(content["body"], "my cat");
        assert_eq!(content["filename"], "cat.jpg");
        let parsed: RoomMessageEventContent = serde_json::from_value(content).unwrap();
        let MessageType::Image(image) = parsed.msgtype else {
            panic!("not an image");
        };
        assert_eq!(image.caption(), Some("my cat"));
        assert_eq!(image.filename(), "cat.jpg");
        // A blank caption is no caption.
        let content = media_content(
            &info("image/gif", Some(1), Some(1)),
            url,
            "a.gif",
            Some("  "),
            Some("<p>ignored</p>"),
            None,
            &id(),
        )
        .unwrap();
        assert_eq!(content["body"], "a.gif");
        assert!(
            content.get("formatted_body").is_none(),
            "no caption to format"
        );
    }

    #[test]
    fn a_formatted_caption_and_a_reply() {
        let original = event_id!("$original:localhost");
        let content = media_content(
            &info("application/pdf", None, None),
            mxc_uri!("mxc://localhost/f"),
            "minutes.pdf",
            Some("the **minutes**"),
            Some("the <strong>minutes</strong>"),
            Some(original),
            &id(),
        )
        .unwrap();
        assert_eq!(
            content,
            json!({
                "msgtype": "m.file",
                "body": "the **minutes**",
                "format": "org.matrix.custom.html",
                "formatted_body": "the <strong>minutes</strong>",
                "filename": "minutes.pdf",
                "url": "mxc://localhost/f",
                "info": {"mimetype": "application/pdf", "size": 1234},
                "m.relates_to": {"m.in_reply_to": {"event_id": "$original:localhost"}},
                MESSAGE_ID_KEY: "0190b8f0-0000-7000-8000-000000000001",
            })
        );
        let parsed: RoomMessageEventContent = serde_json::from_value(content).unwrap();
        assert!(matches!(parsed.relates_to, Some(Relation::Reply(_))));
        let MessageType::File(file) = parsed.msgtype else {
            panic!("not a file");
        };
        assert_eq!(
            file.formatted_caption().map(|f| f.body.as_str()),
            Some("the <strong>minutes</strong>")
        );
    }

    #[test]
    fn other_types_are_video_audio_or_file() {
        let url = mxc_uri!("mxc://localhost/f");
        let cases = [
            ("video/mp4", "m.video"),
            ("video/webm", "m.video"),
            ("audio/mpeg", "m.audio"),
            ("audio/ogg", "m.audio"),
            ("application/pdf", "m.file"),
            ("text/plain", "m.file"),
        ];
        for (mimetype, msgtype) in cases {
            let content = media_content(
                &info(mimetype, None, None),
                url,
                "f",
                None,
                None,
                None,
                &id(),
            )
            .unwrap();
            assert_eq!(content["msgtype"], msgtype, "{mimetype}");
            assert_eq!(
                content["info"],
                json!({"mimetype": mimetype, "size": 1234}),
                "{mimetype}"
            );
            assert_eq!(content["url"], "mxc://localhost/f");
            assert_eq!(content[MESSAGE_ID_KEY], id().to_string());
            assert!(carries_message(&content, &id().to_string()));
        }
    }

    #[test]
    fn a_caption_too_large_for_matrix_is_refused() {
        let caption = "x".repeat(61 * 1024);
        let err = media_content(
            &info("application/pdf", None, None),
            mxc_uri!("mxc://localhost/f"),
            "f.pdf",
            Some(&caption),
            None,
            None,
            &id(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::EventTooLarge { .. }), "{err}");
    }
}
