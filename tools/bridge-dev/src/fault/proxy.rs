//! The fault proxy: an HTTP/1.1 reverse proxy on loopback between the
//! bridge's appservice client and the homeserver, which misbehaves on a
//! [`Schedule`]: it delays, stalls, drops (before and after forwarding),
//! resets, and answers 5xx, 504-after-forwarding and 429 with
//! `Retry-After`/`retry_after_ms`.
//!
//! - Each request to the homeserver is forwarded on a connection of its own
//!   (`Connection: close`), so a fault cuts exactly one request.
//! - Only requests handled while the proxy is active take a number in the
//!   schedule; paused, it passes everything (for setting up).
//! - A request whose body contains the refusal marker is always answered
//!   `400 M_BAD_JSON`, as a homeserver that refuses one event for good
//!   (what the bridge must mark `failed`).
//! - While the homeserver is down the proxy answers `502`, as a reverse
//!   proxy in front of a homeserver would (or closes, with
//!   [`DownAnswer::Close`]).
//! - `GET /_fault/stats`, `POST /_fault/pause` and `POST /_fault/resume`
//!   are the proxy's own; they are never forwarded.
//!
//! Every request is logged, one line each (method, path, fault, the
//! homeserver's status and time); never a header, so no token.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::http::{self, Head};
use super::schedule::{Fault, FaultKind, Schedule};

/// What the proxy answers while the homeserver does not accept connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownAnswer {
    /// `502 Bad Gateway`, as a reverse proxy would.
    BadGateway,
    /// Close the connection without an answer.
    Close,
}

/// Where the proxy's log lines go.
pub type LogSink = Box<dyn Write + Send>;

/// The proxy's settings.
pub struct ProxyConfig {
    /// The homeserver, `host:port`.
    pub upstream: String,
    pub schedule: Schedule,
    /// Requests whose body contains this are refused for good.
    pub refuse_marker: Option<String>,
    pub upstream_down: DownAnswer,
    pub log: Option<LogSink>,
}

/// What the proxy did, by kind.
#[derive(Debug, Default)]
struct Counters {
    faults: [AtomicU64; 9],
    refused: AtomicU64,
    upstream_down: AtomicU64,
    paused: AtomicU64,
    control: AtomicU64,
}

/// A copy of the proxy's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests that took a number in the schedule.
    pub scheduled: u64,
    /// By fault kind, indexed by [`FaultKind::index`].
    pub faults: [u64; 9],
    /// Refused for good (the refusal marker).
    pub refused: u64,
    /// Answered 502 (or closed) because the homeserver was down.
    pub upstream_down: u64,
    /// Passed while paused.
    pub paused: u64,
}

impl Stats {
    pub fn count(&self, kind: FaultKind) -> u64 {
        self.faults[kind.index()]
    }

    pub fn to_json(&self) -> Value {
        let mut faults = serde_json::Map::new();
        for kind in FaultKind::ALL {
            faults.insert(kind.name().into(), json!(self.count(kind)));
        }
        json!({
            "scheduled": self.scheduled,
            "faults": faults,
            "refused": self.refused,
            "upstream_down": self.upstream_down,
            "paused": self.paused,
        })
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} scheduled:", self.scheduled)?;
        for kind in FaultKind::ALL {
            write!(f, " {} {}", kind.name(), self.count(kind))?;
        }
        write!(
            f,
            "; refused {}, homeserver down {}, passed while paused {}",
            self.refused, self.upstream_down, self.paused
        )
    }
}

struct Shared {
    upstream: String,
    schedule: Schedule,
    refuse_marker: Option<Vec<u8>>,
    upstream_down: DownAnswer,
    active: AtomicBool,
    next: AtomicU64,
    counters: Counters,
    log: Mutex<Option<LogSink>>,
}

impl Shared {
    /// Writes a line, after the time (UTC, as the functions' logs have it).
    fn log(&self, line: fmt::Arguments<'_>) {
        if let Ok(mut sink) = self.log.lock()
            && let Some(sink) = sink.as_mut()
        {
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let _ = writeln!(sink, "{now} {line}");
            let _ = sink.flush();
        }
    }

    fn stats(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut faults = [0; 9];
        for (count, counter) in faults.iter_mut().zip(&self.counters.faults) {
            *count = load(counter);
        }
        Stats {
            scheduled: load(&self.next),
            faults,
            refused: load(&self.counters.refused),
            upstream_down: load(&self.counters.upstream_down),
            paused: load(&self.counters.paused),
        }
    }

    fn refuses(&self, body: &[u8]) -> bool {
        self.refuse_marker.as_deref().is_some_and(|marker| {
            !marker.is_empty() && body.windows(marker.len()).any(|w| w == marker)
        })
    }
}

/// A running fault proxy. Dropping it stops it (and cuts its connections).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0: any free port) and starts serving, active.
    pub async fn start(listen: SocketAddr, config: ProxyConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: config.upstream,
            schedule: config.schedule,
            refuse_marker: config.refuse_marker.map(String::into_bytes),
            upstream_down: config.upstream_down,
            active: AtomicBool::new(true),
            next: AtomicU64::new(0),
            counters: Counters::default(),
            log: Mutex::new(config.log),
        });
        shared.log(format_args!(
            "fault-proxy: {addr} -> {}, {}",
            shared.upstream, shared.schedule
        ));
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Active: requests get the schedule's faults; paused: they pass.
    pub fn set_active(&self, active: bool) {
        self.shared.active.store(active, Ordering::SeqCst);
        self.shared.log(format_args!(
            "fault-proxy: {}",
            if active { "active" } else { "paused" }
        ));
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Writes a log line of the caller's (an event, say a restart).
    pub fn note(&self, line: &str) {
        self.shared.log(format_args!("fault-proxy: {line}"));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(err) => {
                    shared.log(format_args!("fault-proxy: accept failed: {err}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What to do with the client's connection after a request.
enum Then {
    Answer(Vec<u8>),
    /// Close without answering.
    Close,
    /// Reset (RST).
    Reset,
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let request = match http::read_head(&mut reader).await {
            Ok(Some(head)) => match head.request_framing() {
                Ok(framing) => match http::read_body(&mut reader, framing).await {
                    Ok(body) => (head, body),
                    Err(_) => return,
                },
                Err(_) => return,
            },
            Ok(None) | Err(_) => return,
        };
        let (head, body) = request;
        let close = head.wants_close();
        let then = handle(&shared, &head, body, close).await;
        match then {
            Then::Answer(bytes) => {
                if write.write_all(&bytes).await.is_err() || close {
                    return;
                }
            }
            Then::Close => {
                let _ = write.shutdown().await;
                return;
            }
            Then::Reset => {
                if let Ok(stream) = reader.into_inner().reunite(write) {
                    // SO_LINGER 0: close sends RST (and does not block).
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    drop(stream);
                }
                return;
            }
        }
    }
}

/// The path of a target, with only the `user_id` of its query (nothing
/// else from a query is logged).
fn loggable(target: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match query.split('&').find(|pair| pair.starts_with("user_id=")) {
        Some(user) => format!("{path}?{user}"),
        None => path.to_owned(),
    }
}

fn matrix_error(status: u16, errcode: &str, error: &str, close: bool) -> Vec<u8> {
    http::json_response(
        status,
        &[],
        &json!({"errcode": errcode, "error": error}),
        close,
    )
}

async fn handle(shared: &Shared, head: &Head, body: Vec<u8>, close: bool) -> Then {
    let target = head.target().to_owned();
    if let Some(command) = target.strip_prefix("/_fault/") {
        shared.counters.control.fetch_add(1, Ordering::Relaxed);
        return Then::Answer(control(shared, head.method(), command, close));
    }
    let method = head.method().to_owned();
    let shown = loggable(&target);
    if matches!(method.as_str(), "PUT" | "POST") && shared.refuses(&body) {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        shared.log(format_args!(
            "refused {method} {shown} -> 400 M_BAD_JSON (refusal marker)"
        ));
        return Then::Answer(matrix_error(
            400,
            "M_BAD_JSON",
            "refused by the fault proxy",
            close,
        ));
    }
    let (number, fault) = if shared.active.load(Ordering::SeqCst) {
        let n = shared.next.fetch_add(1, Ordering::SeqCst);
        (Some(n), shared.schedule.fault(n))
    } else {
        shared.counters.paused.fetch_add(1, Ordering::Relaxed);
        (None, Fault::Pass)
    };
    if number.is_some() {
        shared.counters.faults[fault.kind().index()].fetch_add(1, Ordering::Relaxed);
    }
    let label = number.map_or_else(|| "paused".to_owned(), |n| format!("#{n}"));
    let started = Instant::now();
    let upstream = if fault.forwards() {
        if let Fault::Delay(wait) | Fault::Stall(wait) = fault {
            tokio::time::sleep(wait).await;
        }
        Some(http::exchange(&shared.upstream, head, &body, Some(&shared.upstream)).await)
    } else {
        None
    };
    let outcome = match &upstream {
        None => "not forwarded".to_owned(),
        Some(Ok((response, _))) => format!(
            "homeserver {} in {} ms",
            response.status().unwrap_or_default(),
            started.elapsed().as_millis()
        ),
        Some(Err(err)) => format!("homeserver down ({err})"),
    };
    shared.log(format_args!(
        "{label} {method} {shown} -> {fault}: {outcome}"
    ));
    match (fault, upstream) {
        (_, Some(Err(_))) => {
            shared
                .counters
                .upstream_down
                .fetch_add(1, Ordering::Relaxed);
            match shared.upstream_down {
                DownAnswer::BadGateway => Then::Answer(matrix_error(
                    502,
                    "M_UNKNOWN",
                    "the homeserver is not answering",
                    close,
                )),
                DownAnswer::Close => Then::Close,
            }
        }
        (Fault::DropBefore | Fault::DropAfter, _) => Then::Close,
        (Fault::Reset, _) => Then::Reset,
        (Fault::ServerError(status), _) => Then::Answer(matrix_error(
            status,
            "M_UNKNOWN",
            "injected by the fault proxy",
            close,
        )),
        (Fault::GatewayTimeout, _) => Then::Answer(matrix_error(
            504,
            "M_UNKNOWN",
            "the fault proxy gave up waiting (after forwarding)",
            close,
        )),
        (Fault::RateLimited(after), _) => {
            let millis = after.as_millis() as u64;
            let seconds = millis.div_ceil(1000).max(1);
            Then::Answer(http::json_response(
                429,
                &[("retry-after".into(), seconds.to_string())],
                &json!({"errcode": "M_LIMIT_EXCEEDED", "error": "injected by the fault proxy", "retry_after_ms": millis}),
                close,
            ))
        }
        (_, Some(Ok((response, body)))) => Then::Answer(http::render(
            &response.start,
            response.end_to_end(),
            close,
            &body,
        )),
        // Forwarding faults always have an upstream result.
        (_, None) => Then::Close,
    }
}

fn control(shared: &Shared, method: &str, command: &str, close: bool) -> Vec<u8> {
    match (method, command) {
        ("GET", "stats") => http::json_response(200, &[], &shared.stats().to_json(), close),
        ("POST", "pause" | "resume") => {
            let active = command == "resume";
            shared.active.store(active, Ordering::SeqCst);
            shared.log(format_args!(
                "fault-proxy: {}",
                if active { "active" } else { "paused" }
            ));
            http::json_response(200, &[], &json!({"active": active}), close)
        }
        _ => http::json_response(
            404,
            &[],
            &json!({"error": "GET /_fault/stats, POST /_fault/pause or /_fault/resume"}),
            close,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A homeserver stand-in answering every request `200 {"n": count}`;
    /// its address and how many requests it got.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    while let Ok(Some(head)) = http::read_head(&mut reader).await {
                        let body = http::read_body(&mut reader, head.request_framing().unwrap())
                            .await
                            .unwrap();
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let answer = json!({"n": n, "echo": String::from_utf8_lossy(&body)});
                        let bytes = http::json_response(200, &[], &answer, head.wants_close());
                        if write.write_all(&bytes).await.is_err() || head.wants_close() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    async fn start_proxy(upstream: SocketAddr, faults: Vec<Fault>) -> FaultProxy {
        FaultProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            ProxyConfig {
                upstream: upstream.to_string(),
                schedule: Schedule::Cycle(faults),
                refuse_marker: Some("#refuse".into()),
                upstream_down: DownAnswer::BadGateway,
                log: None,
            },
        )
        .await
        .unwrap()
    }

    /// One request on a connection of its own: the answer, or the error
    /// reading it.
    async fn call(
        proxy: &FaultProxy,
        method: &str,
        path: &str,
        body: &str,
    ) -> io::Result<(Head, Value)> {
        let mut stream = TcpStream::connect(proxy.addr()).await?;
        let request = http::render(
            &format!("{method} {path} HTTP/1.1"),
            &[("Host".to_owned(), "x".to_owned())],
            false,
            body.as_bytes(),
        );
        stream.write_all(&request).await?;
        let mut reader = BufReader::new(&mut stream);
        let head = http::read_head(&mut reader)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let body = http::read_body(&mut reader, head.response_framing(method)?).await?;
        Ok((head, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    #[tokio::test]
    async fn each_fault_does_what_it_says() {
        let (addr, seen) = upstream().await;
        let proxy = start_proxy(
            addr,
            vec![
                Fault::Pass,
                Fault::ServerError(503),
                Fault::RateLimited(Duration::from_millis(1500)),
                Fault::DropBefore,
                Fault::DropAfter,
                Fault::Reset,
                Fault::GatewayTimeout,
                Fault::Delay(Duration::from_millis(30)),
            ],
        )
        .await;
        let put = |n: usize| {
            call(
                &proxy,
                "PUT",
                "/_matrix/client/v3/send/t?user_id=%40a&x=secret",
                if n == 0 { "{\"a\":1}" } else { "{}" },
            )
        };

        let (head, body) = put(0).await.unwrap();
        assert_eq!((head.status(), body["n"].as_u64()), (Some(200), Some(1)));
        assert_eq!(body["echo"], "{\"a\":1}", "the body is forwarded");

        let (head, body) = put(1).await.unwrap();
        assert_eq!(
            (head.status(), body["errcode"].as_str()),
            (Some(503), Some("M_UNKNOWN"))
        );

        let (head, body) = put(2).await.unwrap();
        assert_eq!(head.status(), Some(429));
        assert_eq!(head.header("retry-after"), Some("2"));
        assert_eq!(
            (body["errcode"].as_str(), body["retry_after_ms"].as_u64()),
            (Some("M_LIMIT_EXCEEDED"), Some(1500))
        );
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "neither reached the homeserver"
        );

        assert!(put(3).await.is_err(), "dropped before: no answer");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(put(4).await.is_err(), "dropped after: no answer");
        assert_eq!(seen.load(Ordering::SeqCst), 2, "but delivered");
        assert!(put(5).await.is_err(), "reset");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        let (head, _) = put(6).await.unwrap();
        assert_eq!(head.status(), Some(504));
        assert_eq!(seen.load(Ordering::SeqCst), 3, "504 after forwarding");
        let started = Instant::now();
        let (head, _) = put(7).await.unwrap();
        assert_eq!(head.status(), Some(200));
        assert!(started.elapsed() >= Duration::from_millis(30));

        let stats = proxy.stats();
        assert_eq!(stats.scheduled, 8);
        for kind in [
            FaultKind::Pass,
            FaultKind::ServerError,
            FaultKind::DropAfter,
            FaultKind::Delay,
        ] {
            assert_eq!(stats.count(kind), 1, "{}", kind.name());
        }
    }

    #[tokio::test]
    async fn a_kept_alive_connection_carries_several_requests() {
        let (addr, seen) = upstream().await;
        let proxy = start_proxy(addr, vec![Fault::Pass]).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let (read, mut write) = stream.split();
        let mut reader = BufReader::new(read);
        for n in 1..=3u64 {
            let request = http::render("GET /x HTTP/1.1", &[], false, b"");
            write.write_all(&request).await.unwrap();
            let head = http::read_head(&mut reader).await.unwrap().unwrap();
            assert!(head.header("connection").is_none(), "kept alive");
            let body = http::read_body(&mut reader, head.response_framing("GET").unwrap())
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["n"].as_u64(), Some(n));
        }
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn refusals_pauses_control_and_a_homeserver_that_is_down() {
        let (addr, seen) = upstream().await;
        let proxy = start_proxy(addr, vec![Fault::ServerError(500)]).await;
        let (head, body) = call(&proxy, "PUT", "/send", "{\"body\": \"x #refuse\"}")
            .await
            .unwrap();
        assert_eq!(
            (head.status(), body["errcode"].as_str()),
            (Some(400), Some("M_BAD_JSON"))
        );
        let (head, _) = call(&proxy, "POST", "/_fault/pause", "").await.unwrap();
        assert_eq!(head.status(), Some(200));
        let (head, _) = call(&proxy, "PUT", "/send", "{}").await.unwrap();
        assert_eq!(head.status(), Some(200), "paused: passed");
        call(&proxy, "POST", "/_fault/resume", "").await.unwrap();
        let (head, _) = call(&proxy, "PUT", "/send", "{}").await.unwrap();
        assert_eq!(head.status(), Some(500), "active again");
        let (_, stats) = call(&proxy, "GET", "/_fault/stats", "").await.unwrap();
        assert_eq!(stats["scheduled"], 1);
        assert_eq!(stats["refused"], 1);
        assert_eq!(stats["paused"], 1);
        assert_eq!(stats["faults"]["server_error"], 1);
        assert_eq!(seen.load(Ordering::SeqCst), 1);

        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nobody = gone.local_addr().unwrap();
        drop(gone);
        let down = start_proxy(nobody, vec![Fault::Pass]).await;
        let (head, _) = call(&down, "GET", "/x", "").await.unwrap();
        assert_eq!(head.status(), Some(502));
        assert_eq!(down.stats().upstream_down, 1);
    }

    #[test]
    fn only_the_user_id_of_a_query_is_logged() {
        assert_eq!(
            loggable("/a/b?access_token=s&user_id=%40x%3Al&z=1"),
            "/a/b?user_id=%40x%3Al"
        );
        assert_eq!(loggable("/a/b?access_token=s"), "/a/b");
        assert_eq!(loggable("/a"), "/a");
    }
}
