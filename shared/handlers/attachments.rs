//! A send's `attachments`: the uploads (see the `media` function) a message
//! refers to by `media_id`, checked and copied onto the message, so that a
//! later retry sends the very same file.
//!
//! A Matrix event carries one file, so a message has at most one. A
//! `media_id` must have been uploaded into the same conversation, and only
//! its uploader may attach it: an upload is not shared by knowing its id.

use ruma::UserId;
use serde::Deserialize;

use crate::api::{ApiError, ApiRequest};
use crate::ids::{AppUserId, ConversationId};
use crate::model::{Attachment, MediaId};
use crate::store::Store;

/// The most attachments a message has: Matrix events carry one file.
pub const MAX_ATTACHMENTS: usize = 1;

/// An attachment as a send names it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRef {
    pub media_id: MediaId,
}

/// The attachments `wanted` by `user` (whose puppet is `sender`) for a
/// message of conversation `id`: `400` for more than one or an unknown
/// `media_id` (one of another conversation is unknown here), `403` for
/// another user's upload; the sender's membership is checked before either
/// answer, so a stranger learns nothing.
pub async fn resolve<S: Store>(
    store: &S,
    request: &ApiRequest,
    user: &AppUserId,
    sender: &UserId,
    id: &ConversationId,
    wanted: &[AttachmentRef],
) -> Result<Vec<Attachment>, ApiError> {
    if wanted.len() > MAX_ATTACHMENTS {
        return Err(ApiError::InvalidRequest(format!(
            "attachments: at most {MAX_ATTACHMENTS} per message (a Matrix event carries one \
             file); send one message per file"
        )));
    }
    let mut attachments = Vec::with_capacity(wanted.len());
    for AttachmentRef { media_id } in wanted {
        let media = store.media(id, *media_id).await?;
        if media.as_ref().is_none_or(|media| media.uploader != *user)
            && store.member(id, sender).await?.is_none()
        {
            return Err(request.caller.not_a_member(user, id));
        }
        match media {
            None => {
                return Err(ApiError::InvalidRequest(format!(
                    "attachments: no media '{media_id}' was uploaded to this conversation"
                )));
            }
            Some(media) if media.uploader != *user => {
                return Err(ApiError::Forbidden(format!(
                    "attachments: media '{media_id}' was uploaded by another user; only its \
                     uploader may attach it"
                )));
            }
            Some(media) => attachments.push(Attachment::from(&media)),
        }
    }
    Ok(attachments)
}
