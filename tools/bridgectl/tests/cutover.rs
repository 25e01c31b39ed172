//! The cutover on the local stack, with the real binary: a generated
//! export (`bridgectl sample`), a run killed (SIGKILL) while it provisions
//! conversations, a run that resumes it, a third that finds everything
//! there, and `verify` clean; one room per conversation (the bridge's bot
//! is in exactly as many more rooms as there are conversations).
//!
//! `make test` runs a small export. The trial the README reports is the
//! same test with a bigger one:
//!
//! ```sh
//! BRIDGECTL_TRIAL_USERS=500 BRIDGECTL_TRIAL_CONVERSATIONS=100 \
//!   cargo test -p bridgectl --test cutover -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The local stack's settings (`.local/stack.env`, written by `scripts/stack up`).
fn stack_env() -> HashMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.local/stack.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}. Start the local stack first: scripts/stack up",
            path.display()
        )
    });
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn bridgectl(env: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bridgectl"));
    command.args(args).envs(env);
    command
}

/// Runs bridgectl to its end; its exit code and standard output.
fn finish(env: &HashMap<String, String>, args: &[&str]) -> (i32, String) {
    let output = bridgectl(env, args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("{stdout}");
    (output.status.code().unwrap_or(-1), stdout)
}

/// A table of the run's own on the emulator, so a big trial does not make
/// every other test's transactions slower (moto copies a table to roll a
/// transaction back).
async fn fresh_table(env: &HashMap<String, String>) -> String {
    use aws_sdk_dynamodb::config::{Credentials, Region};
    let sdk = bridge::aws_http::loader()
        .unwrap()
        .endpoint_url(&env["AWS_ENDPOINT_URL"])
        .region(Region::new(env["AWS_REGION"].clone()))
        .credentials_provider(Credentials::new(
            &env["AWS_ACCESS_KEY_ID"],
            &env["AWS_SECRET_ACCESS_KEY"],
            None,
            None,
            "stack",
        ))
        .load()
        .await;
    let name = format!("cutover-{}", uuid_like());
    bridge_dev::setup::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &name)
        .await
        .unwrap();
    name
}

/// How many rooms the bridge's bot is joined to.
async fn bot_rooms(env: &HashMap<String, String>) -> usize {
    let reply: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/joined_rooms",
            env["MATRIX_HOMESERVER_URL"]
        ))
        .bearer_auth(&env["MATRIX_AS_TOKEN"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["joined_rooms"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack (Synapse, moto, the front door): run make test"]
async fn a_cutover_killed_and_resumed_ends_verified_with_one_room_per_conversation() {
    let mut env = stack_env();
    let table = fresh_table(&env).await;
    env.insert("BRIDGE_TABLE".into(), table);
    let users = size("BRIDGECTL_TRIAL_USERS", 40);
    let conversations = size("BRIDGECTL_TRIAL_CONVERSATIONS", 10);
    let concurrency = size("BRIDGECTL_TRIAL_CONCURRENCY", 8).to_string();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("cut{}", &uuid_like());
    let out = dir.path().to_str().unwrap().to_owned();
    let (users_n, conversations_n) = (users.to_string(), conversations.to_string());
    let (code, _) = finish(
        &env,
        &[
            "sample",
            "--users",
            &users_n,
            "--conversations",
            &conversations_n,
            "--prefix",
            &prefix,
            "--out",
            &out,
        ],
    );
    assert_eq!(code, 0);
    let files = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (users_file, conversations_file, members_file, failures_file) = (
        files("users.jsonl"),
        files("conversations.jsonl"),
        files("members.jsonl"),
        files("failures.jsonl"),
    );
    let export = [
        "--users",
        users_file.as_str(),
        "--conversations",
        conversations_file.as_str(),
        "--members",
        members_file.as_str(),
    ];
    let mut run_args = vec!["run"];
    run_args.extend(export);
    run_args.extend([
        "--concurrency",
        concurrency.as_str(),
        "--failures",
        failures_file.as_str(),
    ]);
    let rooms_before = bot_rooms(&env).await;

    // A dry run writes nothing.
    let mut dry = run_args.clone();
    dry.push("--dry-run");
    let (code, summary) = finish(&env, &dry);
    assert_eq!(code, 0, "{summary}");
    assert!(
        summary.contains(&format!(
            "conversations: would provision {conversations}, already there 0"
        )),
        "{summary}"
    );
    assert_eq!(bot_rooms(&env).await, rooms_before);

    // Killed while it provisions conversations.
    let started = Instant::now();
    let mut child = bridgectl(&env, &run_args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  first run: {line}");
            let _ = lines.send(line);
        }
    });
    loop {
        let line = seen
            .recv_timeout(Duration::from_secs(600))
            .expect("the first run reports its users");
        if line.starts_with(&format!("bridgectl: users {users}/{users}")) {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let first = started.elapsed();
    let rooms_at_kill = bot_rooms(&env).await - rooms_before;
    eprintln!(
        "killed after {:.1} s, {rooms_at_kill} rooms made",
        first.as_secs_f64()
    );
    assert!(rooms_at_kill < conversations, "killed before it was done");

    // Resumed: finishes what the first run left, claims and rooms included.
    let started = Instant::now();
    let (code, summary) = finish(&env, &run_args);
    let resumed = started.elapsed();
    assert_eq!(
        code,
        0,
        "{summary}\n{}",
        std::fs::read_to_string(&failures_file).unwrap_or_default()
    );
    assert!(summary.contains("no failures"), "{summary}");
    assert!(
        summary.contains(&format!(
            "users:         provisioned 0, already there {users}"
        )),
        "{summary}"
    );

    // A third run finds everything there.
    let (code, summary) = finish(&env, &run_args);
    assert_eq!(code, 0);
    assert!(
        summary.contains(&format!(
            "conversations: provisioned 0, already there {conversations}"
        )),
        "{summary}"
    );
    assert!(
        summary.contains("memberships:   provisioned 0"),
        "{summary}"
    );

    let mut verify_args = vec!["verify"];
    verify_args.extend(export);
    let (code, report) = finish(&env, &verify_args);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(&format!("verified {conversations} conversations"))
            && report.contains(": 0 differ"),
        "{report}"
    );
    assert_eq!(
        bot_rooms(&env).await - rooms_before,
        conversations,
        "one room per conversation"
    );
    eprintln!(
        "cutover trial: {users} users, {conversations} conversations: killed after {:.1} s, resumed in {:.1} s, {:.1} s in all",
        first.as_secs_f64(),
        resumed.as_secs_f64(),
        (first + resumed).as_secs_f64()
    );
}

/// A short unique suffix for the sample's ids.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", nanos % 0xffff_ffff_ffff)
}
