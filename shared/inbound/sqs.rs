//! [`InboundQueue`] on an SQS FIFO queue: `SendMessageBatch`es of up to ten
//! events within [`MAX_BODY`], one after the other within a conversation (so
//! its events keep their order), all conversations at once.

use super::{InboundError, InboundEvent, InboundQueue, MAX_BODY};
use crate::fifo::{BATCH, FifoMessage, send_batch};

#[derive(Clone, Debug)]
pub struct SqsInboundQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsInboundQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// One conversation's events, batch after batch. When a batch is
    /// refused, the whole transaction is tried again; the events that went
    /// through are deduplicated by SQS.
    async fn publish_group(&self, events: Vec<&InboundEvent>) -> Result<(), InboundError> {
        for batch in batches(&events) {
            let messages = batch
                .into_iter()
                .map(|(event, body)| FifoMessage {
                    group: event.conversation_id.as_str().to_owned(),
                    deduplication_id: event.deduplication_id.clone(),
                    body,
                })
                .collect();
            send_batch(&self.client, &self.queue_url, messages)
                .await
                .map_err(InboundError::new)?;
        }
        Ok(())
    }
}

/// `events` with their bodies, cut into batches SQS takes.
fn batches<'a>(events: &[&'a InboundEvent]) -> Vec<Vec<(&'a InboundEvent, String)>> {
    let mut batches: Vec<Vec<(&InboundEvent, String)>> = Vec::new();
    let mut size = 0;
    for event in events {
        let body = event.to_json();
        let full = batches
            .last()
            .is_none_or(|batch| batch.len() == BATCH || size + body.len() > MAX_BODY);
        if full {
            batches.push(Vec::new());
            size = 0;
        }
        size += body.len();
        if let Some(batch) = batches.last_mut() {
            batch.push((event, body));
        }
    }
    batches
}

impl InboundQueue for SqsInboundQueue {
    async fn publish(&self, events: &[InboundEvent]) -> Result<(), InboundError> {
        let mut groups: Vec<Vec<&InboundEvent>> = Vec::new();
        for event in events {
            match groups
                .iter_mut()
                .find(|group| group[0].conversation_id == event.conversation_id)
            {
                Some(group) => group.push(event),
                None => groups.push(vec![event]),
            }
        }
        futures::future::try_join_all(groups.into_iter().map(|group| self.publish_group(group)))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::ids::ConversationId;
    use crate::inbound::EventKind;

    fn event(body: usize) -> InboundEvent {
        let mut event = InboundEvent::new(
            EventKind::MessageCreated,
            ConversationId::parse("c").unwrap(),
            OffsetDateTime::UNIX_EPOCH,
            &["$x"],
        );
        event.body = Some("x".repeat(body));
        event
    }

    #[test]
    fn batches_hold_ten_events_within_the_size_limit() {
        let small: Vec<InboundEvent> = (0..25).map(|_| event(10)).collect();
        let refs: Vec<&InboundEvent> = small.iter().collect();
        let sizes: Vec<usize> = batches(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let large: Vec<InboundEvent> = (0..5).map(|_| event(100 * 1024)).collect();
        let refs: Vec<&InboundEvent> = large.iter().collect();
        let sizes: Vec<usize> = batches(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }
}
