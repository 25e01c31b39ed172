//! `bridge-dev`: the local stack's tool.
//!
//! - `bridge-dev stack up | down [--purge] | reset | status | dev`: the local
//!   stack's supervisor (`scripts/stack` runs it; see [`bridge_dev::stack`]);
//! - `bridge-dev gateway`: the front door (API Gateway stand-in) on
//!   `BRIDGE_GATEWAY_LISTEN`, serving the real function handlers;
//! - `bridge-dev setup`: creates the table and queues on the emulator and
//!   prints the queue URLs as `KEY=value` lines;
//! - `bridge-dev retry [--follow]`: feeds the retry queue to the retry
//!   function's handler as the SQS event source mapping would, until the queue
//!   is empty (or for good, with `--follow`);
//! - `bridge-dev token <user_id> [--admin] [--ttl <seconds>]`: prints a dev JWT;
//! - `bridge-dev replay-dlq`: moves the retry jobs in the dead-letter queue
//!   back to the retry queue (`BRIDGE_RETRY_DLQ_URL` to
//!   `BRIDGE_RETRY_QUEUE_URL`), in order, per conversation;
//! - `bridge-dev registration`: prints the appservice registration YAML for
//!   the homeserver, from the bridge's configuration in the environment (see
//!   [`bridge_dev::registration`]);
//! - `bridge-dev bench webhook [transactions] [events] [--peer <url>]`: the webhook
//!   benchmark against the local stack (see [`bridge_dev::bench`]);
//! - `bridge-dev fault-proxy ...`: the fault proxies (see [`bridge_dev::fault`]);
//! - `bridge-dev functions`: lists the registered functions, one name a line
//!   (what `scripts/package` and `scripts/bench` build).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bridge::config::{ProcessEnv, RegistrationConfig, RetryQueueConfig, TableConfig};
use bridge::function::Handler;
use bridge::handlers::{registry, retry, sweeper};
use bridge::ids::AppUserId;
use bridge::runtime::{self, Adapters, BoxError, InitError};
use bridge_dev::fault;
use bridge_dev::gateway::{self, Gateway};
use bridge_dev::stack;
use bridge_dev::token::TokenConfig;
use bridge_dev::{registration, retry_poller, setup};

const USAGE: &str = "usage: bridge-dev stack up | down [--purge] | reset | status | dev
       bridge-dev gateway | setup | retry [--follow] | replay-dlq | functions | registration
       bridge-dev token <user_id> [--admin] [--ttl <seconds>]
       bridge-dev bench webhook [transactions] [events] [--peer <url>]
       bridge-dev fault-proxy [--help]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail("bridge-dev", err.into()),
    };
    // The functions' init errors print as sentences with `Debug`.
    let command = args.first().map(String::as_str);
    let done = match command {
        Some("stack") => match stack::main(&runtime, &args[1..]) {
            Ok(code) => return code,
            Err(err) => return fail("stack", err),
        },
        Some("fault-proxy") => match fault::main(&runtime, &args[1..]) {
            Ok(code) => return code,
            Err(err) => return fail("fault-proxy", err),
        },
        Some("gateway") => runtime.block_on(run_gateway()),
        Some("setup") => runtime.block_on(run_setup()),
        Some("retry") => runtime.block_on(run_retry(args.iter().any(|arg| arg == "--follow"))),
        Some("token") => print_token(&args[1..]),
        Some("replay-dlq") => runtime.block_on(replay_dead_letters()),
        Some("registration") => print_registration(),
        Some("bench") => runtime.block_on(run_bench(&args[1..])),
        Some("functions") => print_lines(registry::<Adapters>().iter().map(|f| f.name)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bridge-dev: error: {err:?}");
            ExitCode::FAILURE
        }
    }
}

fn fail(who: &str, err: BoxError) -> ExitCode {
    eprintln!("{who}: error: {}", stack::chain(err.as_ref()));
    ExitCode::FAILURE
}

async fn run_gateway() -> Result<(), InitError> {
    runtime::init_telemetry();
    let listen: SocketAddr = std::env::var("BRIDGE_GATEWAY_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:18080".into())
        .parse()?;
    let gateway =
        Gateway::build(TokenConfig::from_env(&ProcessEnv)?, &Adapters::from_env()).await?;
    gateway::serve(gateway, listen).await?;
    Ok(())
}

/// How often `retry --follow` runs the sweeper, as its schedule does in AWS.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How many batches `retry --follow` has in flight at once by default. The
/// SQS event source mapping of a FIFO queue runs as many invocations at once
/// as there are message groups with jobs (one batch per group at a time, so
/// each conversation's jobs stay in order); four suits a 2-core machine.
const WORKERS: usize = 4;

/// Feeds the retry queue to the retry function: until it is empty, or, with
/// `follow`, for good, with `BRIDGE_RETRY_WORKERS` (default [`WORKERS`])
/// batches in flight at once and the sweeper on its schedule.
async fn run_retry(follow: bool) -> Result<(), InitError> {
    runtime::init_telemetry();
    let adapters = Adapters::from_env();
    let Handler::Queue(function) = retry::function().handler(&adapters).await? else {
        return Err("the retry function is not a queue function".into());
    };
    let function: std::sync::Arc<dyn bridge::function::QueueFunction> = function.into();
    let sqs = adapters.sqs().await?;
    let queue = RetryQueueConfig::from_env(&ProcessEnv)?.queue_url;
    if !follow {
        while !drain(&sqs, &queue, function.as_ref())
            .await?
            .jobs
            .is_empty()
        {}
        return Ok(());
    }
    let Handler::Scheduled(sweeper) = sweeper::function().handler(&adapters).await? else {
        return Err("the sweeper is not a scheduled function".into());
    };
    let workers = match std::env::var("BRIDGE_RETRY_WORKERS") {
        Ok(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or("BRIDGE_RETRY_WORKERS must be a whole number above 0")?,
        Err(_) => WORKERS,
    };
    let mut pollers = tokio::task::JoinSet::new();
    for _ in 0..workers {
        pollers.spawn(poll(sqs.clone(), queue.clone(), function.clone()));
    }
    let mut schedule = tokio::time::interval(SWEEP_EVERY);
    schedule.tick().await;
    loop {
        tokio::select! {
            _ = schedule.tick() => match sweeper.call().await {
                Ok(sweep) => tracing::debug!(%sweep, "sweep"),
                Err(err) => tracing::error!(error = %err, "sweep failed"),
            },
            // A poller ends only on an error: the process ends with it.
            Some(ended) = pollers.join_next() => {
                return match ended {
                    Ok(Err(err)) => Err(err.into()),
                    Ok(Ok(())) => Ok(()),
                    Err(panicked) => Err(panicked.into()),
                };
            }
        }
    }
}

/// Batch after batch, until an error.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue: String,
    function: std::sync::Arc<dyn bridge::function::QueueFunction>,
) -> Result<(), BoxError> {
    loop {
        drain(&sqs, &queue, function.as_ref()).await?;
    }
}

/// One batch of the retry queue through the retry function.
async fn drain(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    function: &dyn bridge::function::QueueFunction,
) -> Result<retry_poller::Drained, BoxError> {
    let drained = retry_poller::drain_once(sqs, queue, function, Duration::from_secs(5)).await?;
    if !drained.jobs.is_empty() {
        tracing::info!(
            jobs = drained.jobs.len(),
            handed_back = drained.handed_back,
            "retry batch"
        );
    }
    Ok(drained)
}

async fn replay_dead_letters() -> Result<(), InitError> {
    runtime::init_telemetry();
    let from = std::env::var("BRIDGE_RETRY_DLQ_URL")
        .map_err(|_| "BRIDGE_RETRY_DLQ_URL is required: the retry dead-letter queue's URL")?;
    let to = RetryQueueConfig::from_env(&ProcessEnv)?.queue_url;
    let moved = retry_poller::replay(&Adapters::from_env().sqs().await?, &from, &to).await?;
    print_lines([format!("moved {moved} retry jobs back to the retry queue")])
}

async fn run_setup() -> Result<(), InitError> {
    let table = TableConfig::from_env(&ProcessEnv)?;
    let created = setup::run(
        &runtime::aws_config().await?,
        &table.table_name,
        setup::QUEUES,
    )
    .await?;
    print_lines(created.lines())
}

fn print_lines<T: std::fmt::Display>(lines: impl IntoIterator<Item = T>) -> Result<(), InitError> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())?;
    }
    Ok(())
}

fn print_token(args: &[String]) -> Result<(), InitError> {
    let user = args.first().ok_or(USAGE)?;
    AppUserId::parse(user.as_str())?;
    let admin = args.iter().any(|arg| arg == "--admin");
    let ttl = match args.iter().position(|arg| arg == "--ttl") {
        Some(at) => args.get(at + 1).ok_or(USAGE)?.parse::<i64>()?,
        None => 3600,
    };
    let token =
        TokenConfig::from_env(&ProcessEnv)?.mint(user, admin, time::Duration::seconds(ttl))?;
    print_lines([token])
}

fn print_registration() -> Result<(), InitError> {
    let config = RegistrationConfig::from_env(&ProcessEnv)?;
    let yaml = registration::render(&config)?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes())?;
    Ok(())
}

async fn run_bench(args: &[String]) -> Result<(), InitError> {
    let (Some("webhook"), rest) = (
        args.first().map(String::as_str),
        args.get(1..).unwrap_or_default(),
    ) else {
        return Err(USAGE.into());
    };
    let peer = rest
        .iter()
        .position(|arg| arg == "--peer")
        .map(|at| rest.get(at + 1).cloned().ok_or("--peer needs a URL"))
        .transpose()?;
    let rest: Vec<String> = match rest.iter().position(|arg| arg == "--peer") {
        Some(at) => [&rest[..at], rest.get(at + 2..).unwrap_or_default()].concat(),
        None => rest.to_vec(),
    };
    let number = |at: usize, default: usize| -> Result<usize, InitError> {
        Ok(rest
            .get(at)
            .map(|n| n.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let report =
        bridge_dev::bench::webhook(number(0, 200)?, number(1, 100)?, peer.as_deref()).await?;
    print_lines([report])
}
