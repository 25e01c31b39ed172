//! `bridgectl`: the bulk cutover's command line.
//!
//! ```text
//! bridgectl run --users FILE --conversations FILE [--members FILE]
//!               [--concurrency N] [--dry-run] [--failures FILE]
//! bridgectl verify --users FILE --conversations FILE [--members FILE] [--concurrency N]
//! bridgectl sample --users N --conversations N --out DIR [--prefix P]
//! ```
//!
//! It reads the same settings as the functions (`MATRIX_HOMESERVER_URL`,
//! `MATRIX_SERVER_NAME`, `MATRIX_AS_TOKEN`, `BRIDGE_TABLE`,
//! `BRIDGE_RETRY_QUEUE_URL`, the AWS ones). Exit status: 0 when all went
//! well, 1 with failures or differences, 2 for a usage error, 130 when
//! interrupted (Ctrl-C lets the records under way finish; run again to
//! resume; a second Ctrl-C stops at once).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bridge::handlers::provision;
use bridge::metrics::Metrics;
use bridge::runtime::{Adapters, InitError};
use bridgectl::input::{Export, Files};
use bridgectl::report::Report;
use bridgectl::run::{Options, Run};
use bridgectl::sample::Sample;
use bridgectl::verify::Verify;

const USAGE: &str = "usage: bridgectl run --users FILE --conversations FILE [--members FILE] [--concurrency N] [--dry-run] [--failures FILE]
       bridgectl verify --users FILE --conversations FILE [--members FILE] [--concurrency N]
       bridgectl sample --users N --conversations N --out DIR [--prefix P]";

/// The arguments: `--name value` pairs and `--flag`s.
struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        let at = self.0.iter().position(|arg| arg == name)?;
        self.0.get(at + 1).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|arg| arg == name)
    }

    fn required(&self, name: &str) -> Result<&str, InitError> {
        self.value(name)
            .ok_or_else(|| InitError::from(format!("{name} is required\n{USAGE}")))
    }

    fn number(&self, name: &str, default: usize) -> Result<usize, InitError> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => {
                text.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    InitError::from(format!("{name} must be a whole number above 0"))
                })
            }
        }
    }

    fn files(&self) -> Result<(PathBuf, PathBuf, Option<PathBuf>), InitError> {
        Ok((
            PathBuf::from(self.required("--users")?),
            PathBuf::from(self.required("--conversations")?),
            self.value("--members").map(PathBuf::from),
        ))
    }
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = Args(args[1..].to_vec());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bridgectl: error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let done = match command.as_str() {
        "run" => runtime.block_on(run(&args)),
        "verify" => runtime.block_on(verify(&args)),
        "sample" => sample(&args),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match done {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bridgectl: error: {err:?}");
            ExitCode::FAILURE
        }
    }
}

fn read_export(args: &Args) -> Result<Export, InitError> {
    let (users, conversations, members) = args.files()?;
    Ok(Export::read(&Files {
        users: &users,
        conversations: &conversations,
        memberships: members.as_deref(),
    })?)
}

/// Ctrl-C once: no new record starts. Twice: out at once.
fn stop_on_interrupt() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "bridgectl: interrupted; finishing the records under way (Ctrl-C again to stop now)"
            );
            flag.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    stop
}

async fn run(args: &Args) -> Result<ExitCode, InitError> {
    let export = read_export(args)?;
    let options = Options {
        concurrency: args.number("--concurrency", 8)?,
        dry_run: args.flag("--dry-run"),
    };
    let failures_file = PathBuf::from(
        args.value("--failures")
            .unwrap_or("bridgectl-failures.jsonl"),
    );
    let service = provision::from_ports(&Adapters::from_env(), Metrics::off("bridgectl")).await?;
    let report = Report::new(options.dry_run);
    let stop = stop_on_interrupt();
    eprintln!(
        "bridgectl: {} users, {} conversations, {} memberships, {} at a time{}",
        export.users.len(),
        export.conversations.len(),
        export.memberships.len(),
        options.concurrency,
        if options.dry_run { " (dry run)" } else { "" }
    );
    Run {
        service: &service,
        report: &report,
        options,
        stop: &stop,
    }
    .all(&export)
    .await;
    let interrupted = stop.load(Ordering::SeqCst);
    say(&report.summary(interrupted));
    let failed = report.write_failures(&failures_file)?;
    if failed > 0 {
        say(&format!(
            "  {failed} failures, with their reasons, in {}",
            failures_file.display()
        ));
    } else {
        say("  no failures");
    }
    Ok(match (interrupted, failed) {
        (true, _) => ExitCode::from(130),
        (false, 0) => ExitCode::SUCCESS,
        (false, _) => ExitCode::FAILURE,
    })
}

async fn verify(args: &Args) -> Result<ExitCode, InitError> {
    let export = read_export(args)?;
    let service = provision::from_ports(&Adapters::from_env(), Metrics::off("bridgectl")).await?;
    let started = std::time::Instant::now();
    let differences = Verify {
        service: &service,
        concurrency: args.number("--concurrency", 8)?,
    }
    .all(&export)
    .await;
    for difference in &differences {
        say(&format!(
            "conversation {}: {}",
            difference.conversation, difference.what
        ));
    }
    let differing: std::collections::BTreeSet<_> =
        differences.iter().map(|d| &d.conversation).collect();
    say(&format!(
        "bridgectl: verified {} conversations in {:.1} s: {} differ{}",
        export.conversations.len(),
        started.elapsed().as_secs_f64(),
        differing.len(),
        if export.unreadable.is_empty() {
            String::new()
        } else {
            format!(
                " ({} lines of the export could not be read)",
                export.unreadable.len()
            )
        }
    ));
    Ok(if differences.is_empty() && export.unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn sample(args: &Args) -> Result<ExitCode, InitError> {
    let sample = Sample {
        users: args.number("--users", 500)?,
        conversations: args.number("--conversations", 100)?,
        prefix: args.value("--prefix").unwrap_or("sample").to_owned(),
    };
    let dir = PathBuf::from(args.required("--out")?);
    sample.write(&dir)?;
    say(&format!(
        "bridgectl: wrote {} users and {} conversations to {}",
        sample.users,
        sample.conversations,
        dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}
