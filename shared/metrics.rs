//! CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per
//! data point, which Lambda's log pipeline turns into metrics without an API
//! call (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//!
//! Off unless [`enable`] was called (by the function runtimes), so tests and
//! tools print nothing.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::api::Function;

const NAMESPACE: &str = "MatrixBridge";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns metric output on for this process.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// A counter of the bridge's own work.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    MessagesSent,
    MessagesQueued,
    MessagesFailed,
    IdempotentReplays,
    RoomsCreated,
    PuppetsRegistered,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::MessagesSent => "MessagesSent",
            Counter::MessagesQueued => "MessagesQueued",
            Counter::MessagesFailed => "MessagesFailed",
            Counter::IdempotentReplays => "IdempotentReplays",
            Counter::RoomsCreated => "RoomsCreated",
            Counter::PuppetsRegistered => "PuppetsRegistered",
        }
    }
}

fn emit(function: Function, metrics: &[(&str, &str, f64)]) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default();
    let definitions: Vec<_> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Function"]], "Metrics": definitions}],
        },
        "Function": function.name(),
    });
    for (name, _, value) in metrics {
        line[*name] = json!(value);
    }
    let mut stdout = std::io::stdout().lock();
    // Metrics are best effort: a closed stdout must not fail a request.
    let _ = writeln!(stdout, "{line}");
}

/// Counts one occurrence of `counter`.
pub fn count(function: Function, counter: Counter) {
    emit(function, &[(counter.name(), "Count", 1.0)]);
}

/// Records one API request: its latency, and whether it failed.
pub fn emit_request(function: Function, status: u16, elapsed: Duration) {
    emit(
        function,
        &[
            ("Requests", "Count", 1.0),
            ("Latency", "Milliseconds", elapsed.as_secs_f64() * 1000.0),
            (
                "ClientErrors",
                "Count",
                f64::from(u8::from((400..500).contains(&status))),
            ),
            ("ServerErrors", "Count", f64::from(u8::from(status >= 500))),
        ],
    );
}
