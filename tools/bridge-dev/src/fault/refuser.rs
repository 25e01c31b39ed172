//! A proxy in front of the emulator (moto) that, on demand, refuses
//! connections for a while: it stops listening (a connect is refused) and
//! cuts the connections it carries, then listens again on the same port.
//! moto itself keeps running, so no state is lost: this is the emulator
//! "briefly refusing connections", as DynamoDB and SQS unreachable from a
//! function look.
//!
//! It carries bytes as they are ([`Carry::Bytes`]), or HTTP requests with
//! DynamoDB's taken one at a time ([`Carry::DynamoDb`]). moto serves
//! requests on threads but its `TransactWriteItems` is not safe under
//! concurrency: it snapshots the whole table, and when any condition fails
//! it puts the snapshot back, undoing other requests' writes made meanwhile
//! (and a snapshot taken while another request writes fails with a 500).
//! DynamoDB itself applies each request atomically, so taking DynamoDB
//! requests one at a time is what makes moto behave like it under
//! concurrent load. SQS requests (long polls) pass alongside.
//!
//! What moto never does is DynamoDB's optimistic concurrency: a transaction
//! that touches an item another transaction is working on is cancelled
//! with `TransactionConflict`. With a conflict window, the proxy does that:
//! a `TransactWriteItems` is under way from its arrival until it is
//! answered or the window is over (what DynamoDB takes for one, not the
//! time it waits here for its turn), and one that arrives meanwhile
//! touching one of its items (table, `pk`, `sk`) is cancelled that way,
//! without reaching moto.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use serde_json::{Value, json};

use super::http;

/// How long connecting to the emulator may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How the proxy carries a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Bytes both ways, as they come.
    Bytes,
    /// HTTP/1.1 requests, each to a connection of its own upstream, those
    /// to DynamoDB (`X-Amz-Target: DynamoDB_...`) one at a time; with a
    /// `conflict_window`, overlapping transactions are cancelled as
    /// DynamoDB cancels them.
    DynamoDb { conflict_window: Option<Duration> },
}

#[derive(Debug, Default)]
struct Counts {
    windows: AtomicU64,
    cut: AtomicU64,
    carried: AtomicU64,
    /// DynamoDB requests carried one at a time, and the time the emulator
    /// took for them.
    dynamodb: AtomicU64,
    dynamodb_micros: AtomicU64,
    /// Transactions cancelled with `TransactionConflict`.
    conflicts: AtomicU64,
}

/// A running refusing proxy. Dropping it stops it.
pub struct Refuser {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Duration>,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Refuser {
    /// Listens on `listen` (port 0: any free port) and carries connections
    /// to `upstream` (`host:port`) as `carry` says.
    pub async fn start(listen: SocketAddr, upstream: String, carry: Carry) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        let upstream = Upstream {
            addr: upstream,
            carry,
            one_at_a_time: Arc::new(Mutex::new(())),
            in_flight: InFlight::default(),
        };
        let task = tokio::spawn(run(listener, addr, upstream, receiver, counts.clone()));
        Ok(Self {
            addr,
            commands,
            counts,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses connections for `window`, from now (after any window
    /// already asked for).
    pub fn refuse_for(&self, window: Duration) {
        let _ = self.commands.send(window);
    }

    /// A handle that opens refusal windows from another task.
    pub fn handle(&self) -> RefuserHandle {
        RefuserHandle(self.commands.clone())
    }

    /// DynamoDB requests carried one at a time, and the mean time the
    /// emulator took for one.
    pub fn dynamodb(&self) -> (u64, Duration) {
        let count = self.counts.dynamodb.load(Ordering::Relaxed);
        let micros = self.counts.dynamodb_micros.load(Ordering::Relaxed);
        (
            count,
            Duration::from_micros(micros.checked_div(count).unwrap_or(0)),
        )
    }

    /// Transactions cancelled with `TransactionConflict`.
    pub fn conflicts(&self) -> u64 {
        self.counts.conflicts.load(Ordering::Relaxed)
    }

    /// Windows begun, connections cut, connections carried.
    pub fn counts(&self) -> (u64, u64, u64) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (
            load(&self.counts.windows),
            load(&self.counts.cut),
            load(&self.counts.carried),
        )
    }
}

/// Opens refusal windows on a [`Refuser`] (cloneable, for other tasks).
#[derive(Clone, Debug)]
pub struct RefuserHandle(mpsc::UnboundedSender<Duration>);

impl RefuserHandle {
    /// As [`Refuser::refuse_for`].
    pub fn refuse_for(&self, window: Duration) {
        let _ = self.0.send(window);
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where and how connections are carried.
#[derive(Clone)]
struct Upstream {
    addr: String,
    carry: Carry,
    one_at_a_time: Arc<Mutex<()>>,
    /// The items of transactions under way: until when, and by which.
    in_flight: InFlight,
}

async fn run(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: Upstream,
    mut commands: mpsc::UnboundedReceiver<Duration>,
    counts: Arc<Counts>,
) {
    let mut listener = listener;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    counts.carried.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(carry(client, upstream.clone(), counts.clone()));
                }
            }
            command = commands.recv() => {
                let Some(window) = command else { return };
                counts.windows.fetch_add(1, Ordering::Relaxed);
                drop(listener);
                counts.cut.fetch_add(connections.len() as u64, Ordering::Relaxed);
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                tokio::time::sleep(window).await;
                listener = loop {
                    match TcpListener::bind(addr).await {
                        Ok(listener) => break listener,
                        // The old socket may linger a moment.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn carry(mut client: TcpStream, upstream: Upstream, counts: Arc<Counts>) {
    let _ = client.set_nodelay(true);
    if let Carry::DynamoDb { .. } = upstream.carry {
        return carry_requests(client, upstream, counts).await;
    }
    let Ok(Ok(mut server)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&upstream.addr)).await
    else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// Carries a connection's requests one by one; DynamoDB's under the lock.
async fn carry_requests(client: TcpStream, upstream: Upstream, counts: Arc<Counts>) {
    let window = match upstream.carry {
        Carry::DynamoDb { conflict_window } => conflict_window,
        Carry::Bytes => None,
    };
    let (read, mut write) = client.into_split();
    let mut reader = BufReader::new(read);
    while let Ok(Some(head)) = http::read_head(&mut reader).await {
        let body = match head.request_framing() {
            Ok(framing) => http::read_body(&mut reader, framing).await,
            Err(err) => Err(err),
        };
        let Ok(body) = body else { return };
        let target = head.header("x-amz-target").unwrap_or_default();
        let close = head.wants_close();
        let held = match window {
            Some(window) if target == "DynamoDB_20120810.TransactWriteItems" => {
                upstream.in_flight.hold(transaction_items(&body), window)
            }
            _ => Ok(None),
        };
        let held = match held {
            Ok(held) => held,
            Err(clashing) => {
                counts.conflicts.fetch_add(1, Ordering::Relaxed);
                if write
                    .write_all(&conflict_answer(&clashing, close))
                    .await
                    .is_err()
                    || close
                {
                    return;
                }
                continue;
            }
        };
        let answer = if target.starts_with("DynamoDB") {
            let _turn = upstream.one_at_a_time.lock().await;
            let started = std::time::Instant::now();
            let answer = http::exchange(&upstream.addr, &head, &body, None).await;
            counts.dynamodb.fetch_add(1, Ordering::Relaxed);
            counts
                .dynamodb_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            answer
        } else {
            http::exchange(&upstream.addr, &head, &body, None).await
        };
        drop(held);
        let Ok((response, body)) = answer else { return };
        let bytes = http::render(&response.start, response.end_to_end(), close, &body);
        if write.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}

/// The items a `TransactWriteItems` request touches, one string each
/// (table, `pk`, `sk`), in the request's order.
fn transaction_items(body: &[u8]) -> Vec<String> {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let (hash, range) = (crate::setup::TABLE.hash_key, crate::setup::TABLE.range_key);
    request["TransactItems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_object()?.values().next())
        .map(|op| {
            let key = if op["Key"].is_object() {
                &op["Key"]
            } else {
                &op["Item"]
            };
            format!("{} {} {}", op["TableName"], key[hash], key[range])
        })
        .collect()
}

/// The items of transactions under way: item -> (under way until, by
/// which transaction).
#[derive(Clone, Default)]
struct InFlight(Arc<std::sync::Mutex<Transactions>>);

/// The last transaction's number, and the items under way.
type Transactions = (u64, HashMap<String, (Instant, u64)>);

/// A transaction's items, released when it is answered (dropped).
struct Held {
    in_flight: InFlight,
    id: u64,
    items: Vec<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut state) = self.in_flight.0.lock() {
            for item in &self.items {
                if state.1.get(item).is_some_and(|(_, by)| *by == self.id) {
                    state.1.remove(item);
                }
            }
        }
    }
}

impl InFlight {
    /// Marks `items` as under way for at most `window`; or, when another
    /// transaction has any of them under way, answers which (by their
    /// place in the request).
    fn hold(&self, items: Vec<String>, window: Duration) -> Result<Option<Held>, Vec<bool>> {
        let Ok(mut state) = self.0.lock() else {
            return Err(vec![true; items.len()]);
        };
        let now = Instant::now();
        state.1.retain(|_, (until, _)| *until > now);
        let clashing: Vec<bool> = items
            .iter()
            .map(|item| state.1.contains_key(item))
            .collect();
        if clashing.contains(&true) {
            return Err(clashing);
        }
        state.0 += 1;
        let id = state.0;
        for item in &items {
            state.1.insert(item.clone(), (now + window, id));
        }
        Ok(Some(Held {
            in_flight: self.clone(),
            id,
            items,
        }))
    }
}

/// DynamoDB's answer to a transaction cancelled by a conflict: a reason per
/// item, `TransactionConflict` for the clashing ones.
fn conflict_answer(clashing: &[bool], close: bool) -> Vec<u8> {
    let reasons: Vec<Value> = clashing
        .iter()
        .map(|clash| {
            if *clash {
                json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"})
            } else {
                json!({"Code": "None"})
            }
        })
        .collect();
    let codes: Vec<&str> = clashing
        .iter()
        .map(|clash| {
            if *clash {
                "TransactionConflict"
            } else {
                "None"
            }
        })
        .collect();
    let body = json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
        "CancellationReasons": reasons,
    });
    http::render(
        "HTTP/1.1 400 Bad Request",
        &[(
            "content-type".to_owned(),
            "application/x-amz-json-1.0".to_owned(),
        )],
        close,
        body.to_string().as_bytes(),
    )
}

/// Refuses for `window` every `every`, for good (the command line's
/// `--refuse-every`); the first window begins after `every`.
pub async fn refuse_periodically(refuser: &Refuser, every: Duration, window: Duration) {
    loop {
        tokio::time::sleep(every).await;
        refuser.refuse_for(window);
        tokio::time::sleep(window).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server; its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> io::Result<()> {
        stream.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await?;
        assert_eq!(&answer, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn dynamodb_requests_are_carried_one_at_a_time() {
        // An upstream that answers after 100 ms and counts how many it
        // serves at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (now, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (now_up, most_up) = (now.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (now, most) = (now_up.clone(), most_up.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    let head = http::read_head(&mut reader).await.unwrap().unwrap();
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let host = head.header("host").unwrap_or_default().to_owned();
                    let answer =
                        http::json_response(200, &[], &serde_json::json!({"host": host}), true);
                    write.write_all(&answer).await.unwrap();
                });
            }
        });
        let refuser = Refuser::start(
            "127.0.0.1:0".parse().unwrap(),
            upstream.to_string(),
            Carry::DynamoDb {
                conflict_window: None,
            },
        )
        .await
        .unwrap();
        let call = |target: &'static str| {
            let addr = refuser.addr();
            async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let headers = [
                    ("Host".to_owned(), "signed.example:1".to_owned()),
                    ("X-Amz-Target".to_owned(), target.to_owned()),
                ];
                let request = http::render("POST / HTTP/1.1", &headers, false, b"{}");
                stream.write_all(&request).await.unwrap();
                let mut reader = BufReader::new(&mut stream);
                let head = http::read_head(&mut reader).await.unwrap().unwrap();
                let framing = head.response_framing("POST").unwrap();
                let body = http::read_body(&mut reader, framing).await.unwrap();
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            }
        };
        let answers = futures_join(
            (0..4).map(|_| tokio::spawn(call("DynamoDB_20120810.TransactWriteItems"))),
        )
        .await;
        assert_eq!(
            answers[0]["host"], "signed.example:1",
            "the signed Host is kept"
        );
        assert_eq!(most.load(Ordering::SeqCst), 1, "DynamoDB one at a time");
        assert_eq!(refuser.dynamodb().0, 4);
        assert!(refuser.dynamodb().1 >= Duration::from_millis(100));
        most.store(0, Ordering::SeqCst);
        futures_join((0..4).map(|_| tokio::spawn(call("AmazonSQS.ReceiveMessage")))).await;
        assert!(most.load(Ordering::SeqCst) > 1, "SQS alongside");
    }

    async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for task in tasks.collect::<Vec<_>>() {
            out.push(task.await.unwrap());
        }
        out
    }

    #[test]
    fn a_transaction_touches_its_items_by_table_and_key() {
        let body = serde_json::json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "c#1"}, "sk": {"S": "m#1"}, "body": {"S": "x"}}}},
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "c#1"}, "sk": {"S": "META"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "c#1"}, "sk": {"S": "member#a"}}}},
        ]});
        let items = transaction_items(body.to_string().as_bytes());
        assert_eq!(
            items,
            [
                r#""t" {"S":"c#1"} {"S":"m#1"}"#,
                r#""t" {"S":"c#1"} {"S":"META"}"#,
                r#""t" {"S":"c#1"} {"S":"member#a"}"#,
            ]
        );
        let in_flight = InFlight::default();
        let window = Duration::from_secs(60);
        let first = in_flight.hold(items[..2].to_vec(), window).unwrap();
        let clash = in_flight.hold(items[1..].to_vec(), window).err().unwrap();
        assert_eq!(clash, [true, false], "META is under way");
        drop(first);
        let again = in_flight.hold(items.clone(), Duration::ZERO).unwrap();
        assert!(again.is_some(), "released once answered");
        assert!(
            in_flight.hold(items.clone(), window).is_ok(),
            "and after its window, even before its answer"
        );
        let answer = String::from_utf8(conflict_answer(&clash, false)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"));
        assert!(answer.contains("TransactionCanceledException"));
        assert!(answer.contains(r#""CancellationReasons":[{"Code":"TransactionConflict""#));
    }

    #[tokio::test]
    async fn overlapping_transactions_are_cancelled_as_dynamodb_cancels_them() {
        // An upstream that answers `{}` after 200 ms.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    let head = http::read_head(&mut reader).await.unwrap().unwrap();
                    let framing = head.request_framing().unwrap();
                    http::read_body(&mut reader, framing).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let answer = http::json_response(200, &[], &serde_json::json!({}), true);
                    write.write_all(&answer).await.unwrap();
                });
            }
        });
        let refuser = Refuser::start(
            "127.0.0.1:0".parse().unwrap(),
            upstream.to_string(),
            Carry::DynamoDb {
                conflict_window: Some(Duration::from_secs(60)),
            },
        )
        .await
        .unwrap();
        let transact = |sk: &'static str| {
            let addr = refuser.addr();
            async move {
                let body = serde_json::json!({"TransactItems": [
                    {"Update": {"TableName": "t", "Key": {"pk": {"S": "c"}, "sk": {"S": sk}}}},
                ]});
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let headers = [(
                    "X-Amz-Target".to_owned(),
                    "DynamoDB_20120810.TransactWriteItems".to_owned(),
                )];
                let request = http::render(
                    "POST / HTTP/1.1",
                    &headers,
                    false,
                    body.to_string().as_bytes(),
                );
                stream.write_all(&request).await.unwrap();
                let mut reader = BufReader::new(&mut stream);
                let head = http::read_head(&mut reader).await.unwrap().unwrap();
                let framing = head.response_framing("POST").unwrap();
                http::read_body(&mut reader, framing).await.unwrap();
                head.status().unwrap()
            }
        };
        let first = tokio::spawn(transact("META"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(transact("META").await, 400, "the same item, under way");
        assert_eq!(transact("other").await, 200, "another item");
        assert_eq!(first.await.unwrap(), 200);
        assert_eq!(transact("META").await, 200, "no longer under way");
        assert_eq!(refuser.conflicts(), 1);
    }

    #[tokio::test]
    async fn it_refuses_for_a_window_then_carries_again() {
        let refuser = Refuser::start(
            "127.0.0.1:0".parse().unwrap(),
            echo().await.to_string(),
            Carry::Bytes,
        )
        .await
        .unwrap();
        let mut open = TcpStream::connect(refuser.addr()).await.unwrap();
        round_trip(&mut open).await.unwrap();

        refuser.refuse_for(Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = TcpStream::connect(refuser.addr()).await;
        assert_eq!(
            refused.err().map(|err| err.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
        assert!(
            round_trip(&mut open).await.is_err(),
            "the open connection was cut"
        );

        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut again = TcpStream::connect(refuser.addr()).await.unwrap();
        round_trip(&mut again).await.unwrap();
        let (windows, cut, carried) = refuser.counts();
        assert_eq!((windows, cut, carried), (1, 1, 2));
    }
}
