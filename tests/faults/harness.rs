//! The bridge under test, in process, on the local stack: every function of
//! the registry behind the front door (`bridge_dev::gateway`), and the retry
//! function fed from a real SQS FIFO queue as the event source mapping feeds
//! it (`retry_poller::drain_once`). They are built from [`FaultPorts`]: the
//! homeserver through the fault proxy, DynamoDB and SQS through the refusing
//! proxy (which takes DynamoDB requests one at a time, as moto needs under
//! concurrency) to a moto of the test's own ([`Emulator`]), with a table and
//! queues made as `template.yaml` declares them, so the stack's own retry
//! poller and the other tests never touch them.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use bridge::config::{MatrixConfig, RetryBackoff, Secret, SweepSettings};
use bridge::function::{Handler, QueueFunction, ScheduledFunction};
use bridge::handlers::{retry, sweeper};
use bridge::ids::PuppetNamer;
use bridge::inbound::MemoryInbound;
use bridge::matrix::AppserviceClient;
use bridge::metrics::Metrics;
use bridge::ports::{InitError, Ports};
use bridge::queue::SqsRetryQueue;
use bridge::secrets::CachedSecret;
use bridge::store::{DynamoStore, prelude::*};
use bridge_dev::fault::authority;
use bridge_dev::fault::proxy::{DownAnswer, FaultProxy, ProxyConfig};
use bridge_dev::fault::refuser::{Carry, Refuser};
use bridge_dev::fault::schedule::Schedule;
use bridge_dev::gateway::{self, Gateway};
use bridge_dev::retry_poller::drain_once;
use bridge_dev::setup::{self, QueueSpec};

use crate::client;
use crate::emulator::Emulator;
use crate::support::{sdk_at, stack_env, var};

/// The body text the fault proxy refuses for good (`400 M_BAD_JSON`), as a
/// homeserver that will never take one event: what the bridge must mark
/// `failed` with a reason.
pub const UNDELIVERABLE: &str = "[[fault-proxy:refuse]]";

/// The deployed adapters, aimed at the proxies.
pub struct FaultPorts {
    store: DynamoStore,
    matrix: AppserviceClient,
    queue: SqsRetryQueue,
    namer: PuppetNamer,
    sweep: SweepSettings,
    backoff: RetryBackoff,
}

impl Ports for FaultPorts {
    type Store = DynamoStore;
    type Matrix = AppserviceClient;
    type Queue = SqsRetryQueue;
    /// The webhook is not under test here: Synapse calls the stack's front
    /// door, not this one.
    type Inbound = MemoryInbound;

    async fn store(&self) -> Result<DynamoStore, InitError> {
        Ok(self.store.clone())
    }

    async fn matrix(&self) -> Result<AppserviceClient, InitError> {
        Ok(self.matrix.clone())
    }

    async fn queue(&self) -> Result<SqsRetryQueue, InitError> {
        Ok(self.queue.clone())
    }

    fn namer(&self) -> Result<PuppetNamer, InitError> {
        Ok(self.namer.clone())
    }

    async fn inbound(&self) -> Result<MemoryInbound, InitError> {
        Ok(MemoryInbound::default())
    }

    async fn hs_token(&self) -> Result<CachedSecret, InitError> {
        Ok(CachedSecret::fixed(Secret::new(var("MATRIX_HS_TOKEN"))))
    }

    fn sweep_settings(&self) -> Result<SweepSettings, InitError> {
        Ok(self.sweep)
    }

    fn retry_backoff(&self) -> Result<RetryBackoff, InitError> {
        Ok(self.backoff)
    }

    fn metrics(&self, function: &'static str) -> Metrics {
        Metrics::off(function)
    }
}

/// What the retry consumers did.
#[derive(Debug, Default)]
pub struct ConsumerCounts {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub handed_back: AtomicU64,
    pub errors: AtomicU64,
    /// Batches stopped at their deadline, as Lambda stops a function at
    /// its timeout: their jobs come back after the visibility timeout.
    pub cut: AtomicU64,
    /// Stale operations the sweeper found.
    pub swept: AtomicU64,
}

/// The bridge in process, with its proxies.
pub struct Harness {
    pub proxy: FaultProxy,
    pub refuser: Refuser,
    /// The front door's base URL.
    pub api: String,
    pub table: String,
    pub queue_url: String,
    pub dlq_url: String,
    sqs_direct: aws_sdk_sqs::Client,
    /// The table, read past the proxies.
    direct: DynamoStore,
    sqs: aws_sdk_sqs::Client,
    retry: Arc<dyn QueueFunction>,
    sweeper: Arc<dyn ScheduledFunction>,
    gateway: tokio::task::JoinHandle<()>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pub consumed: Arc<ConsumerCounts>,
    /// Last, so that it stops after everything that uses it.
    pub emulator: Emulator,
}

/// The sweeper's `BRIDGE_SWEEP_AFTER_SECONDS` here (600 deployed): longer
/// than a direct request can be in flight (the Matrix client's 10 s timeout
/// and the store's retries), so only what no request or job will settle is
/// swept.
pub const SWEEP_AFTER_SECS: i64 = 20;

/// How often the sweeper runs here (every 5 minutes deployed).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long a consumer's batch may run, receive and delete included: well
/// within `hold`, the visibility timeout its jobs are received with.
pub fn batch_deadline(hold: Duration) -> Duration {
    hold.saturating_sub(Duration::from_secs(5)).max(hold / 2)
}

/// A retry job, short: `send <message>` or `change<n> <message>`.
pub fn job_line(body: &str) -> String {
    let job: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let message = job["message_id"].as_str().unwrap_or("?");
    match job["operation"].as_str() {
        Some("change") => format!("change{} {message}", job["change"]),
        Some(operation) => format!("{operation} {message}"),
        None => format!("malformed {body}"),
    }
}

/// A free loopback port for a part the suite starts, from
/// `FAULT_PORTS` (`26100-26999`), so that runs beside other stacks on one
/// machine stay in their own range (there is a small window before it is
/// bound again).
pub fn free_addr() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let range = std::env::var("FAULT_PORTS").unwrap_or_else(|_| "26100-26999".into());
    let (low, high) = range
        .split_once('-')
        .and_then(|(low, high)| Some((low.parse::<u16>().ok()?, high.parse::<u16>().ok()?)))
        .filter(|(low, high)| low <= high)
        .unwrap_or_else(|| panic!("FAULT_PORTS={range:?} is not a range like 26100-26999"));
    let span = high - low + 1;
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port in FAULT_PORTS={range}")
}

/// The retry queue and its dead-letter queue of `template.yaml`, named for
/// this run.
fn queues(run: &str) -> Vec<QueueSpec> {
    setup::QUEUES
        .iter()
        .filter(|queue| matches!(queue.logical_id, "RetryQueue" | "RetryDeadLetterQueue"))
        .map(|queue| {
            let suffix = queue.name.trim_start_matches("bridge-");
            let name: &'static str = Box::leak(format!("fault-{run}-{suffix}").into_boxed_str());
            QueueSpec { name, ..*queue }
        })
        .collect()
}

impl Harness {
    /// Starts the emulator and the proxies (the fault proxy paused), makes
    /// the table and queues, builds the functions and serves the front
    /// door. The fault proxy's log and the emulator's go to `dir`.
    /// `conflict_window`: cancel overlapping transactions as DynamoDB does
    /// (`Carry::DynamoDb`).
    pub async fn start(
        schedule: Schedule,
        dir: &std::path::Path,
        conflict_window: Option<Duration>,
        backoff: RetryBackoff,
    ) -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let emulator = Emulator::start(&dir.join("moto.log")).await;
        let log = Box::new(std::fs::File::create(dir.join("proxy.log")).unwrap());
        let proxy = FaultProxy::start(
            free_addr(),
            ProxyConfig {
                upstream: authority(&var("MATRIX_HOMESERVER_URL")).unwrap(),
                schedule,
                refuse_marker: Some(UNDELIVERABLE.into()),
                upstream_down: DownAnswer::BadGateway,
                log: Some(log),
            },
        )
        .await
        .unwrap();
        proxy.set_active(false);
        let refuser = Refuser::start(
            free_addr(),
            authority(&emulator.url).unwrap(),
            // As DynamoDB, a transaction on an item another has under way
            // is cancelled (`TransactionConflict`), which moto never does;
            // the proxy carries DynamoDB requests one at a time to tell
            // (moto's server module serialises them too).
            Carry::DynamoDb { conflict_window },
        )
        .await
        .unwrap();

        let direct = sdk_at(&emulator.url).await;
        let table = format!("fault-{run}");
        let made = setup::run(&direct, &table, &queues(&run))
            .await
            .expect("the table and queues on the emulator");
        let url = |key: &str| {
            made.queue_urls
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, url)| url.clone())
                .unwrap()
        };
        let (queue_url, dlq_url) = (url("BRIDGE_RETRY_QUEUE_URL"), url("BRIDGE_RETRY_DLQ_URL"));

        let faulty = sdk_at(&refuser.url()).await;
        let mut env: HashMap<String, String> = stack_env().clone();
        env.insert("MATRIX_HOMESERVER_URL".into(), proxy.url());
        let config = MatrixConfig::from_env(&env).unwrap();
        let sqs = aws_sdk_sqs::Client::new(&faulty);
        let ports = FaultPorts {
            store: DynamoStore::new(aws_sdk_dynamodb::Client::new(&faulty), table.clone()),
            matrix: AppserviceClient::local(AppserviceClient::http_client().unwrap(), &config)
                .unwrap(),
            queue: SqsRetryQueue::new(sqs.clone(), queue_url.clone()),
            namer: PuppetNamer::new(config.puppet_prefix.clone(), &config.server_name),
            sweep: SweepSettings {
                stale_after: time::Duration::seconds(SWEEP_AFTER_SECS),
                ..SweepSettings::default()
            },
            backoff,
        };
        let Handler::Scheduled(sweeper) = sweeper::function::<FaultPorts>()
            .handler(&ports)
            .await
            .unwrap()
        else {
            panic!("the sweeper is a scheduled function");
        };
        let Handler::Queue(retry) = retry::function::<FaultPorts>()
            .handler(&ports)
            .await
            .unwrap()
        else {
            panic!("the retry function is a queue function");
        };
        let front_door = Gateway::build(client::tokens(), &ports).await.unwrap();
        let addr = free_addr();
        let gateway = tokio::spawn(async move {
            gateway::serve(front_door, addr).await.unwrap();
        });
        let api = format!("http://{addr}");
        let health = reqwest::Client::new();
        for _ in 0..100 {
            if health.get(format!("{api}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            proxy,
            refuser,
            api,
            table,
            queue_url,
            dlq_url,
            sqs_direct: aws_sdk_sqs::Client::new(&direct),
            direct: DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&direct),
                format!("fault-{run}"),
            ),
            sqs,
            retry: Arc::from(retry),
            sweeper: Arc::from(sweeper),
            gateway,
            consumers: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            consumed: Arc::new(ConsumerCounts::default()),
            emulator,
        }
    }

    /// Starts the sweeper, on its compressed schedule, and `count` retry
    /// consumers: each receives a batch (hiding it for
    /// `hold`, the visibility timeout), runs it through the retry function
    /// and deletes what it did not hand back, over and over, as the event
    /// source mapping does (through the refusing proxy, like the functions).
    /// A batch still running at [`batch_deadline`] is stopped, as Lambda
    /// stops the function at its timeout (30 s, under the queue's 180 s
    /// visibility): no two consumers ever hold one conversation's jobs.
    /// Each batch is a line of `log`: its jobs, in order, and how many were
    /// handed back.
    pub fn start_consumers(
        &mut self,
        count: usize,
        hold: Duration,
        log: Arc<Mutex<std::fs::File>>,
    ) {
        let now = || {
            time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let (sweeper, stop, counts) = (
            self.sweeper.clone(),
            self.stop.clone(),
            self.consumed.clone(),
        );
        let sweeps = log.clone();
        self.consumers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(SWEEP_EVERY).await;
                match sweeper.call().await {
                    Ok(sweep) if sweep["found"].as_u64().unwrap_or_default() > 0 => {
                        counts.swept.fetch_add(
                            sweep["found"].as_u64().unwrap_or_default(),
                            Ordering::Relaxed,
                        );
                        let _ = writeln!(sweeps.lock().unwrap(), "{} sweeper: {sweep}", now());
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let _ = writeln!(sweeps.lock().unwrap(), "{} sweeper failed: {err}", now());
                    }
                }
            }
        }));
        for consumer in 0..count {
            let (sqs, queue, retry) =
                (self.sqs.clone(), self.queue_url.clone(), self.retry.clone());
            let (stop, counts, log) = (self.stop.clone(), self.consumed.clone(), log.clone());
            self.consumers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let batch = drain_once(&sqs, &queue, retry.as_ref(), hold);
                    let Ok(drained) = tokio::time::timeout(batch_deadline(hold), batch).await
                    else {
                        let _ = writeln!(
                            log.lock().unwrap(),
                            "{} consumer {consumer}: batch stopped at its deadline",
                            now()
                        );
                        counts.cut.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    match drained {
                        Ok(drained) if drained.jobs.is_empty() => {}
                        Ok(drained) => {
                            let jobs: Vec<String> =
                                drained.jobs.iter().map(|job| job_line(job)).collect();
                            let _ = writeln!(
                                log.lock().unwrap(),
                                "{} consumer {consumer}: {} jobs, {} handed back: {}",
                                now(),
                                jobs.len(),
                                drained.handed_back,
                                jobs.join(", ")
                            );
                            counts.batches.fetch_add(1, Ordering::Relaxed);
                            counts
                                .jobs
                                .fetch_add(drained.jobs.len() as u64, Ordering::Relaxed);
                            counts
                                .handed_back
                                .fetch_add(drained.handed_back as u64, Ordering::Relaxed);
                        }
                        Err(err) => {
                            let _ = writeln!(
                                log.lock().unwrap(),
                                "{} consumer {consumer}: receive or delete failed: {err}",
                                now()
                            );
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                }
            }));
        }
    }

    /// The jobs on the dead-letter queue (read past the proxies; left there).
    pub async fn dead_letters(&self) -> Vec<String> {
        let mut jobs = Vec::new();
        for _ in 0..20 {
            let received = self
                .sqs_direct
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap();
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            jobs.extend(
                messages
                    .iter()
                    .filter_map(|m| m.body.as_deref())
                    .map(job_line),
            );
        }
        jobs
    }

    /// Jobs on a queue (visible and in flight), read past the proxies.
    pub async fn queued(&self, queue_url: &str) -> u64 {
        let attributes = self
            .sqs_direct
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attributes = attributes.attributes.unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|name| attributes.get(name))
        .filter_map(|count| count.parse::<u64>().ok())
        .sum()
    }

    /// What is left unsettled, read past the proxies: operations in the
    /// pending index (sends, and edits and deletes not yet in Matrix),
    /// and the sum of the conversations' outboxes. Both 0 once drained.
    pub async fn unsettled(&self, conversations: &[String]) -> (usize, i64) {
        let everything = time::OffsetDateTime::now_utc() + time::Duration::days(1);
        let pending = self.direct.stale_pending(everything, 10_000).await.unwrap();
        let mut outbox = 0;
        for id in conversations {
            let id = bridge::ids::ConversationId::parse(id).unwrap();
            outbox += self
                .direct
                .conversation(&id)
                .await
                .unwrap()
                .map_or(0, |conversation| conversation.outbox);
        }
        (pending.len(), outbox)
    }

    /// Stops the retry consumers (the front door serves until dropped).
    pub async fn stop_consumers(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for consumer in self.consumers.drain(..) {
            let _ = consumer.await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.gateway.abort();
        for consumer in &self.consumers {
            consumer.abort();
        }
    }
}
