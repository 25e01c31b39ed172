//! Progress of one phase of a run: a bar on a terminal (indicatif), plain
//! lines otherwise (a log, CI), at most one every few seconds and one when
//! the phase ends.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::report::{Kind, Report};

/// How often a plain progress line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

pub struct Progress<'a> {
    kind: Kind,
    total: usize,
    done: AtomicUsize,
    report: &'a Report,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl<'a> Progress<'a> {
    /// Progress over `total` records of `kind`.
    pub fn start(kind: Kind, total: usize, report: &'a Report) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {pos}/{len} {per_sec} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(kind.plural());
            bar
        });
        let started = Instant::now();
        Self {
            kind,
            total,
            done: AtomicUsize::new(0),
            report,
            bar,
            started,
            last_line: Mutex::new(started),
        }
    }

    /// One more record is through.
    pub fn step(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let (_, skipped, failed) = self.report.counts(self.kind);
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("skipped {skipped}, failed {failed}"));
                bar.inc(1);
            }
            None => {
                let due = self
                    .last_line
                    .lock()
                    .map(|mut last| {
                        let due = last.elapsed() >= PLAIN_EVERY;
                        if due {
                            *last = Instant::now();
                        }
                        due
                    })
                    .unwrap_or(false);
                if due {
                    self.line(done);
                }
            }
        }
    }

    fn line(&self, done: usize) {
        let (_, skipped, failed) = self.report.counts(self.kind);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "bridgectl: {} {done}/{} (skipped {skipped}, failed {failed}) {:.1}/s",
            self.kind.plural(),
            self.total,
            done as f64 / seconds
        );
    }

    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => self.line(self.done.load(Ordering::Relaxed)),
        }
    }
}
