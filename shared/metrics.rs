//! CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per
//! data point, which Lambda's log pipeline turns into metrics without an API
//! call (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//!
//! Each function's state holds a [`Metrics`] value naming the function (the
//! `Function` dimension): the deployed adapters write EMF, the in-memory
//! fakes nothing, so tests print nothing.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

const NAMESPACE: &str = "MatrixBridge";

/// Where one function's metrics go.
#[derive(Clone, Copy, Debug)]
pub struct Metrics {
    function: &'static str,
    emit: bool,
}

impl Metrics {
    /// Metrics of `function`, written to stdout as EMF.
    pub fn emf(function: &'static str) -> Self {
        Self {
            function,
            emit: true,
        }
    }

    /// Metrics of `function` that go nowhere.
    pub fn off(function: &'static str) -> Self {
        Self {
            function,
            emit: false,
        }
    }

    /// The function these metrics are about.
    pub fn function(&self) -> &'static str {
        self.function
    }

    /// Counts one occurrence of `counter`.
    pub fn count(&self, counter: Counter) {
        self.emit(&[(counter.name(), "Count", 1.0)]);
    }

    /// Counts `n` occurrences of each counter, in one data point (none for
    /// counters at zero).
    pub fn counts(&self, counters: &[(Counter, u32)]) {
        let points: Vec<(&str, &str, f64)> = counters
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(counter, n)| (counter.name(), "Count", f64::from(*n)))
            .collect();
        if !points.is_empty() {
            self.emit(&points);
        }
    }

    /// Records one API request: its latency, and whether it failed.
    pub fn request(&self, status: u16, elapsed: Duration) {
        self.emit(&[
            ("Requests", "Count", 1.0),
            ("Latency", "Milliseconds", elapsed.as_secs_f64() * 1000.0),
            (
                "ClientErrors",
                "Count",
                f64::from(u8::from((400..500).contains(&status))),
            ),
            ("ServerErrors", "Count", f64::from(u8::from(status >= 500))),
        ]);
    }

    /// Records one request to the homeserver: how long it took to answer
    /// (`MatrixLatency`), whatever the answer.
    pub fn matrix_call(&self, elapsed: Duration) {
        self.emit(&[
            ("MatrixRequests", "Count", 1.0),
            (
                "MatrixLatency",
                "Milliseconds",
                elapsed.as_secs_f64() * 1000.0,
            ),
        ]);
    }

    fn emit(&self, metrics: &[(&str, &str, f64)]) {
        if !self.emit {
            return;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or_default();
        let line = document(self.function, metrics, timestamp);
        let mut stdout = std::io::stdout().lock();
        // Metrics are best effort: a closed stdout must not fail a request.
        let _ = writeln!(stdout, "{line}");
    }
}

/// A counter of the bridge's own work.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    MessagesSent,
    MessagesQueued,
    MessagesFailed,
    IdempotentReplays,
    MessagesEdited,
    MessagesDeleted,
    /// Changes (edits, deletes) delivered by the retry function.
    ChangesDelivered,
    /// Stale pending operations the sweeper handed to the retry function.
    OperationsRequeued,
    /// Retry jobs handed back to the queue for a later attempt.
    RetriesHandedBack,
    RoomsCreated,
    PuppetsRegistered,
    /// Events from Matrix published to the application.
    InboundPublished,
    /// Appservice transactions answered as repeats, doing nothing.
    TransactionsRepeated,
    /// Events of a transaction that could not be read or mapped (recorded).
    InboundSkipped,
    /// Events the bridge does not pass on (its own, other types).
    InboundIgnored,
    /// Events in rooms the bridge does not know.
    InboundUnknownRoom,
    /// Deliveries of ours confirmed by their echo.
    EchoesConfirmed,
    /// Puppets a Matrix moderator kicked or banned.
    PuppetsRemoved,
    /// Reactions sent to Matrix (directly or on retry).
    ReactionsSent,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::MessagesSent => "MessagesSent",
            Counter::MessagesQueued => "MessagesQueued",
            Counter::MessagesFailed => "MessagesFailed",
            Counter::IdempotentReplays => "IdempotentReplays",
            Counter::MessagesEdited => "MessagesEdited",
            Counter::MessagesDeleted => "MessagesDeleted",
            Counter::ChangesDelivered => "ChangesDelivered",
            Counter::OperationsRequeued => "OperationsRequeued",
            Counter::RetriesHandedBack => "RetriesHandedBack",
            Counter::RoomsCreated => "RoomsCreated",
            Counter::PuppetsRegistered => "PuppetsRegistered",
            Counter::InboundPublished => "InboundPublished",
            Counter::TransactionsRepeated => "TransactionsRepeated",
            Counter::InboundSkipped => "InboundSkipped",
            Counter::InboundIgnored => "InboundIgnored",
            Counter::InboundUnknownRoom => "InboundUnknownRoom",
            Counter::EchoesConfirmed => "EchoesConfirmed",
            Counter::PuppetsRemoved => "PuppetsRemoved",
            Counter::ReactionsSent => "ReactionsSent",
        }
    }
}

/// One EMF document: the metric definitions under `_aws`, the values and the
/// `Function` dimension at the top level.
fn document(function: &str, metrics: &[(&str, &str, f64)], timestamp_ms: u64) -> serde_json::Value {
    let definitions: Vec<_> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Function"]], "Metrics": definitions}],
        },
        "Function": function,
    });
    for (name, _, value) in metrics {
        line[*name] = json!(value);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_follow_the_embedded_metric_format() {
        let doc = document(
            "send",
            &[
                ("Requests", "Count", 1.0),
                ("Latency", "Milliseconds", 12.5),
            ],
            1_700_000_000_000,
        );
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_000u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "MatrixBridge",
                        "Dimensions": [["Function"]],
                        "Metrics": [{"Name": "Requests", "Unit": "Count"}, {"Name": "Latency", "Unit": "Milliseconds"}],
                    }],
                },
                "Function": "send",
                "Requests": 1.0,
                "Latency": 12.5,
            })
        );
    }
}
