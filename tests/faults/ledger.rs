//! What the API was asked and what it answered. Every request the suite's
//! users make is an [`Entry`] (each attempt's status, the final answer);
//! every message the API accepted is an [`Accepted`], with its accepted
//! edits and whether it was deleted. The checker compares these with what
//! a plain Matrix user sees.
//!
//! Callers behave as the API asks: a request without an answer, or answered
//! 5xx or 429, is repeated with the same `Idempotency-Key` and body (after
//! `Retry-After` when given), up to a bound; only then is it given up.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// What a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Send,
    /// A send the homeserver will refuse for good (it carries the marker).
    Undeliverable,
    Edit,
    Delete,
    /// A send repeated later with its `Idempotency-Key` and body.
    Replay,
}

/// One request, from its first attempt to its final answer.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// When it was begun, in order.
    pub seq: u64,
    /// When it was finally answered (or given up), in order.
    pub done: u64,
    pub user: String,
    pub conversation: String,
    pub kind: Kind,
    /// The message acted on (edit, delete, replay) or created (send).
    pub message: Option<String>,
    pub key: String,
    pub text: Option<String>,
    /// Each attempt's status; 0 when there was no answer.
    pub attempts: Vec<u16>,
    /// The final answer's status; `None` when given up.
    pub status: Option<u16>,
    pub answer: Value,
    pub millis: u64,
    /// When it was begun and finally answered (ms into the run).
    pub sent_ms: u64,
    pub answered_ms: u64,
}

/// A message the API accepted (`201` or `202` to a send).
#[derive(Clone, Debug, Serialize)]
pub struct Accepted {
    pub id: String,
    pub conversation: String,
    pub sender: String,
    /// The text it was sent with.
    pub text: String,
    pub undeliverable: bool,
    /// The send's `done`: its place in acceptance order.
    pub accepted: u64,
    /// The send's answer: `sent`, `pending` or `failed`.
    pub answered: String,
    /// Accepted edits' texts, in acceptance order.
    pub edits: Vec<String>,
    pub deleted: bool,
    /// When its send was begun and answered (ms into the run).
    pub sent_ms: u64,
    pub answered_ms: u64,
    /// When its latest accepted edit, and its delete, were answered.
    pub edit_answered_ms: Option<u64>,
    pub delete_answered_ms: Option<u64>,
}

#[derive(Default)]
struct Book {
    entries: Vec<Entry>,
    messages: BTreeMap<String, Accepted>,
    /// Replays answered with another message than the first send.
    replay_mismatches: Vec<String>,
}

/// The run's ledger.
pub struct Ledger {
    seq: AtomicU64,
    done: AtomicU64,
    book: Mutex<Book>,
    /// Times are milliseconds from here.
    epoch: Instant,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            seq: AtomicU64::default(),
            done: AtomicU64::default(),
            book: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

/// A request on its way: its number and what it is.
pub struct Begun {
    pub seq: u64,
    pub user: String,
    pub conversation: String,
    pub kind: Kind,
    pub message: Option<String>,
    pub key: String,
    pub text: Option<String>,
    /// When it was begun (ms into the run).
    pub sent_ms: u64,
}

impl Ledger {
    pub fn begin(
        &self,
        user: &str,
        conversation: &str,
        kind: Kind,
        message: Option<&str>,
        text: Option<&str>,
    ) -> Begun {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        Begun {
            seq,
            user: user.to_owned(),
            conversation: conversation.to_owned(),
            kind,
            message: message.map(str::to_owned),
            key: format!(
                "fault-{seq}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            text: text.map(str::to_owned),
            sent_ms: self.epoch.elapsed().as_millis() as u64,
        }
    }

    /// Records a request's final answer; the entry, as recorded.
    pub fn record(&self, begun: Begun, answer: Answer) -> Entry {
        let done = self.done.fetch_add(1, Ordering::SeqCst);
        let answered_id = answer.body["id"].as_str().map(str::to_owned);
        let message = match begun.kind {
            Kind::Send | Kind::Undeliverable => answered_id.clone(),
            _ => begun.message.clone(),
        };
        let entry = Entry {
            seq: begun.seq,
            done,
            user: begun.user,
            conversation: begun.conversation,
            kind: begun.kind,
            message,
            key: begun.key,
            text: begun.text,
            attempts: answer.attempts,
            status: answer.status,
            answer: answer.body,
            millis: answer.millis,
            sent_ms: begun.sent_ms,
            answered_ms: self.epoch.elapsed().as_millis() as u64,
        };
        let mut book = self.book.lock().unwrap();
        let accepted = |status: Option<u16>, ok: &[u16]| status.is_some_and(|s| ok.contains(&s));
        match entry.kind {
            Kind::Send | Kind::Undeliverable if accepted(entry.status, &[201, 202]) => {
                if let Some(id) = &answered_id {
                    book.messages.insert(
                        id.clone(),
                        Accepted {
                            id: id.clone(),
                            conversation: entry.conversation.clone(),
                            sender: entry.user.clone(),
                            text: entry.text.clone().unwrap_or_default(),
                            undeliverable: entry.kind == Kind::Undeliverable,
                            accepted: done,
                            answered: entry.answer["status"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            edits: Vec::new(),
                            deleted: false,
                            sent_ms: entry.sent_ms,
                            answered_ms: entry.answered_ms,
                            edit_answered_ms: None,
                            delete_answered_ms: None,
                        },
                    );
                }
            }
            Kind::Edit if accepted(entry.status, &[200, 202]) => {
                if let Some(message) = entry
                    .message
                    .as_ref()
                    .and_then(|id| book.messages.get_mut(id))
                {
                    message.edits.push(entry.text.clone().unwrap_or_default());
                    message.edit_answered_ms = Some(entry.answered_ms);
                }
            }
            Kind::Delete if accepted(entry.status, &[204]) => {
                if let Some(message) = entry
                    .message
                    .as_ref()
                    .and_then(|id| book.messages.get_mut(id))
                {
                    message.deleted = true;
                    message.delete_answered_ms.get_or_insert(entry.answered_ms);
                }
            }
            Kind::Replay
                if accepted(entry.status, &[200, 201, 202]) && answered_id != entry.message =>
            {
                book.replay_mismatches.push(format!(
                    "replay of {} answered {}",
                    entry.message.as_deref().unwrap_or("?"),
                    answered_id.as_deref().unwrap_or("no id")
                ));
            }
            _ => {}
        }
        book.entries.push(entry.clone());
        entry
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut entries = self.book.lock().unwrap().entries.clone();
        entries.sort_by_key(|entry| entry.seq);
        entries
    }

    pub fn messages(&self) -> BTreeMap<String, Accepted> {
        self.book.lock().unwrap().messages.clone()
    }

    pub fn replay_mismatches(&self) -> Vec<String> {
        self.book.lock().unwrap().replay_mismatches.clone()
    }
}

/// A request's final answer.
#[derive(Debug)]
pub struct Answer {
    pub attempts: Vec<u16>,
    pub status: Option<u16>,
    pub body: Value,
    pub millis: u64,
}

/// The API's caller, repeating what may be repeated.
#[derive(Clone)]
pub struct Caller {
    http: reqwest::Client,
    base: String,
    max_attempts: u32,
}

impl Caller {
    pub fn new(base: &str, max_attempts: u32) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
            base: base.to_owned(),
            max_attempts: max_attempts.max(1),
        }
    }

    /// `method path` with `token`, the request's `key` and JSON `body`,
    /// repeated while there is no answer or the answer is 5xx or 429.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let started = Instant::now();
        let mut attempts = Vec::new();
        let mut last = Value::Null;
        for attempt in 0..self.max_attempts {
            let mut request = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.base))
                .bearer_auth(token);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_owned());
            }
            let mut wait = Duration::from_millis((250u64 << attempt.min(4)).min(4000));
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let bytes = response.bytes().await.unwrap_or_default();
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    attempts.push(status);
                    if status < 500 && status != 429 {
                        return Answer {
                            attempts,
                            status: Some(status),
                            body,
                            millis: started.elapsed().as_millis() as u64,
                        };
                    }
                    last = body;
                    wait = wait.max(retry_after.unwrap_or_default());
                }
                Err(_) => attempts.push(0),
            }
            tokio::time::sleep(wait).await;
        }
        Answer {
            attempts,
            status: None,
            body: last,
            millis: started.elapsed().as_millis() as u64,
        }
    }
}
