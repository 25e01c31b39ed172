//! [`MediaStore`] on the in-memory state.

use super::MemoryStore;
use crate::ids::ConversationId;
use crate::model::{MediaId, MediaRecord};
use crate::store::{MediaStore, StoreError};

impl MediaStore for MemoryStore {
    async fn put_media(&self, media: &MediaRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = (media.conversation_id.clone(), media.media_id);
        if state.media.contains_key(&key) {
            return Err(StoreError::Rejected);
        }
        state.media.insert(key, media.clone());
        Ok(())
    }

    async fn media(
        &self,
        id: &ConversationId,
        media: MediaId,
    ) -> Result<Option<MediaRecord>, StoreError> {
        Ok(self.state().media.get(&(id.clone(), media)).cloned())
    }
}
