//! What a run did: per kind of record, how many were provisioned, skipped
//! (already provisioned) or failed, the failures with their reasons (written
//! as a JSON Lines file), and the closing summary with time and rate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The kinds of record an export has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    User,
    Conversation,
    Membership,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::User, Kind::Conversation, Kind::Membership];

    pub fn plural(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Conversation => "conversations",
            Kind::Membership => "memberships",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::User => 0,
            Kind::Conversation => 1,
            Kind::Membership => 2,
        }
    }
}

/// A record that could not be provisioned, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its line in the export file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub reason: String,
}

/// What became of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Provisioned now (or, in a dry run, would be).
    Done,
    /// Already provisioned: its mapping says so.
    Skipped,
    Failed,
}

#[derive(Default)]
struct Tally {
    done: AtomicUsize,
    skipped: AtomicUsize,
    failed: AtomicUsize,
}

/// Counts and failures of a run, shared by its tasks.
pub struct Report {
    tallies: [Tally; 3],
    failures: Mutex<Vec<Failure>>,
    started: Instant,
    dry_run: bool,
}

impl Report {
    pub fn new(dry_run: bool) -> Self {
        Self {
            tallies: Default::default(),
            failures: Mutex::new(Vec::new()),
            started: Instant::now(),
            dry_run,
        }
    }

    pub fn count(&self, kind: Kind, outcome: Outcome) {
        let tally = &self.tallies[kind.index()];
        let counter = match outcome {
            Outcome::Done => &tally.done,
            Outcome::Skipped => &tally.skipped,
            Outcome::Failed => &tally.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fail(&self, failure: Failure) {
        self.count(failure.kind, Outcome::Failed);
        if let Ok(mut failures) = self.failures.lock() {
            failures.push(failure);
        }
    }

    /// (done, skipped, failed) of a kind.
    pub fn counts(&self, kind: Kind) -> (usize, usize, usize) {
        let tally = &self.tallies[kind.index()];
        (
            tally.done.load(Ordering::Relaxed),
            tally.skipped.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed),
        )
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The closing summary, one line per kind, then time and rate.
    pub fn summary(&self, interrupted: bool) -> String {
        let verb = if self.dry_run {
            "would provision"
        } else {
            "provisioned"
        };
        let mut lines = Vec::new();
        let mut total = 0;
        for kind in Kind::ALL {
            let (done, skipped, failed) = self.counts(kind);
            total += done + skipped + failed;
            lines.push(format!(
                "  {:<14} {verb} {done}, already there {skipped}, failed {failed}",
                format!("{}:", kind.plural())
            ));
        }
        let seconds = self.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 {
            total as f64 / seconds
        } else {
            0.0
        };
        let state = match (interrupted, self.dry_run) {
            (true, _) => "interrupted (run again to resume)",
            (false, true) => "dry run finished (nothing was written)",
            (false, false) => "finished",
        };
        lines.insert(0, format!("bridgectl: {state} in {seconds:.1} s"));
        lines.push(format!("  {total} records, {rate:.1} per second"));
        lines.join("\n")
    }

    /// Writes the failures as JSON Lines.
    pub fn write_failures(&self, path: &std::path::Path) -> std::io::Result<usize> {
        let failures = self.failures();
        let mut text = String::new();
        for failure in &failures {
            text.push_str(&serde_json::to_string(failure).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        std::fs::write(path, text)?;
        Ok(failures.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_kind_and_the_failures_are_json_lines() {
        let report = Report::new(false);
        report.count(Kind::User, Outcome::Done);
        report.count(Kind::User, Outcome::Skipped);
        report.fail(Failure {
            kind: Kind::Conversation,
            id: Some("c1".into()),
            line: Some(3),
            reason: "a direct conversation has exactly two members, not 1".into(),
        });
        let summary = report.summary(false);
        assert!(
            summary.contains("users:         provisioned 1, already there 1, failed 0"),
            "{summary}"
        );
        assert!(
            summary.contains("conversations: provisioned 0, already there 0, failed 1"),
            "{summary}"
        );
        assert!(summary.contains("3 records"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failures.jsonl");
        assert_eq!(report.write_failures(&path).unwrap(), 1);
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(line["kind"], "conversation");
        assert_eq!(line["line"], 3);
    }
}
