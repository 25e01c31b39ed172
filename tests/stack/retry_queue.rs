//! The retry queue's SQS adapter on the emulator: a sweep's jobs go ten to
//! a request, each conversation's in order, and queueing the same jobs
//! again within SQS's deduplication window adds none.

use bridge::ids::ConversationId;
use bridge::model::MessageId;
use bridge::queue::{RetryJob, RetryQueue, SqsRetryQueue};

use crate::client::unique;
use crate::support::{fresh_fifo_queue, sdk_config};

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn jobs_queued_together_arrive_in_order_per_conversation_once() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let url = fresh_fifo_queue(&sqs, &unique("sweep")).await;
    let queue = SqsRetryQueue::new(sqs.clone(), url.clone());
    let (a, b) = (
        ConversationId::parse(unique("a")).unwrap(),
        ConversationId::parse(unique("b")).unwrap(),
    );
    // 23 jobs, three requests' worth, the two conversations interleaved.
    let jobs: Vec<RetryJob> = (0..23)
        .map(|n| {
            RetryJob::send(
                if n % 3 == 0 { b.clone() } else { a.clone() },
                MessageId::new(),
            )
        })
        .collect();
    queue.enqueue_all(&jobs).await.unwrap();
    queue.enqueue_all(&jobs).await.unwrap();

    let mut received = Vec::new();
    for _ in 0..20 {
        let batch =
            bridge_dev::retry_poller::receive_batch(&sqs, &url, std::time::Duration::from_secs(30))
                .await
                .unwrap();
        if batch.is_empty() && received.len() >= jobs.len() {
            break;
        }
        for message in batch {
            received.push(serde_json::from_str::<RetryJob>(message.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(&url)
                .set_receipt_handle(message.receipt_handle)
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(received.len(), jobs.len(), "each job once: {received:?}");
    for conversation in [&a, &b] {
        let of = |jobs: &[RetryJob]| -> Vec<MessageId> {
            jobs.iter()
                .filter(|job| &job.conversation_id == conversation)
                .map(|job| job.message_id)
                .collect()
        };
        assert_eq!(of(&received), of(&jobs), "{conversation} in order");
    }
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
}
