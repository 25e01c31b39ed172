//! One `SendMessageBatch` to an SQS FIFO queue, as the retry queue and the
//! inbound queue both send them: each message with its group (its
//! conversation) and its deduplication id.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::ports::BoxError;

/// The most entries a `SendMessageBatch` takes.
pub const BATCH: usize = 10;

/// A message for a FIFO queue.
pub struct FifoMessage {
    pub group: String,
    pub deduplication_id: String,
    pub body: String,
}

/// Sends up to [`BATCH`] messages in one request, in order (SQS keeps a
/// batch's order within each group). An error says how many were refused;
/// those taken stay taken.
pub async fn send_batch(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: Vec<FifoMessage>,
) -> Result<(), BoxError> {
    let count = messages.len();
    let entries = messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(message.body)
                .message_group_id(message.group)
                .message_deduplication_id(message.deduplication_id)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let output = client
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await?;
    match output.failed.first() {
        Some(failed) => Err(format!(
            "{} of {count} messages were refused ({})",
            output.failed.len(),
            failed.code
        )
        .into()),
        None => Ok(()),
    }
}
