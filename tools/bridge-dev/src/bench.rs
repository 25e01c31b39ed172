//! `bridge-dev bench webhook [transactions] [events]`: the webhook's
//! benchmark (not a test: it measures and prints). `scripts/bench-webhook`
//! runs it on a release build of the front door.
//!
//! 1. A conversation is set up in the table with a room of its own (no
//!    Synapse needed: the transactions are the bench's).
//! 2. The sequential storage round trips of a transaction's critical path
//!    are counted on the wire ([`Wire`]): the `transactions` function runs
//!    in process on counted DynamoDB and SQS clients, for a cold container
//!    (no room cached) and a warm one.
//! 3. `transactions` transactions of `events` events each
//!    ([`synthetic_transaction`]: messages, edits and redactions in Synapse's
//!    shape, in one room) are pushed one after the other, as Synapse pushes
//!    them, to the front door with the `hs_token`; the latency to each `200`
//!    is measured. The `200` comes only once everything is durable (stored
//!    and published), so it is also the latency to durable.
//!
//! While it runs, a consumer takes the inbound queue's events off as the
//! application would (moto's FIFO queues slow down as they fill: a send
//! scans the queue for duplicates), and the queue is purged at the end:
//! run it on a stack of its own, not beside the tests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;

use aws_sdk_dynamodb::types::AttributeValue;
use bridge::config::{
    Env, InboundQueueConfig, MatrixConfig, ProcessEnv, RegistrationConfig, Secret, TableConfig,
    hs_token, puppet_namer,
};
use bridge::function::Handler;
use bridge::handlers::transactions;
use bridge::ids::{ConversationId, PuppetNamer};
use bridge::inbound::SqsInboundQueue;
use bridge::matrix::AppserviceClient;
use bridge::metrics::Metrics;
use bridge::model::{Conversation, ConversationKind, Member, Role};
use bridge::ports::{InitError, Ports};
use bridge::queue::SqsRetryQueue;
use bridge::runtime::{BoxError, aws_config};
use bridge::secrets::CachedSecret;
use bridge::store::prelude::*;
use bridge::store::{Claim, DynamoStore};

use crate::wire::{Trips, Wire};

/// A transaction of `events` events of `sender` in `room`, as Synapse
/// pushes them: mostly text messages (some formatted), every tenth an edit
/// of the message before it, and a few redactions. Event ids start with
/// `tag`, so each transaction's are new.
pub fn synthetic_transaction(room: &str, sender: &str, events: usize, tag: &str) -> Value {
    let base: u64 = 1_795_000_000_000;
    let mut messages: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(events);
    for i in 0..events {
        let event_id = format!("${tag}-{i}");
        let mut event = json!({
            "type": "m.room.message", "event_id": event_id, "room_id": room,
            "sender": sender, "user_id": sender, "origin_server_ts": base + i as u64,
            "unsigned": {"age": 12}, "age": 12,
        });
        let last = messages.last().cloned();
        match (i % 10, i % 25, last) {
            (9, _, Some(target)) => {
                event["content"] = json!({
                    "msgtype": "m.text", "body": format!("* edited message {i}"),
                    "m.new_content": {"msgtype": "m.text", "body": format!("edited message {i}")},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": target},
                });
            }
            (_, 12, Some(target)) => {
                messages.pop();
                event["type"] = json!("m.room.redaction");
                event["content"] = json!({"redacts": target, "reason": "bench"});
                event["redacts"] = json!(target);
            }
            _ if i % 3 == 0 => {
                event["content"] = json!({
                    "msgtype": "m.text", "body": format!("**message** {i} of the bench, with some words to carry"),
                    "format": "org.matrix.custom.html",
                    "formatted_body": format!("<strong>message</strong> {i} of the bench, with some words to carry"),
                });
                messages.push(event_id);
            }
            _ => {
                event["content"] = json!({
                    "msgtype": "m.text", "body": format!("message {i} of the bench, with some words to carry it along"),
                });
                messages.push(event_id);
            }
        }
        out.push(event);
    }
    json!({"events": out, "ephemeral": []})
}

/// An API Gateway (payload 2.0) event for an appservice request, as the
/// front door makes it.
pub fn appservice_event(
    method: &str,
    path: &str,
    route_key: &str,
    params: Value,
    token: &str,
    body: &str,
) -> Value {
    json!({
        "version": "2.0", "routeKey": route_key, "rawPath": path, "rawQueryString": "",
        "headers": {"authorization": format!("Bearer {token}"), "content-type": "application/json"},
        "pathParameters": params,
        "requestContext": {
            "accountId": "000000000000", "apiId": "bench", "domainName": "localhost", "domainPrefix": "localhost",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": uuid::Uuid::new_v4().to_string(), "routeKey": route_key, "stage": "$default",
            "time": "", "timeEpoch": 0,
        },
        "body": body, "isBase64Encoded": false,
    })
}

/// The deployed adapters, with the table's and the queue's requests counted.
struct Counted {
    store: DynamoStore,
    inbound: SqsInboundQueue,
    retry: SqsRetryQueue,
    matrix: AppserviceClient,
    namer: PuppetNamer,
    hs_token: Secret,
}

impl Ports for Counted {
    type Store = DynamoStore;
    type Matrix = AppserviceClient;
    type Queue = SqsRetryQueue;
    type Inbound = SqsInboundQueue;

    async fn store(&self) -> Result<DynamoStore, InitError> {
        Ok(self.store.clone())
    }
    async fn matrix(&self) -> Result<AppserviceClient, InitError> {
        Ok(self.matrix.clone())
    }
    async fn queue(&self) -> Result<SqsRetryQueue, InitError> {
        Ok(self.retry.clone())
    }
    async fn inbound(&self) -> Result<SqsInboundQueue, InitError> {
        Ok(self.inbound.clone())
    }
    async fn hs_token(&self) -> Result<CachedSecret, InitError> {
        Ok(CachedSecret::fixed(self.hs_token.clone()))
    }
    fn namer(&self) -> Result<PuppetNamer, InitError> {
        Ok(self.namer.clone())
    }
    fn metrics(&self, function: &'static str) -> Metrics {
        Metrics::off(function)
    }
}

/// Sets up a conversation of its own with a room of its own; its room id.
async fn conversation(
    store: &DynamoStore,
    env: &dyn Env,
    sender: &str,
) -> Result<(ConversationId, String), BoxError> {
    let server = MatrixConfig::from_env(env)?.server_name;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let id = ConversationId::parse(format!("bench-{}", &tag[..12]))?;
    let until = OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let draft = Conversation::draft(
        id.clone(),
        ConversationKind::Group,
        OffsetDateTime::now_utc(),
    );
    let Claim::Granted {
        token,
        mut conversation,
    } = store.claim_conversation(&draft, until).await?
    else {
        return Err("the bench's conversation exists already".into());
    };
    conversation.room_id = Some(format!("!bench{tag}:{server}").try_into()?);
    let room = conversation.room_id.clone().ok_or("no room")?;
    store.record_room(&id, token, &room).await?;
    let member = Member {
        conversation_id: id.clone(),
        matrix_user_id: sender.try_into()?,
        user_id: None,
        role: Role::Member,
        display_name: Some("Bench".into()),
        joined: true,
        removed: None,
        typing_until: None,
    };
    store
        .activate_conversation(&conversation, token, &[member])
        .await?;
    Ok((id, room.to_string()))
}

/// Takes events off the inbound queue, as the application would, until
/// told to stop; how many it took.
async fn consume(
    sqs: aws_sdk_sqs::Client,
    url: String,
    running: tokio::sync::watch::Receiver<bool>,
) -> Result<usize, BoxError> {
    let mut consumed = 0;
    while *running.borrow() {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let entries = received
            .messages
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, message)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(message.receipt_handle)
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        if !entries.is_empty() {
            consumed += entries.len();
            sqs.delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
    }
    Ok(consumed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

/// The sequential round trips of one transaction's critical path: the
/// table's, the queue's, and both together.
#[derive(Clone, Copy, Debug)]
pub struct CriticalPath {
    pub table: Trips,
    pub queue: Trips,
    pub storage: Trips,
}

/// Counts the critical path of an `events`-event transaction of `sender`
/// in `room` (one known to the table), running the `transactions` function
/// in process on counted clients: for a cold container (no room cached),
/// then a warm one.
pub async fn critical_path(
    sdk: &aws_config::SdkConfig,
    env: &dyn Env,
    room: &str,
    sender: &str,
    events: usize,
) -> Result<[CriticalPath; 2], BoxError> {
    let (table, queue, storage) = (Wire::default(), Wire::default(), Wire::default());
    let counted = Counted {
        store: DynamoStore::new(
            table.dynamodb_with(sdk, &storage),
            TableConfig::from_env(env)?.table_name,
        ),
        inbound: SqsInboundQueue::new(
            queue.sqs_with(sdk, &storage),
            InboundQueueConfig::from_env(env)?.queue_url,
        ),
        retry: SqsRetryQueue::new(aws_sdk_sqs::Client::new(sdk), "unused.fifo"),
        matrix: AppserviceClient::local(
            AppserviceClient::http_client()?,
            &MatrixConfig::from_env(env)?,
        )?,
        namer: puppet_namer(env)?,
        hs_token: hs_token(env)?,
    };
    let handler = transactions::function()
        .handler(&counted)
        .await
        .map_err(|err| format!("{err:?}"))?;
    let Handler::Http(function) = handler else {
        return Err("the transactions function is an HTTP function".into());
    };
    let mut paths = Vec::new();
    for run in ["cold", "warm"] {
        for counter in [&table, &queue, &storage] {
            counter.reset();
        }
        let txn = format!("bench-{}-{run}", uuid::Uuid::new_v4().simple());
        let body = synthetic_transaction(room, sender, events, &txn).to_string();
        let path = format!("/_matrix/app/v1/transactions/{txn}");
        let event = appservice_event(
            "PUT",
            &path,
            "PUT /_matrix/app/v1/transactions/{txnId}",
            json!({"txnId": txn}),
            counted.hs_token.expose(),
            &body,
        );
        let response = function
            .call(lambda_http::request::from_str(&event.to_string())?)
            .await;
        if response.status() != 200 {
            return Err(format!(
                "the counted {run} transaction was answered {}",
                response.status()
            )
            .into());
        }
        paths.push(CriticalPath {
            table: table.trips(),
            queue: queue.trips(),
            storage: storage.trips(),
        });
    }
    Ok([paths[0], paths[1]])
}

/// Sets up a conversation of its own with a room of its own, for `sender`;
/// its id and room.
pub async fn bench_conversation(
    sdk: &aws_config::SdkConfig,
    env: &dyn Env,
    sender: &str,
) -> Result<(ConversationId, String), BoxError> {
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        TableConfig::from_env(env)?.table_name,
    );
    conversation(&store, env, sender).await
}

/// Where the load generator pushes its transactions, and how it learns
/// that a transaction's effects are durable.
enum Target {
    /// The bridge's front door: the `200` comes only once everything is
    /// durable. Checked after each `200` (outside the timing): the
    /// transaction's record, written last, must be in the table.
    Bridge,
    /// A peer appservice (`bench/peer`) that stores each event as
    /// `PEER#<room>` / `<event id>` and may answer before it has: the table
    /// is polled after the `200` until every event is there.
    Peer,
}

/// One transaction's latency to its `200` and to durable.
#[derive(Clone, Copy)]
struct Timing {
    answered: Duration,
    durable: Duration,
}

/// How often the load generator looks for a peer's events in the table.
const DURABLE_POLL: Duration = Duration::from_millis(2);

/// Whether `key` is in the table (one strongly consistent `Query`).
async fn exists(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> Result<bool, BoxError> {
    let found = dynamodb
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .consistent_read(true)
        .send()
        .await?;
    Ok(found.count > 0)
}

/// Polls until every event of `events` (ids) is stored by the peer.
async fn peer_durable(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    room: &str,
    mut missing: Vec<String>,
) -> Result<(), BoxError> {
    let pk = AttributeValue::S(format!("PEER#{room}"));
    while !missing.is_empty() {
        let mut found = std::collections::HashSet::new();
        for chunk in missing.chunks(100) {
            let keys = chunk
                .iter()
                .map(|id| {
                    std::collections::HashMap::from([
                        ("pk".to_owned(), pk.clone()),
                        ("sk".to_owned(), AttributeValue::S(id.clone())),
                    ])
                })
                .collect::<Vec<_>>();
            let got = dynamodb
                .batch_get_item()
                .request_items(
                    table,
                    aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                        .set_keys(Some(keys))
                        .projection_expression("sk")
                        .consistent_read(true)
                        .build()?,
                )
                .send()
                .await?;
            for item in got
                .responses
                .unwrap_or_default()
                .remove(table)
                .unwrap_or_default()
            {
                if let Some(AttributeValue::S(sk)) = item.get("sk") {
                    found.insert(sk.clone());
                }
            }
        }
        missing.retain(|id| !found.contains(id));
        if !missing.is_empty() {
            tokio::time::sleep(DURABLE_POLL).await;
        }
    }
    Ok(())
}

/// What the load generator pushes (the same to the bridge and to the
/// peer), and where it looks for what became durable.
struct Load<'a> {
    token: &'a str,
    dynamodb: &'a aws_sdk_dynamodb::Client,
    table: &'a str,
    room: &'a str,
    sender: &'a str,
    transactions: usize,
    events: usize,
}

impl Load<'_> {
    /// Pushes `transactions` transactions of `events` events to `url` (an
    /// appservice's base URL), one after the other, each once the one before
    /// is durable; the timing of each.
    async fn push_all(&self, target: Target, url: &str) -> Result<Vec<Timing>, BoxError> {
        let Load {
            token,
            dynamodb,
            table,
            room,
            sender,
            transactions,
            events,
        } = *self;
        let http = AppserviceClient::http_client()?;
        let mut timings = Vec::with_capacity(transactions);
        for i in 0..transactions {
            let txn = format!("bench-{}-{i}", uuid::Uuid::new_v4().simple());
            let body = synthetic_transaction(room, sender, events, &txn);
            let ids = body["events"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .filter_map(|event| event["event_id"].as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let sent = Instant::now();
            let response = http
                .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
                .bearer_auth(token)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await?;
            let status = response.status().as_u16();
            response.bytes().await?;
            let answered = sent.elapsed();
            if status != 200 {
                return Err(format!("transaction {i} was answered {status}").into());
            }
            let durable = match target {
                Target::Bridge => {
                    if !exists(dynamodb, table, &format!("TXN#{txn}")).await? {
                        return Err(format!("transaction {i} was not durable at its 200").into());
                    }
                    answered
                }
                Target::Peer => {
                    peer_durable(dynamodb, table, room, ids).await?;
                    sent.elapsed()
                }
            };
            timings.push(Timing { answered, durable });
        }
        Ok(timings)
    }
}

/// The latencies' row of the report: p50 and p99 to the `200` and to
/// durable.
fn latency_row(name: &str, timings: &[Timing]) -> String {
    let mut answered: Vec<Duration> = timings.iter().map(|t| t.answered).collect();
    let mut durable: Vec<Duration> = timings.iter().map(|t| t.durable).collect();
    answered.sort();
    durable.sort();
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        ms(percentile(&answered, 50.0)),
        ms(percentile(&answered, 99.0)),
        ms(percentile(&durable, 50.0)),
        ms(percentile(&durable, 99.0)),
        ms(percentile(&durable, 100.0)),
    )
}

fn median_durable(timings: &[Timing]) -> Duration {
    let mut durable: Vec<Duration> = timings.iter().map(|t| t.durable).collect();
    durable.sort();
    percentile(&durable, 50.0)
}

/// Runs the bench; prints a Markdown report on stdout. With `peer` (the
/// base URL of `bench/peer`), the same load generator then pushes the same
/// kind of transactions to the peer.
pub async fn webhook(
    transactions: usize,
    events: usize,
    peer: Option<&str>,
) -> Result<String, BoxError> {
    let env = ProcessEnv;
    let sdk = aws_config().await?;
    let registration = RegistrationConfig::from_env(&env)?;
    let inbound_url = InboundQueueConfig::from_env(&env)?.queue_url;
    let table = TableConfig::from_env(&env)?.table_name;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sender = format!("@bench-user:{}", registration.server_name);
    let (conversation_id, room) = bench_conversation(&sdk, &env, &sender).await?;
    let [cold, warm] = critical_path(&sdk, &env, &room, &sender, events).await?;

    // Latency through the front door, with the application consuming.
    let consuming = tokio::sync::watch::channel(true);
    let consumer = tokio::spawn(consume(
        aws_sdk_sqs::Client::new(&sdk),
        inbound_url.clone(),
        consuming.1,
    ));
    let started = Instant::now();
    let load = Load {
        token: registration.hs_token.expose(),
        dynamodb: &dynamodb,
        table: &table,
        room: &room,
        sender: &sender,
        transactions,
        events,
    };
    let ours = load.push_all(Target::Bridge, &registration.url).await;
    let total = started.elapsed();
    consuming.0.send(false)?;
    let consumed = consumer.await??;
    // Housekeeping: SQS allows one purge a minute; a refused one leaves
    // the events for the next run's consumer.
    let purged = aws_sdk_sqs::Client::new(&sdk)
        .purge_queue()
        .queue_url(&inbound_url)
        .send()
        .await;
    if let Err(err) = purged {
        tracing::warn!(error = %err, "the inbound queue was not purged");
    }
    let ours = ours?;

    let theirs = match peer {
        Some(url) => Some(load.push_all(Target::Peer, url).await?),
        None => None,
    };

    let per_second = (transactions * events) as f64 / total.as_secs_f64().max(f64::EPSILON);
    let row = |name: &str, path: &CriticalPath| {
        format!(
            "| {name} | {} ({} requests) | {} ({} requests) | {} |\n",
            path.table.sequential,
            path.table.requests,
            path.queue.sequential,
            path.queue.requests,
            path.storage.sequential
        )
    };
    let mut latencies = latency_row("bridge (`transactions`, durable before its 200)", &ours);
    let mut comparison = String::new();
    if let Some(theirs) = &theirs {
        latencies += &latency_row(
            "peer (`bench/peer`, matrix-appservice + @aws-sdk/client-dynamodb)",
            theirs,
        );
        // Above 1: the bridge is durable sooner (the target is 3).
        let speedup =
            median_durable(theirs).as_secs_f64() / median_durable(&ours).as_secs_f64().max(1e-9);
        comparison = format!(
            "\nTime to durable, p50: the peer's divided by the bridge's is {speedup:.2} \
             (above 1: the bridge is durable sooner).\n"
        );
    }
    Ok(format!(
        "Conversation `{conversation_id}`, {transactions} transactions of {events} events each \
         ({per_second:.0} events/s end to end through the bridge), each pushed once the one \
         before is durable; {consumed} events consumed off the inbound queue meanwhile.\n\n\
         | appservice | to the 200, p50 (ms) | p99 | to durable, p50 (ms) | p99 | max |\n\
         | --- | --- | --- | --- | --- | --- |\n{latencies}{comparison}\n\
         | one {events}-event transaction | sequential table round trips | sequential queue round trips | sequential storage round trips in all |\n\
         | --- | --- | --- | --- |\n{}{}",
        row("cold container (room not cached)", &cold),
        row("warm container", &warm),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_transaction_mixes_messages_edits_and_redactions() {
        let body = synthetic_transaction("!r:localhost", "@u:localhost", 100, "t");
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 100);
        let kind = |e: &Value| {
            if e["type"] == "m.room.redaction" {
                "redaction"
            } else if e["content"]["m.relates_to"]["rel_type"] == "m.replace" {
                "edit"
            } else {
                "message"
            }
        };
        let count = |k: &str| events.iter().filter(|e| kind(e) == k).count();
        assert_eq!(
            (count("message"), count("edit"), count("redaction")),
            (86, 10, 4)
        );
        // Every edit and redaction names an event before it.
        for (i, event) in events.iter().enumerate() {
            let target = event["content"]["m.relates_to"]["event_id"]
                .as_str()
                .or(event["content"]["redacts"].as_str());
            if let Some(target) = target {
                assert!(events[..i].iter().any(|e| e["event_id"] == target));
            }
        }
    }
}
