//! [`MediaStore`] on the table: each upload in its conversation's
//! partition, under [`keys::media`], written once.

use super::DynamoStore;
use super::table::{Write, item};
use crate::ids::ConversationId;
use crate::model::{MediaId, MediaRecord};
use crate::store::keys;
use crate::store::{MediaStore, StoreError};

impl MediaStore for DynamoStore {
    async fn put_media(&self, media: &MediaRecord) -> Result<(), StoreError> {
        let key = keys::media(&media.conversation_id, media.media_id);
        self.table
            .write(Write::put(item(key, media)?).if_new())
            .await
    }

    async fn media(
        &self,
        id: &ConversationId,
        media: MediaId,
    ) -> Result<Option<MediaRecord>, StoreError> {
        self.table.get(keys::media(id, media)).await
    }
}
