//! The media capability: files members uploaded into a conversation, so a
//! send can attach one (and only its uploader may).

use std::future::Future;

use super::StoreError;
use crate::ids::ConversationId;
use crate::model::{MediaId, MediaRecord};

/// Uploaded media, by conversation and id.
pub trait MediaStore: Send + Sync {
    /// Records an upload under its conversation and id; `Rejected` if the
    /// id was recorded before.
    fn put_media(&self, media: &MediaRecord)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A file uploaded into `id`; `None` for an unknown id, or one of
    /// another conversation.
    fn media(
        &self,
        id: &ConversationId,
        media: MediaId,
    ) -> impl Future<Output = Result<Option<MediaRecord>, StoreError>> + Send;
}
