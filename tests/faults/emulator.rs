//! The suite's own moto (the stack's installed one, `.local/tools`), started
//! for a test and killed after it, with two defects of moto's fixed at
//! start-up (nothing else changes):
//!
//! - **memory**: moto's models record every instance they make in a
//!   class-wide list only a reset clears, and `TransactWriteItems`
//!   deep-copies the whole table (once per item of the transaction) to roll
//!   back with, so every transaction keeps a copy of the table alive for
//!   good. The bridge writes with transactions: under load the emulator
//!   grows by gigabytes and slows down (the stack's moto reached 18 GB after
//!   a few runs). Here the recording is off (only a reset reads it).
//! - **FIFO order**: when several in-flight messages of one group become
//!   visible again (handed back, their visibility timeout over), moto
//!   releases them one by one while checking whether the group is still in
//!   flight, so it delivers the *last* of them first (sent A, B, C; received
//!   and not deleted; then received again: moto answers `[C]`, SQS `[A, B,
//!   C]`). Here a message whose visibility is over is no longer in flight
//!   before any group is checked.
//!
//! A process of the test's own also returns its memory when the test ends
//! and leaves the stack's moto alone. DynamoDB requests still go one at a
//! time (`Carry::DynamoDbOneAtATime`), for moto's third defect.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts moto's server with the two fixes.
const MOTO: &str = r#"
import sys
import moto.core.common_models as models
import moto.sqs.models as sqs

def _untracked(cls, *args, **kwargs):
    return super(models.BaseModel, cls).__new__(cls)

models.BaseModel.__new__ = staticmethod(_untracked)

def _in_flight(self):
    self._pending_messages -= {m for m in self._pending_messages if m.visible}
    return self._pending_messages

sqs.Queue.pending_messages = property(_in_flight)
sqs.Queue.pending_message_groups = property(
    lambda self: {m.group_id for m in self.pending_messages if m.group_id is not None}
)
from moto.server import main
main(sys.argv[1:])
"#;

/// A running moto of the test's own.
pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    /// Starts it on a free loopback port, logging to `log`, and waits until
    /// it answers.
    pub async fn start(log: &std::path::Path) -> Self {
        let python =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/tools/bin/python");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
    let sqs = aws_sdk_sqs::Client::new(&crate::harness::sdk_at(&emulator.url).await);
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

#[cfg(test)]
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("faults-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
