//! The tests: the fault suite and the load test, their settings
//! (`FAULT_*`), the conductor of outages, the drain and the report.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::config::RetryBackoff;
use bridge_dev::fault::schedule::{Profile, Schedule, SplitMix, mix};
use futures::StreamExt as _;
use serde_json::json;

use crate::checker::{self, Report, Room};
use crate::client::{MatrixUser, token, unique};
use crate::harness::Harness;
use crate::homeserver::{self, Stop};
use crate::ledger::{Caller, Ledger};
use crate::workload::{self, Mix, Pace, Shared};

/// The tests of this binary take turns: the fault suite stops Synapse.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The suite's settings: `FAULT_*` variables, else the defaults of
/// `make test` (a few minutes in all). `scripts/soak` sets them for a long
/// run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `FAULT_SEED`: the fault proxy's schedule, the outages' times and the
    /// users' operations.
    pub seed: u64,
    /// `FAULT_SECONDS`: how long the users send (outages happen meanwhile).
    pub load: Duration,
    /// `FAULT_SCHEDULE`: the fault proxy's profile (`bridge-dev fault-proxy --help`).
    pub profile: Profile,
    /// `FAULT_USERS` and `FAULT_CONVERSATIONS`: every user is in every
    /// conversation, one task per pair.
    pub users: usize,
    pub conversations: usize,
    /// `FAULT_CALM_MS`: the pause between a user's requests outside bursts.
    pub calm_ms: (u64, u64),
    /// `FAULT_DRAIN_SECS`: how long after the load (and the faults, which
    /// stop with it unless `FAULT_WHILE_DRAINING=1`) everything must be
    /// settled.
    pub drain: Duration,
    /// `FAULT_RETRY_HOLD_SECS`: the visibility timeout the retry consumers
    /// receive with (the template's is 180 s; compressed here), 5 s more
    /// than a batch may run (the function's timeout).
    pub hold: Duration,
    /// `FAULT_BACKOFF_SECS` (`1-4`): the retry function's back-off for a
    /// job it hands back, base and cap (10 s and 900 s deployed).
    pub backoff: RetryBackoff,
    /// `FAULT_CONSUMERS`: retry consumers, batches in flight at once (4),
    /// as the event source mapping runs several FIFO groups' batches at
    /// once. It never has two batches of one group in flight, which a
    /// batch stopped before its visibility timeout ends guarantees here.
    pub consumers: usize,
    /// `FAULT_DYNAMODB_CONFLICT_MS` (30; 0: none): a transaction that
    /// arrives within this long of another touching one of its items (and
    /// before that one's answer) is cancelled with `TransactionConflict`, as
    /// DynamoDB does (moto never does).
    pub conflicts: Option<Duration>,
    /// `FAULT_WHILE_DRAINING` (0): keep the fault proxy misbehaving after
    /// the load, while the retry function drains the queue (outages and
    /// refusals end with the load either way).
    pub faults_while_draining: bool,
    /// `FAULT_IDLE_SECS`: the drain gives up early when the retry queue
    /// has been empty this long and messages are still pending (no job is
    /// left that could deliver them).
    pub idle: Duration,
    /// `FAULT_LOAD_SENDERS` x `FAULT_LOAD_ROUNDS` messages into one
    /// conversation, all senders at once.
    pub load_senders: usize,
    pub load_rounds: u32,
    /// Then `FAULT_LOAD_CONVERSATIONS` x `FAULT_LOAD_SENDERS_PER_CONVERSATION`
    /// senders, `FAULT_LOAD_ROUNDS` messages each, all at once.
    pub load_conversations: usize,
    pub load_senders_per_conversation: usize,
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not valid")),
        _ => default,
    }
}

impl Settings {
    pub fn from_env() -> Self {
        let calm = setting("FAULT_CALM_MS", "300-1200".to_owned());
        let (low, high) = calm.split_once('-').unwrap_or((&calm, &calm));
        let backoff = setting("FAULT_BACKOFF_SECS", "1-4".to_owned());
        let (base, max) = backoff.split_once('-').unwrap_or((&backoff, &backoff));
        let secs = |text: &str| Duration::from_secs(text.parse().unwrap());
        Self {
            seed: setting("FAULT_SEED", 1),
            load: Duration::from_secs(setting("FAULT_SECONDS", 45)),
            profile: Profile::parse(&setting("FAULT_SCHEDULE", "default".to_owned()))
                .unwrap_or_else(|err| panic!("FAULT_SCHEDULE: {err}")),
            users: setting("FAULT_USERS", 4),
            conversations: setting("FAULT_CONVERSATIONS", 3),
            calm_ms: (low.parse().unwrap(), high.parse().unwrap()),
            drain: Duration::from_secs(setting("FAULT_DRAIN_SECS", 120)),
            hold: Duration::from_secs(setting("FAULT_RETRY_HOLD_SECS", 30)),
            backoff: RetryBackoff {
                base: secs(base),
                max: secs(max),
            },
            consumers: setting("FAULT_CONSUMERS", 4),
            idle: Duration::from_secs(setting("FAULT_IDLE_SECS", 20)),
            faults_while_draining: setting("FAULT_WHILE_DRAINING", 0u8) == 1,
            conflicts: Some(Duration::from_millis(setting(
                "FAULT_DYNAMODB_CONFLICT_MS",
                30,
            )))
            .filter(|window| !window.is_zero()),
            load_senders: setting("FAULT_LOAD_SENDERS", 50),
            load_rounds: setting("FAULT_LOAD_ROUNDS", 1),
            load_conversations: setting("FAULT_LOAD_CONVERSATIONS", 20),
            load_senders_per_conversation: setting("FAULT_LOAD_SENDERS_PER_CONVERSATION", 10),
        }
    }
}

/// Something the conductor does to the bridge's surroundings.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// The users stop pausing for a while.
    Burst(Duration),
    /// Synapse stopped, then started again after `down`.
    Homeserver { how: Stop, down: Duration },
    /// The emulator refuses connections for a while.
    Refuse(Duration),
}

/// When what happens, from the start of the load: per cycle (a minute, or
/// the whole load if shorter) the emulator refuses three times and Synapse
/// goes down twice, first killed in the middle of a burst, then shut down.
fn timeline(seed: u64, load: Duration) -> Vec<(Duration, Event)> {
    let mut rng = SplitMix::new(mix(seed ^ 0x0071_6d65));
    let cycles = (load.as_secs() / 60).max(1) as u32;
    let cycle = load / cycles;
    let mut events = Vec::new();
    for c in 0..cycles {
        let base = cycle * c;
        let at = |fraction: f64, rng: &mut SplitMix| {
            base + cycle.mul_f64(fraction) + rng.millis(0, cycle.as_millis() as u64 / 20)
        };
        events.push((at(0.08, &mut rng), Event::Refuse(rng.millis(2000, 3000))));
        let burst = at(0.18, &mut rng);
        events.push((burst, Event::Burst(Duration::from_secs(8))));
        events.push((
            burst + Duration::from_secs(3),
            Event::Homeserver {
                how: Stop::Kill,
                down: rng.millis(6000, 10_000),
            },
        ));
        events.push((at(0.48, &mut rng), Event::Refuse(rng.millis(2000, 4000))));
        let burst = at(0.58, &mut rng);
        events.push((burst, Event::Burst(Duration::from_secs(5))));
        events.push((
            burst + Duration::from_secs(1),
            Event::Homeserver {
                how: Stop::Term,
                down: rng.millis(4000, 7000),
            },
        ));
        events.push((at(0.85, &mut rng), Event::Refuse(rng.millis(1500, 2500))));
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

/// Runs the timeline from now; what happened, a line each.
fn conduct(
    events: Vec<(Duration, Event)>,
    harness: &Harness,
    pace: Arc<Pace>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<Mutex<Vec<String>>>) {
    let started = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (at, event) in events {
        let (pace, done, refuser) = (pace.clone(), done.clone(), harness.refuser.handle());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((started + at).into()).await;
            let line = match event {
                Event::Burst(length) => {
                    pace.burst();
                    tokio::time::sleep(length).await;
                    pace.calm();
                    format!("burst at {:.1} s for {} s", at.as_secs_f64(), length.as_secs())
                }
                Event::Homeserver { how, down } => {
                    let stopping = Instant::now();
                    homeserver::stop(how).await;
                    tokio::time::sleep(down).await;
                    homeserver::start().await;
                    format!(
                        "homeserver {} at {:.1} s, down for {:.1} s (answering again after {:.1} s)",
                        match how {
                            Stop::Kill => "killed (SIGKILL)",
                            Stop::Term => "stopped (SIGTERM)",
                        },
                        at.as_secs_f64(),
                        down.as_secs_f64(),
                        stopping.elapsed().as_secs_f64()
                    )
                }
                Event::Refuse(window) => {
                    refuser.refuse_for(window);
                    format!(
                        "emulator refusing connections at {:.1} s for {:.1} s",
                        at.as_secs_f64(),
                        window.as_secs_f64()
                    )
                }
            };
            done.lock().unwrap().push(line);
        }));
    }
    (tasks, done)
}

/// A progress line, with the time since the test began.
fn progress(since: Instant, what: &str) {
    eprintln!("[{:7.1} s] {what}", since.elapsed().as_secs_f64());
}

/// The functions' log of the run under way (`functions.log` in its
/// directory): the in-process functions log through `tracing`, as in Lambda.
static FUNCTIONS_LOG: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Writes to [`FUNCTIONS_LOG`].
struct FunctionsLog;

impl std::io::Write for FunctionsLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match FUNCTIONS_LOG.lock().unwrap().as_mut() {
            Some(file) => file.write(bytes),
            None => Ok(bytes.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the functions' log lines to `dir/functions.log` from now on.
fn log_functions_to(dir: &std::path::Path) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = lambda_http::tracing::subscriber::fmt()
            .with_target(false)
            .with_ansi(false)
            .with_max_level(lambda_http::tracing::Level::INFO)
            .with_writer(|| FunctionsLog)
            .try_init();
    });
    *FUNCTIONS_LOG.lock().unwrap() = std::fs::File::create(dir.join("functions.log")).ok();
}

/// The retry consumers' log (`retry.log`: a line per batch).
fn consumer_log(dir: &std::path::Path) -> Arc<Mutex<std::fs::File>> {
    Arc::new(Mutex::new(
        std::fs::File::create(dir.join("retry.log")).unwrap(),
    ))
}

/// Where this run's ledger, report and logs go.
fn run_dir(label: &str, seed: u64) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".local/faults")
        .join(format!("{label}-seed{seed}-{stamp}"));
    std::fs::create_dir_all(&dir).unwrap();
    log_functions_to(&dir);
    dir
}

/// A conversation with `users` (the first its owner) and the checker, who
/// joins its room.
async fn provision(caller: &Caller, users: &[String], checker: &MatrixUser, prefix: &str) -> Room {
    let id = unique(prefix);
    let mut members: Vec<serde_json::Value> = users
        .iter()
        .enumerate()
        .map(|(i, user)| json!({"user_id": user, "role": if i == 0 { "owner" } else { "member" }}))
        .collect();
    members.push(json!({"matrix_user_id": checker.user_id}));
    let body = json!({"id": id, "kind": "group", "name": id, "members": members}).to_string();
    let answer = caller
        .call(
            "POST",
            "/v1/conversations",
            &token("svc", true),
            None,
            Some(&body),
        )
        .await;
    assert_eq!(answer.status, Some(201), "provisioning {id}: {answer:?}");
    let room_id = answer.body["room_id"].as_str().unwrap().to_owned();
    checker.join(&room_id).await;
    Room {
        conversation: id,
        room_id,
    }
}

fn conversations(rooms: &[Room]) -> Vec<String> {
    rooms.iter().map(|room| room.conversation.clone()).collect()
}

/// How the drain ended.
#[derive(Clone, Copy, Debug)]
pub enum Drained {
    /// Queue empty and nothing pending, after this many seconds.
    After(f64),
    /// The deadline passed first.
    Deadline,
    /// The queue stayed empty for the idle time with messages still pending.
    Stuck(f64),
}

/// Waits until the retry queue is empty and no message is pending, up to
/// `deadline` (or until the queue has been empty for `idle` while messages
/// stay pending: nothing is left to deliver them).
async fn drain(
    harness: &Harness,
    caller: &Caller,
    rooms: &[Room],
    deadline: Duration,
    idle: Duration,
) -> Drained {
    let started = Instant::now();
    let mut empty_since: Option<Instant> = None;
    loop {
        if harness.queued(&harness.queue_url).await == 0 {
            let since = *empty_since.get_or_insert_with(Instant::now);
            let mut pending = 0;
            for room in rooms {
                pending += checker::finals(caller, &room.conversation)
                    .await
                    .values()
                    .filter(|message| message.status == "pending")
                    .count();
            }
            if pending == 0 && harness.unsettled(&conversations(rooms)).await == (0, 0) {
                return Drained::After(started.elapsed().as_secs_f64());
            }
            if since.elapsed() >= idle {
                return Drained::Stuck(started.elapsed().as_secs_f64());
            }
        } else {
            empty_since = None;
        }
        if started.elapsed() > deadline {
            return Drained::Deadline;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Writes the ledger and the report, prints the summary, and fails with
/// the invariants that do not hold.
async fn conclude(dir: &Path, ledger: &Ledger, report: &Report, no_5xx: bool, replay: &str) {
    let mut file = std::fs::File::create(dir.join("ledger.jsonl")).unwrap();
    for entry in ledger.entries() {
        writeln!(file, "{}", serde_json::to_string(&entry).unwrap()).unwrap();
    }
    let messages: Vec<_> = ledger.messages().into_values().collect();
    std::fs::write(
        dir.join("accepted.json"),
        serde_json::to_vec_pretty(&messages).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(report).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("summary.txt"), report.summary()).unwrap();
    eprintln!("{}", report.summary());
    eprintln!("ledger, report and proxy log: {}", dir.display());
    let violations = report.violations(no_5xx);
    assert!(
        violations.is_empty(),
        "{}: {} invariant(s) do not hold (replay: {replay}; evidence in {}):\n  - {}",
        report.label,
        violations.len(),
        dir.display(),
        violations.join("\n  - ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (Synapse, moto): run make test"]
async fn nothing_is_lost_doubled_reordered_or_stranded_under_faults() {
    let _turn = TURN.lock().await;
    let _restore = homeserver::Restore;
    let began = Instant::now();
    if !homeserver::answering().await {
        homeserver::start().await;
    }
    let settings = Settings::from_env();
    let seed = settings.seed;
    let dir = run_dir("faults", seed);
    let mut harness = Harness::start(
        Schedule::seeded(seed, settings.profile.clone()),
        &dir,
        settings.conflicts,
        settings.backoff,
    )
    .await;
    let caller = Caller::new(&harness.api, 12);

    let checker = MatrixUser::register(&unique("checker")).await;
    let users: Vec<String> = (0..settings.users)
        .map(|i| unique(&format!("user{i}")))
        .collect();
    let mut rooms = Vec::new();
    for _ in 0..settings.conversations {
        rooms.push(provision(&caller, &users, &checker, "faults").await);
    }

    progress(began, "set up; the users start, the faults begin");
    harness.start_consumers(settings.consumers, settings.hold, consumer_log(&dir));
    harness.proxy.set_active(true);
    let ledger = Arc::new(Ledger::default());
    let pace = Arc::new(Pace::default());
    let shared = Arc::new(Shared {
        caller: caller.clone(),
        ledger: ledger.clone(),
        pace: pace.clone(),
        mix: Mix::default(),
        calm_ms: settings.calm_ms,
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for (c, room) in rooms.iter().enumerate() {
            let task_seed = mix(seed ^ ((u as u64) << 32 | c as u64));
            tasks.push(tokio::spawn(workload::user_in_conversation(
                shared.clone(),
                user.clone(),
                room.conversation.clone(),
                task_seed,
            )));
        }
    }
    let (outages, happened) = conduct(timeline(seed, settings.load), &harness, pace.clone());
    tokio::time::sleep(settings.load).await;
    pace.stop();
    for task in tasks {
        task.await.unwrap();
    }
    for outage in outages {
        outage.await.unwrap();
    }
    let load_ended = started.elapsed();
    // The storm is over: the drain measures how the bridge recovers (with
    // the proxy's faults still on if asked).
    progress(began, "load over; draining");
    harness.proxy.note("load over; draining");
    harness.proxy.set_active(settings.faults_while_draining);
    let drained = drain(&harness, &caller, &rooms, settings.drain, settings.idle).await;
    harness.stop_consumers().await;
    progress(began, "drained (or the deadline passed); checking");

    let mut report = checker::check(
        &format!(
            "fault suite (seed {seed}, {} s of load)",
            settings.load.as_secs()
        ),
        &caller,
        &checker,
        &rooms,
        &ledger,
    )
    .await;
    report.set_drain(drained, &settings);
    report.set_unsettled(harness.unsettled(&conversations(&rooms)).await);
    report.faults = faults_done(&harness, &happened, &settings, load_ended).await;
    let replay = format!(
        "FAULT_SEED={seed} FAULT_SECONDS={} FAULT_SCHEDULE='{}'",
        settings.load.as_secs(),
        std::env::var("FAULT_SCHEDULE").unwrap_or_else(|_| "default".into())
    );
    conclude(&dir, &ledger, &report, false, &replay).await;
}

/// What the emulator's proxy did.
fn emulator_line(harness: &Harness) -> String {
    let (windows, cut, carried) = harness.refuser.counts();
    let (dynamodb, mean) = harness.refuser.dynamodb();
    format!(
        "emulator proxy: {carried} connections carried, {windows} refusal windows, {cut} connections cut; \
         {dynamodb} DynamoDB requests one at a time, {} ms each on average, {} transactions \
         cancelled as conflicting; moto at {} MiB",
        mean.as_millis(),
        harness.refuser.conflicts(),
        harness.emulator.memory_mib()
    )
}

/// What was done to the bridge, for the report.
async fn faults_done(
    harness: &Harness,
    happened: &Mutex<Vec<String>>,
    settings: &Settings,
    load: Duration,
) -> Vec<String> {
    let mut lines = vec![
        format!(
            "load: {} users x {} conversations for {:.1} s; fault schedule: {}",
            settings.users,
            settings.conversations,
            load.as_secs_f64(),
            settings.profile
        ),
        format!("fault proxy: {}", harness.proxy.stats()),
        format!(
            "table {} and retry queue {} on the emulator (kept for inspection)",
            harness.table, harness.queue_url
        ),
    ];
    lines.push(emulator_line(harness));
    let consumed = &harness.consumed;
    let dead = harness.dead_letters().await;
    lines.push(format!(
        "retry consumers ({} x, visibility {} s): {} batches, {} jobs, {} handed back, {} receive errors, {} stopped at their deadline; swept {}; dead-lettered {}: {}",
        settings.consumers,
        settings.hold.as_secs(),
        consumed.batches.load(Ordering::Relaxed),
        consumed.jobs.load(Ordering::Relaxed),
        consumed.handed_back.load(Ordering::Relaxed),
        consumed.errors.load(Ordering::Relaxed),
        consumed.cut.load(Ordering::Relaxed),
        consumed.swept.load(Ordering::Relaxed),
        dead.len(),
        dead.join(", ")
    ));
    lines.extend(happened.lock().unwrap().iter().cloned());
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (Synapse, moto): run make test"]
async fn many_senders_at_once_get_no_5xx_and_each_message_once_in_order() {
    let _turn = TURN.lock().await;
    let _restore = homeserver::Restore;
    let began = Instant::now();
    if !homeserver::answering().await {
        homeserver::start().await;
    }
    let settings = Settings::from_env();
    let dir = run_dir("load", settings.seed);
    let mut harness = Harness::start(
        Schedule::seeded(settings.seed, Profile::none()),
        &dir,
        settings.conflicts,
        settings.backoff,
    )
    .await;
    let caller = Caller::new(&harness.api, 6);
    let checker = MatrixUser::register(&unique("checker")).await;

    let crowd: Vec<String> = (0..settings.load_senders)
        .map(|i| unique(&format!("crowd{i}")))
        .collect();
    let mut rooms = vec![provision(&caller, &crowd, &checker, "crowd").await];
    let groups: Vec<Vec<String>> = (0..settings.load_conversations)
        .map(|i| {
            (0..settings.load_senders_per_conversation)
                .map(|j| unique(&format!("spread{i}x{j}")))
                .collect()
        })
        .collect();
    // A few at a time: 200 puppets registered and joined at once would
    // time out the homeserver, and the setup is not what is under test.
    let small: Vec<Room> = futures::stream::iter(
        groups
            .iter()
            .map(|group| provision(&caller, group, &checker, "spread")),
    )
    .buffered(4)
    .collect()
    .await;
    rooms.extend(small);
    progress(began, "provisioned; sending");

    harness.start_consumers(settings.consumers, settings.hold, consumer_log(&dir));
    let ledger = Arc::new(Ledger::default());
    let shared = Arc::new(Shared {
        caller: caller.clone(),
        ledger: ledger.clone(),
        pace: Arc::new(Pace::default()),
        mix: Mix::default(),
        calm_ms: (0, 0),
    });
    // Every sender at once, first the crowd in one conversation, then the
    // senders spread across the others.
    let at_once = |senders: Vec<(&String, &Room)>| {
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|(user, room)| {
                tokio::spawn(workload::send_in_a_row(
                    shared.clone(),
                    user.clone(),
                    room.conversation.clone(),
                    settings.load_rounds,
                ))
            })
            .collect();
        async move {
            let started = Instant::now();
            for task in tasks {
                task.await.unwrap();
            }
            started.elapsed()
        }
    };
    let started = Instant::now();
    let crowd_took = at_once(crowd.iter().map(|user| (user, &rooms[0])).collect()).await;
    let spread_took = at_once(
        groups
            .iter()
            .zip(&rooms[1..])
            .flat_map(|(group, room)| group.iter().map(move |user| (user, room)))
            .collect(),
    )
    .await;
    let sending = started.elapsed();
    progress(began, "all answered; draining");
    let drained = drain(&harness, &caller, &rooms, settings.drain, settings.idle).await;
    harness.stop_consumers().await;
    progress(began, "drained (or the deadline passed); checking");

    let mut report = checker::check(
        &format!(
            "load test ({} senders at once in one conversation, then {} across {} conversations; {} message(s) each)",
            settings.load_senders,
            settings.load_conversations * settings.load_senders_per_conversation,
            settings.load_conversations,
            settings.load_rounds
        ),
        &caller,
        &checker,
        &rooms,
        &ledger,
    )
    .await;
    report.set_drain(drained, &settings);
    report.set_unsettled(harness.unsettled(&conversations(&rooms)).await);
    let answered: Vec<u64> = ledger.entries().iter().map(|entry| entry.millis).collect();
    let slowest = answered.iter().max().copied().unwrap_or_default();
    report.faults = vec![
        format!(
            "{} sends answered in {:.1} s ({:.0}/s): the crowd in {:.1} s, the spread senders in {:.1} s; slowest answer {slowest} ms",
            answered.len(),
            sending.as_secs_f64(),
            answered.len() as f64 / sending.as_secs_f64(),
            crowd_took.as_secs_f64(),
            spread_took.as_secs_f64()
        ),
        emulator_line(&harness),
        format!(
            "retry consumers: {} jobs, {} handed back",
            harness.consumed.jobs.load(Ordering::Relaxed),
            harness.consumed.handed_back.load(Ordering::Relaxed)
        ),
    ];
    conclude(
        &dir,
        &ledger,
        &report,
        true,
        &format!("FAULT_SEED={}", settings.seed),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_is_seeded_and_takes_the_homeserver_down_twice_per_cycle() {
        let load = Duration::from_secs(45);
        let first = timeline(7, load);
        assert_eq!(format!("{first:?}"), format!("{:?}", timeline(7, load)));
        let downs: Vec<&Event> = first
            .iter()
            .map(|(_, event)| event)
            .filter(|event| matches!(event, Event::Homeserver { .. }))
            .collect();
        assert_eq!(downs.len(), 2);
        assert!(matches!(
            downs[0],
            Event::Homeserver {
                how: Stop::Kill,
                ..
            }
        ));
        // The kill falls inside a burst.
        let burst = first
            .iter()
            .find(|(_, e)| matches!(e, Event::Burst(_)))
            .unwrap()
            .0;
        let kill = first
            .iter()
            .find(|(_, e)| matches!(e, Event::Homeserver { .. }))
            .unwrap()
            .0;
        assert!(kill > burst && kill < burst + Duration::from_secs(8));
        // Every outage is over before the load ends.
        for (at, event) in &first {
            if let Event::Homeserver { down, .. } = event {
                assert!(*at + *down < load, "{at:?} + {down:?}");
            }
        }
        assert_eq!(
            timeline(7, Duration::from_secs(300))
                .iter()
                .filter(|(_, e)| matches!(e, Event::Homeserver { .. }))
                .count(),
            10
        );
    }
}
