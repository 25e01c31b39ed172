//! What an `m.room.message` from Matrix says, in the bridge's terms: its
//! text (and the sanitised HTML of a formatted body), its kind, the file it
//! carries (an mxc URL with what the event says of it), and the event it
//! replies to or edits.
//!
//! <https://spec.matrix.org/v1.16/client-server-api/#mroommessage-msgtypes>

use ruma::events::room::MediaSource;
use ruma::events::room::message::{
    FormattedBody, MessageFormat, MessageType, Relation, RoomMessageEventContent,
    RoomMessageEventContentWithoutRelation,
};
use ruma::{OwnedEventId, UInt};

use crate::markdown;
use crate::model::{MatrixFile, Mentioned, Mentions, MsgType};

/// A message's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    pub body: String,
    pub html: Option<String>,
    /// `None` for text (and kinds the bridge shows as text).
    pub msgtype: Option<MsgType>,
    pub file: Option<MatrixFile>,
    /// Whom it mentions (`m.mentions`), by Matrix ids only.
    pub mentions: Option<Mentions>,
}

/// What an `m.room.message` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Posted {
    /// A new message, maybe a reply.
    New {
        content: Content,
        reply_to: Option<OwnedEventId>,
        /// The root event of the thread it is in.
        thread: Option<OwnedEventId>,
    },
    /// An edit (`m.replace`) of `target`.
    Edit {
        target: OwnedEventId,
        content: Content,
    },
}

/// Reads a message; `Err` (why) for one the bridge cannot pass on.
pub fn read(content: RoomMessageEventContent) -> Result<Posted, String> {
    let mentions = content.mentions.as_ref().map(mentions);
    let mut posted = read_relation(content)?;
    if let Posted::New { content, .. } = &mut posted {
        content.mentions = mentions;
    }
    Ok(posted)
}

/// A message by its relation: new (maybe a reply, maybe in a thread), or
/// an edit (whose mentions are those of its new content).
fn read_relation(content: RoomMessageEventContent) -> Result<Posted, String> {
    match content.relates_to {
        Some(Relation::Replacement(replacement)) => Ok(Posted::Edit {
            target: replacement.event_id,
            content: read_new_content(replacement.new_content)?,
        }),
        Some(Relation::Reply(reply)) => {
            let mut read = of(content.msgtype)?;
            read.body = strip_reply_fallback(&read.body);
            Ok(Posted::New {
                content: read,
                reply_to: Some(reply.in_reply_to.event_id),
                thread: None,
            })
        }
        // In a thread: a real reply within it names the event it answers;
        // the fallback (`is_falling_back`) is no reply.
        Some(Relation::Thread(thread)) => {
            let mut read = of(content.msgtype)?;
            if !thread.is_falling_back && thread.in_reply_to.is_some() {
                read.body = strip_reply_fallback(&read.body);
            }
            Ok(Posted::New {
                content: read,
                reply_to: thread
                    .in_reply_to
                    .filter(|_| !thread.is_falling_back)
                    .map(|reply| reply.event_id),
                thread: Some(thread.event_id),
            })
        }
        _ => Ok(Posted::New {
            content: of(content.msgtype)?,
            reply_to: None,
            thread: None,
        }),
    }
}

fn read_new_content(new: RoomMessageEventContentWithoutRelation) -> Result<Content, String> {
    let mut content = of(new.msgtype)?;
    content.mentions = new.mentions.as_ref().map(mentions);
    Ok(content)
}

/// `m.mentions`, by Matrix ids.
fn mentions(mentions: &ruma::events::Mentions) -> Mentions {
    Mentions {
        users: mentions
            .user_ids
            .iter()
            .map(|user| Mentioned {
                matrix_user_id: user.clone(),
                user_id: None,
            })
            .collect(),
        room: mentions.room,
    }
}

/// [`Details`] from a file message's `info` (ruma has a type per kind,
/// with the same field names); `sized` for those with a width and height.
macro_rules! details {
    ($info:expr) => {{
        let info = $info.as_deref();
        Details {
            mimetype: info.and_then(|i| i.mimetype.clone()),
            size: info.and_then(|i| i.size),
            width: None,
            height: None,
        }
    }};
    ($info:expr, sized) => {{
        let info = $info.as_deref();
        Details {
            width: info.and_then(|i| i.width),
            height: info.and_then(|i| i.height),
            ..details!($info)
        }
    }};
}

/// The content of a message type.
fn of(msgtype: MessageType) -> Result<Content, String> {
    let text = |body: String, formatted: Option<FormattedBody>, msgtype| Content {
        html: html(formatted.as_ref()),
        body,
        msgtype,
        file: None,
        mentions: None,
    };
    Ok(match msgtype {
        MessageType::Text(text_content) => text(text_content.body, text_content.formatted, None),
        MessageType::Notice(notice) => text(notice.body, notice.formatted, Some(MsgType::Notice)),
        MessageType::Emote(emote) => text(emote.body, emote.formatted, Some(MsgType::Emote)),
        MessageType::Image(m) => {
            let details = details!(m.info, sized);
            media(
                MsgType::Image,
                m.body,
                m.formatted,
                &m.source,
                m.filename,
                details,
            )?
        }
        MessageType::Video(m) => {
            let details = details!(m.info, sized);
            media(
                MsgType::Video,
                m.body,
                m.formatted,
                &m.source,
                m.filename,
                details,
            )?
        }
        MessageType::Audio(m) => {
            let details = details!(m.info);
            media(
                MsgType::Audio,
                m.body,
                m.formatted,
                &m.source,
                m.filename,
                details,
            )?
        }
        MessageType::File(m) => {
            let details = details!(m.info);
            media(
                MsgType::File,
                m.body,
                m.formatted,
                &m.source,
                m.filename,
                details,
            )?
        }
        // Locations, server notices and kinds the bridge does not know are
        // shown by their text, as the spec asks of clients.
        other => Content {
            body: other.body().to_owned(),
            html: None,
            msgtype: None,
            file: None,
            mentions: None,
        },
    })
}

/// What a file's event says about it.
struct Details {
    mimetype: Option<String>,
    size: Option<UInt>,
    width: Option<UInt>,
    height: Option<UInt>,
}

/// A file message: its body (a caption, or the file's name), and the file
/// at its mxc URL. Encrypted media cannot be passed on.
fn media(
    kind: MsgType,
    body: String,
    formatted: Option<FormattedBody>,
    source: &MediaSource,
    filename: Option<String>,
    details: Details,
) -> Result<Content, String> {
    let MediaSource::Plain(uri) = source else {
        return Err("encrypted media is not bridged".into());
    };
    if !uri.is_valid() {
        return Err(format!("'{uri}' is not an mxc URI"));
    }
    let file = MatrixFile {
        content_uri: uri.clone(),
        filename: filename
            .or_else(|| Some(body.clone()))
            .filter(|name| !name.is_empty()),
        mimetype: details.mimetype,
        size: details.size.map(u64::from),
        width: details.width.map(u64::from),
        height: details.height.map(u64::from),
    };
    Ok(Content {
        html: html(formatted.as_ref()),
        body,
        msgtype: Some(kind),
        file: Some(file),
        mentions: None,
    })
}

/// The sanitised HTML of a formatted body (only `org.matrix.custom.html`).
fn html(formatted: Option<&FormattedBody>) -> Option<String> {
    formatted
        .filter(|formatted| formatted.format == MessageFormat::Html)
        .and_then(|formatted| markdown::sanitize(&formatted.body))
}

/// A reply's body without the quoted fallback clients used to put first
/// (`> <@user> quoted` lines, then a blank line).
fn strip_reply_fallback(body: &str) -> String {
    if !body.starts_with("> ") {
        return body.to_owned();
    }
    let mut lines = body.lines().skip_while(|line| line.starts_with("> "));
    match lines.next() {
        Some("") => lines.collect::<Vec<_>>().join("\n"),
        _ => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(content: serde_json::Value) -> Result<Posted, String> {
        read(serde_json::from_value(content).unwrap())
    }

    #[test]
    fn formatted_text_keeps_sanitised_html() {
        let posted = parse(json!({
            "msgtype": "m.text", "body": "**hi**",
            "format": "org.matrix.custom.html",
            "formatted_body": "<strong>hi</strong><script>x</script>",
        }));
        assert_eq!(
            posted,
            Ok(Posted::New {
                content: Content {
                    body: "**hi**".into(),
                    html: Some("<strong>hi</strong>".into()),
                    msgtype: None,
                    file: None,
                    mentions: None,
                },
                reply_to: None,
                thread: None,
            })
        );
    }

    #[test]
    fn thread_messages_name_their_root_and_a_fallback_is_no_reply() {
        let in_thread = |falling_back: bool| {
            parse(json!({
                "msgtype": "m.text", "body": "me too",
                "m.relates_to": {
                    "rel_type": "m.thread", "event_id": "$root",
                    "is_falling_back": falling_back,
                    "m.in_reply_to": {"event_id": "$latest"},
                },
            }))
        };
        let Ok(Posted::New {
            reply_to, thread, ..
        }) = in_thread(true)
        else {
            panic!("a new message")
        };
        assert_eq!(thread.as_deref().map(|e| e.as_str()), Some("$root"));
        assert_eq!(
            reply_to, None,
            "the fallback is for clients without threads"
        );
        let Ok(Posted::New {
            reply_to, thread, ..
        }) = in_thread(false)
        else {
            panic!("a new message")
        };
        assert_eq!(thread.as_deref().map(|e| e.as_str()), Some("$root"));
        assert_eq!(reply_to.as_deref().map(|e| e.as_str()), Some("$latest"));
    }

    #[test]
    fn replies_lose_their_fallback_and_name_their_event() {
        let posted = parse(json!({
            "msgtype": "m.text", "body": "> <@a:x> original\n> more\n\nmy answer",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$orig"}},
        }))
        .unwrap();
        let Posted::New {
            content, reply_to, ..
        } = posted
        else {
            panic!("a new message")
        };
        assert_eq!(content.body, "my answer");
        assert_eq!(reply_to.unwrap().as_str(), "$orig");
        assert_eq!(
            strip_reply_fallback("> quote without end"),
            "> quote without end"
        );
    }

    #[test]
    fn edits_carry_the_new_content() {
        let posted = parse(json!({
            "msgtype": "m.text", "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
        }))
        .unwrap();
        let Posted::Edit { target, content } = posted else {
            panic!("an edit")
        };
        assert_eq!(target.as_str(), "$orig");
        assert_eq!(content.body, "fixed");
    }

    #[test]
    fn media_keeps_its_url_and_info() {
        let posted = parse(json!({
            "msgtype": "m.image", "body": "cat.png", "url": "mxc://localhost/abc",
            "info": {"mimetype": "image/png", "size": 123, "w": 4, "h": 3},
        }))
        .unwrap();
        let Posted::New { content, .. } = posted else {
            panic!("a new message")
        };
        assert_eq!(content.msgtype, Some(MsgType::Image));
        let file = content.file.unwrap();
        assert_eq!(file.content_uri.as_str(), "mxc://localhost/abc");
        assert_eq!(file.filename.as_deref(), Some("cat.png"));
        assert_eq!(
            (file.size, file.width, file.height),
            (Some(123), Some(4), Some(3))
        );
        let encrypted = parse(json!({
            "msgtype": "m.file", "body": "f",
            "file": {
                "url": "mxc://localhost/e", "v": "v2", "iv": "X85+XgHN+HEAAAAAAAAAAA",
                "key": {"kty": "oct", "key_ops": ["encrypt", "decrypt"], "alg": "A256CTR", "ext": true, "k": "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA"},
                "hashes": {"sha256": "5qG4fFnbbVdlAB1Q72JDKwCagV6Dbkx9uds4rSak37c"},
            },
        }));
        assert_eq!(encrypted, Err("encrypted media is not bridged".into()));
    }

    #[test]
    fn notices_and_emotes_keep_their_kind_and_unknown_kinds_their_text() {
        let notice = parse(json!({"msgtype": "m.notice", "body": "n"})).unwrap();
        assert!(matches!(
            notice,
            Posted::New {
                content: Content {
                    msgtype: Some(MsgType::Notice),
                    ..
                },
                ..
            }
        ));
        let emote = parse(json!({"msgtype": "m.emote", "body": "waves"})).unwrap();
        assert!(matches!(
            emote,
            Posted::New {
                content: Content {
                    msgtype: Some(MsgType::Emote),
                    ..
                },
                ..
            }
        ));
        let custom = parse(json!({"msgtype": "org.example.poll", "body": "a poll"})).unwrap();
        assert!(
            matches!(custom, Posted::New { content: Content { msgtype: None, ref body, .. }, .. } if body == "a poll")
        );
    }
}
