//! The suite's own moto: the stack's installed one (`.local/tools`), run
//! through the same server module as the stack's
//! (`tools/bridge-dev/moto/moto_server.py`, `bridge_dev::stack::MOTO_SERVER`:
//! DynamoDB requests one at a time, and moto's defects fixed that this
//! suite found: model instances kept for good, whole-table copies per
//! transaction, FIFO groups handed back out of order), started for a test
//! and killed after it. A process of the test's own returns its memory when
//! the test ends and leaves the stack's moto alone. What moto never does,
//! DynamoDB's optimistic concurrency (`TransactionConflict`), the suite's
//! proxy in front of it does (`Carry::DynamoDb`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's server, as the stack runs it.
const MOTO: &str = bridge_dev::stack::MOTO_SERVER;

/// A running moto of the test's own.
pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    /// Starts it on a free loopback port of the suite's range, logging to `log`, and waits until
    /// it answers.
    pub async fn start(log: &std::path::Path) -> Self {
        let python =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/tools/bin/python");
        let port = crate::harness::free_addr().port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(&python)
            .args(["-c", MOTO, "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("{}: {err} (scripts/stack up installs it)", python.display())
            });
        let emulator = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while !bridge_dev::stack::parts::http_ok(&format!("{}/moto-api/", emulator.url)) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the suite's moto did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        emulator
    }

    /// Its resident memory, in MiB.
    pub fn memory_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs the local stack's tools (moto in .local/tools): run make test"]
async fn the_suites_moto_hands_back_fifo_messages_in_order() {
    let dir = tempfile_dir();
    let emulator = Emulator::start(&dir.join("moto.log")).await;
    let sqs = aws_sdk_sqs::Client::new(&crate::support::sdk_at(&emulator.url).await);
    let queue = sqs
        .create_queue()
        .queue_name("order.fifo")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for body in ["A", "B", "C"] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .message_group_id("g")
            .message_deduplication_id(body)
            .send()
            .await
            .unwrap();
    }
    let receive = || async {
        sqs.receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .visibility_timeout(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.body)
            .collect::<Vec<_>>()
    };
    assert_eq!(receive().await, ["A", "B", "C"]);
    // Not deleted: handed back. Once visible again they come in order.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receive().await, ["A", "B", "C"]);
}

#[tokio::test]
#[ignore = "needs the local stack's tools (moto in .local/tools): run make test"]
async fn the_suites_moto_undoes_a_cancelled_transaction_and_only_it() {
    use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
    let dir = tempfile_dir();
    let emulator = Emulator::start(&dir.join("moto.log")).await;
    let sdk = crate::support::sdk_at(&emulator.url).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    bridge_dev::setup::create_table(&dynamo, "t").await.unwrap();
    let key = |sk: &str| {
        std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S("p".into())),
            ("sk".to_owned(), AttributeValue::S(sk.into())),
        ])
    };
    let with = |sk: &str, v: &str| {
        let mut item = key(sk);
        item.insert("v".into(), AttributeValue::N(v.into()));
        item
    };
    dynamo
        .put_item()
        .table_name("t")
        .set_item(Some(with("x", "1")))
        .send()
        .await
        .unwrap();
    let update = |v: &str| {
        TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name("t")
                    .set_key(Some(key("x")))
                    .update_expression("SET v = :v")
                    .expression_attribute_values(":v", AttributeValue::N(v.into()))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let put_y = TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name("t")
                .set_item(Some(with("y", "9")))
                .build()
                .unwrap(),
        )
        .build();
    let failing = TransactWriteItem::builder()
        .condition_check(
            ConditionCheck::builder()
                .table_name("t")
                .set_key(Some(key("z")))
                .condition_expression("attribute_exists(pk)")
                .build()
                .unwrap(),
        )
        .build();
    let cancelled = dynamo
        .transact_write_items()
        .transact_items(update("2"))
        .transact_items(put_y.clone())
        .transact_items(failing)
        .send()
        .await;
    assert!(cancelled.is_err(), "the condition fails");
    let v = |sk: &'static str| {
        let dynamo = dynamo.clone();
        async move {
            dynamo
                .get_item()
                .table_name("t")
                .set_key(Some(key(sk)))
                .send()
                .await
                .unwrap()
                .item
                .map(|item| item["v"].as_n().unwrap().clone())
        }
    };
    assert_eq!(
        (v("x").await.as_deref(), v("y").await),
        (Some("1"), None),
        "undone"
    );
    dynamo
        .transact_write_items()
        .transact_items(update("3"))
        .transact_items(put_y)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (v("x").await.as_deref(), v("y").await.as_deref()),
        (Some("3"), Some("9"))
    );
}

#[cfg(test)]
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("faults-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
