//! Feeds the retry queue to the retry function the way Lambda's SQS event
//! source mapping does: receive a batch with its FIFO attributes, hand it to
//! the handler as an `SqsEvent`, delete what the handler did not report as
//! failed, and leave the rest to come back after their visibility timeout.

use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use bridge::function::QueueFunction;
use bridge::runtime::BoxError;

/// What one round of polling did.
#[derive(Debug, Default)]
pub struct Drained {
    /// The bodies of the jobs received, in order.
    pub jobs: Vec<String>,
    /// How many the handler handed back for later.
    pub handed_back: usize,
}

/// Receives one batch (waiting up to a second) and runs it through
/// `function`. Handed-back jobs are hidden for `hold` before they can come back.
pub async fn drain_once(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    function: &dyn QueueFunction,
    hold: Duration,
) -> Result<Drained, BoxError> {
    let messages = receive_batch(sqs, queue_url, hold).await?;
    if messages.is_empty() {
        return Ok(Drained::default());
    }
    let response = function.call(sqs_event(&messages)).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let done: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter(|(_, message)| !failed.contains(&message.message_id.as_deref().unwrap_or_default()))
        .filter_map(|(index, message)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .set_receipt_handle(message.receipt_handle.clone())
                .build()
                .ok()
        })
        .collect();
    if !done.is_empty() {
        sqs.delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(done))
            .send()
            .await?;
    }
    Ok(Drained {
        jobs: messages.iter().filter_map(|m| m.body.clone()).collect(),
        handed_back: failed.len(),
    })
}

/// Receives a batch of up to 10 messages with their system attributes
/// (their FIFO group, when SQS took them, how often they were received),
/// waiting up to a second, each hidden for `hold`.
pub async fn receive_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    hold: Duration,
) -> Result<Vec<aws_sdk_sqs::types::Message>, BoxError> {
    let received = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .visibility_timeout(i32::try_from(hold.as_secs()).unwrap_or(30).max(1))
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await?;
    Ok(received.messages.unwrap_or_default())
}

/// The event Lambda hands a function for a batch of received messages.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|message| {
            let mut record = SqsMessage::default();
            record.message_id = message.message_id.clone();
            record.receipt_handle = message.receipt_handle.clone();
            record.body = message.body.clone();
            record.event_source = Some("aws:sqs".into());
            record.attributes = message
                .attributes
                .iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect();
            record
        })
        .collect();
    event
}

/// Moves every message of the FIFO queue `from` (a dead-letter queue) to the
/// FIFO queue `to`, keeping each message's group (and so its order within
/// the group); returns how many moved. A message is deleted from `from`
/// only after `to` took it.
pub async fn replay(sqs: &aws_sdk_sqs::Client, from: &str, to: &str) -> Result<usize, BoxError> {
    let mut moved = 0;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(from)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        for message in messages {
            let group = message
                .attributes
                .as_ref()
                .and_then(|attributes| attributes.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned()
                .ok_or("a dead-lettered job without its group")?;
            sqs.send_message()
                .queue_url(to)
                .set_message_body(message.body.clone())
                .message_group_id(group)
                .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string())
                .send()
                .await?;
            sqs.delete_message()
                .queue_url(from)
                .set_receipt_handle(message.receipt_handle.clone())
                .send()
                .await?;
            moved += 1;
        }
    }
}
