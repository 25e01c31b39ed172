//! The local stack's Synapse, killed and started again: `kill` on the pid
//! in `SYNAPSE_PID_FILE`, then `scripts/stack up` (which starts only what
//! is not running) on the stack's own ports. A guard starts it again if a
//! test ends while it is down.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::var;

/// How Synapse is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: a crash, in-flight requests cut.
    Kill,
    /// SIGTERM: a shutdown.
    Term,
}

/// The port of an `http://host:port` URL.
fn port(url: &str) -> String {
    url.rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned()
}

/// The versions endpoint answers.
pub async fn answering() -> bool {
    let url = format!("{}/_matrix/client/versions", var("MATRIX_HOMESERVER_URL"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    matches!(http.get(&url).send().await, Ok(response) if response.status().is_success())
}

/// Stops Synapse and waits until it no longer answers.
pub async fn stop(how: Stop) {
    let pid = std::fs::read_to_string(var("SYNAPSE_PID_FILE")).expect("Synapse's pid file");
    let signal = match how {
        Stop::Kill => "-KILL",
        Stop::Term => "-TERM",
    };
    let status = Command::new("kill")
        .args([signal, pid.trim()])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "could not stop Synapse (pid {})",
        pid.trim()
    );
    let started = Instant::now();
    while answering().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Synapse did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `scripts/stack up` on the stack's ports, without building (blocking).
fn stack_up() -> bool {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut command = Command::new(format!("{root}/scripts/stack"));
    command
        .arg("up")
        .env("BRIDGE_SKIP_BUILD", "1")
        .env("MOTO_PORT", port(&var("AWS_ENDPOINT_URL")))
        .env("SYNAPSE_PORT", port(&var("MATRIX_HOMESERVER_URL")))
        .env("GATEWAY_PORT", port(&var("BRIDGE_API_URL")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Leave the stack's retry poller as the last `up` left it.
    if std::path::Path::new(root)
        .join(".local/run/retry.off")
        .exists()
    {
        command.env("BRIDGE_SKIP_RETRY_POLLER", "1");
    }
    matches!(command.status(), Ok(status) if status.success())
}

/// Starts Synapse again and waits until it answers.
pub async fn start() {
    let started = tokio::task::spawn_blocking(stack_up).await.unwrap();
    assert!(
        started,
        "scripts/stack up failed: see .local/logs/synapse.log"
    );
    let since = Instant::now();
    while !answering().await {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "Synapse did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts Synapse again when dropped, if it is not answering (a test that
/// failed while it was down).
pub struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let url = format!("{}/_matrix/client/versions", var("MATRIX_HOMESERVER_URL"));
        if !bridge_dev::stack::parts::http_ok(&url) && !stack_up() {
            eprintln!("could not restart the stack: run scripts/stack up");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_come_from_urls() {
        assert_eq!(super::port("http://127.0.0.1:28608"), "28608");
        assert_eq!(super::port("http://127.0.0.1:15000/"), "15000");
    }
}
