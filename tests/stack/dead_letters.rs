//! Dead-lettered retry jobs are moved back by `bridge-dev replay-dlq`, in
//! order per conversation: against fresh FIFO queues on the emulator.

use crate::client::unique;
use crate::support::{fresh_fifo_queue as fifo, sdk_config};

#[tokio::test]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn dead_letters_are_replayed_in_order_per_conversation() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let dlq = fifo(&sqs, &unique("dlq")).await;
    let retry = fifo(&sqs, &unique("retry")).await;
    for (group, body) in [("a", "a1"), ("b", "b1"), ("a", "a2")] {
        sqs.send_message()
            .queue_url(&dlq)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(body)
            .send()
            .await
            .unwrap();
    }
    let moved = bridge_dev::retry_poller::replay(&sqs, &dlq, &retry)
        .await
        .unwrap();
    assert_eq!(moved, 3);
    let mut bodies = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&retry)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            bodies.push(message.body.clone().unwrap());
            sqs.delete_message()
                .queue_url(&retry)
                .set_receipt_handle(message.receipt_handle)
                .send()
                .await
                .unwrap();
        }
    }
    let a: Vec<&str> = bodies
        .iter()
        .map(String::as_str)
        .filter(|b| b.starts_with('a'))
        .collect();
    assert_eq!(a, ["a1", "a2"], "a conversation's order kept: {bodies:?}");
    assert_eq!(bodies.len(), 3);
    let empty = bridge_dev::retry_poller::replay(&sqs, &dlq, &retry)
        .await
        .unwrap();
    assert_eq!(empty, 0, "the dead-letter queue is empty");
}
