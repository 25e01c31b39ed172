//! The checker: reads every room as a plain Matrix user (all of its
//! events, and the server's edit aggregation) and every message's final
//! state from the history API, and compares them with the ledger. What must
//! hold (issue 9):
//!
//! - **lost**: every accepted, deliverable, undeleted message is in its
//!   room;
//! - **duplicated**: at most once (and a replayed request is the same
//!   message);
//! - **reordered**: in acceptance order per conversation, as a caller can
//!   observe it (README, "The order the bridge guarantees"): a message whose
//!   send was answered before another's was sent comes first in the room
//!   (across senders, and for each sender in the order of its answers), and
//!   an edit or delete answered before a message was sent reaches the room
//!   before that message. Sends in flight at the same time may land in
//!   either order (counted, not a violation: `concurrent_swapped`);
//! - **edits applied**: the latest accepted edit is what the room shows
//!   (the `m.replace` the server aggregates, or the text sent), each edit
//!   delivered at most once;
//! - **deletes applied**: a deleted message is not visible (redacted, or
//!   never sent), redacted once;
//! - **nothing pending** once drained;
//! - **failed with a reason**: what the homeserver refused for good is
//!   `failed` with a reason, and nothing `failed` is in the room.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use bridge::matrix::{MESSAGE_ID_KEY, is_replacement};
use serde::Serialize;
use serde_json::Value;

use crate::client::{MatrixUser, token};
use crate::ledger::{Accepted, Caller, Entry, Kind, Ledger};

/// How many examples an invariant keeps as evidence.
const EXAMPLES: usize = 12;

/// A conversation and its room.
#[derive(Clone, Debug)]
pub struct Room {
    pub conversation: String,
    pub room_id: String,
}

/// A message as the history API shows it at the end.
#[derive(Clone, Debug, Default)]
pub struct Final {
    pub status: String,
    pub failure: Option<String>,
    pub event_id: Option<String>,
}

/// What the checker found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub label: String,
    pub requests: u64,
    /// Final answers by kind and status (`gave up` when none).
    pub answers: BTreeMap<String, u64>,
    pub attempts_5xx: u64,
    pub attempts_429: u64,
    pub attempts_no_answer: u64,
    pub accepted_sends: u64,
    pub accepted_undeliverable: u64,
    pub accepted_edits: u64,
    pub accepted_deletes: u64,
    pub replays: u64,
    /// Accepted, deliverable and not deleted: should be in the room once.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub lost_pending: u64,
    pub lost_failed: u64,
    pub lost_marked_sent: u64,
    pub lost_other: u64,
    pub duplicated: u64,
    pub extra_copies: u64,
    pub replays_new_message: u64,
    /// Messages shown before one whose send was answered before theirs
    /// was sent.
    pub reordered: u64,
    /// Edits and deletes that reached the room after a message sent once
    /// they were answered.
    pub reordered_changes: u64,
    pub reordered_per_sender: u64,
    /// Concurrent sends (neither answered before the other was sent) that
    /// landed in another order than their message ids': allowed.
    pub concurrent_swapped: u64,
    pub edits_checked: u64,
    pub edits_not_applied: u64,
    pub duplicated_edits: u64,
    pub deletes_checked: u64,
    pub deletes_not_applied: u64,
    pub duplicated_redactions: u64,
    pub pending: u64,
    /// Operations still in the pending index (a send, or an edit or delete
    /// not in Matrix yet) and the outboxes' sum, read from the table.
    pub unsettled_operations: u64,
    pub outbox_left: i64,
    pub failed: u64,
    pub failed_undeliverable: u64,
    pub failed_without_reason: u64,
    pub failed_but_delivered: u64,
    pub undeliverable_not_failed: u64,
    /// Messages in a room the API never accepted (from requests given up).
    pub ghosts: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    /// Seconds from the end of the load to nothing pending; `None` when
    /// it did not happen.
    pub drain_secs: Option<f64>,
    /// How the drain ended, in words.
    pub drain: String,
    /// Evidence, by invariant.
    pub examples: BTreeMap<String, Vec<String>>,
    /// What was done to the bridge (proxy counts, outages).
    pub faults: Vec<String>,
}

impl Report {
    fn example(&mut self, invariant: &str, line: String) {
        let list = self.examples.entry(invariant.to_owned()).or_default();
        if list.len() < EXAMPLES {
            list.push(line);
        }
    }

    /// The invariants that do not hold, each with its counts and evidence.
    /// `no_5xx`: the API may not answer 5xx at all (the load test).
    pub fn violations(&self, no_5xx: bool) -> Vec<String> {
        let mut failed = Vec::new();
        let mut check = |name: &str, holds: bool, counts: String| {
            if !holds {
                let mut text = format!("{name}: {counts}");
                for line in self.examples.get(name).into_iter().flatten() {
                    let _ = write!(text, "\n      {line}");
                }
                failed.push(text);
            }
        };
        check(
            "lost",
            self.lost == 0,
            format!(
                "{} of {} accepted messages are not in their room (still pending {}, failed {}, marked sent {}, other {})",
                self.lost,
                self.expected,
                self.lost_pending,
                self.lost_failed,
                self.lost_marked_sent,
                self.lost_other
            ),
        );
        check(
            "duplicated",
            self.duplicated == 0 && self.replays_new_message == 0,
            format!(
                "{} messages more than once ({} extra copies); {} replays made a new message",
                self.duplicated, self.extra_copies, self.replays_new_message
            ),
        );
        check(
            "reordered",
            self.reordered == 0 && self.reordered_changes == 0,
            format!(
                "{} messages shown before a message answered before they were sent; \
                 {} edits or deletes after a message sent once they were answered",
                self.reordered, self.reordered_changes
            ),
        );
        check(
            "reordered per sender",
            self.reordered_per_sender == 0,
            format!(
                "{} messages out of their sender's acceptance order",
                self.reordered_per_sender
            ),
        );
        check(
            "edits applied",
            self.edits_not_applied == 0 && self.duplicated_edits == 0,
            format!(
                "{} of {} edited messages do not show their latest accepted edit; {} edits delivered more than once",
                self.edits_not_applied, self.edits_checked, self.duplicated_edits
            ),
        );
        check(
            "deletes applied",
            self.deletes_not_applied == 0 && self.duplicated_redactions == 0,
            format!(
                "{} of {} deleted messages still visible; {} redactions more than once",
                self.deletes_not_applied, self.deletes_checked, self.duplicated_redactions
            ),
        );
        check(
            "nothing pending",
            self.pending == 0
                && self.unsettled_operations == 0
                && self.outbox_left == 0
                && self.drain_secs.is_some(),
            format!(
                "{} messages still pending, {} operations unsettled, outboxes at {}; {}",
                self.pending, self.unsettled_operations, self.outbox_left, self.drain
            ),
        );
        check(
            "failed with a reason",
            self.failed_without_reason == 0
                && self.failed_but_delivered == 0
                && self.undeliverable_not_failed == 0,
            format!(
                "{} failed without a reason; {} failed yet in the room; {} refused for good yet not failed",
                self.failed_without_reason,
                self.failed_but_delivered,
                self.undeliverable_not_failed
            ),
        );
        if no_5xx {
            check(
                "no 5xx",
                self.attempts_5xx == 0,
                format!("the API answered 5xx {} times", self.attempts_5xx),
            );
        }
        failed
    }

    /// Records what the table still holds unsettled.
    pub fn set_unsettled(&mut self, (operations, outbox): (usize, i64)) {
        self.unsettled_operations = operations as u64;
        self.outbox_left = outbox;
    }

    /// Records how the drain ended.
    pub fn set_drain(&mut self, drained: crate::suite::Drained, settings: &crate::suite::Settings) {
        use crate::suite::Drained;
        self.drain_secs = match drained {
            Drained::After(secs) => Some(secs),
            _ => None,
        };
        self.drain = match drained {
            Drained::After(secs) => format!("{secs:.1} s after the load"),
            Drained::Deadline => format!(
                "not drained within the deadline ({} s after the load)",
                settings.drain.as_secs()
            ),
            Drained::Stuck(secs) => format!(
                "stuck: the retry queue was empty for {} s with messages still pending ({secs:.1} s after the load)",
                settings.idle.as_secs()
            ),
        };
    }

    /// The counts, for a person.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "==== {} ====", self.label);
        let _ = writeln!(
            out,
            "requests {} | attempts answered 5xx {}, 429 {}, no answer {} | final answers {:?}",
            self.requests,
            self.attempts_5xx,
            self.attempts_429,
            self.attempts_no_answer,
            self.answers
        );
        let _ = writeln!(
            out,
            "accepted: sends {} (+{} undeliverable), edits {}, deletes {}, replays {}",
            self.accepted_sends,
            self.accepted_undeliverable,
            self.accepted_edits,
            self.accepted_deletes,
            self.replays
        );
        let _ = writeln!(
            out,
            "delivered {} of {} expected | lost {} (pending {}, failed {}, marked sent {}, other {}) | duplicated {} ({} extra copies, {} replays made a new message)",
            self.delivered,
            self.expected,
            self.lost,
            self.lost_pending,
            self.lost_failed,
            self.lost_marked_sent,
            self.lost_other,
            self.duplicated,
            self.extra_copies,
            self.replays_new_message
        );
        let _ = writeln!(
            out,
            "reordered {} (shown before a message answered before they were sent), {} changes, {} per sender | concurrent sends in another order than their ids {} (allowed)",
            self.reordered,
            self.reordered_changes,
            self.reordered_per_sender,
            self.concurrent_swapped
        );
        let _ = writeln!(
            out,
            "edits: {} checked, {} not applied, {} duplicated | deletes: {} checked, {} not applied, {} duplicated redactions",
            self.edits_checked,
            self.edits_not_applied,
            self.duplicated_edits,
            self.deletes_checked,
            self.deletes_not_applied,
            self.duplicated_redactions
        );
        let _ = writeln!(
            out,
            "pending {} (operations unsettled {}, outboxes {}) | failed {} (undeliverable {}, without a reason {}, yet delivered {}; undeliverable not failed {}) | ghosts {}",
            self.pending,
            self.unsettled_operations,
            self.outbox_left,
            self.failed,
            self.failed_undeliverable,
            self.failed_without_reason,
            self.failed_but_delivered,
            self.undeliverable_not_failed,
            self.ghosts
        );
        let _ = writeln!(out, "failure reasons: {:?}", self.failure_reasons);
        let _ = writeln!(out, "time to drain: {}", self.drain);
        for line in &self.faults {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

/// The history API's view of every message of `conversation`.
pub async fn finals(caller: &Caller, conversation: &str) -> HashMap<String, Final> {
    let admin = token("svc", true);
    let mut out = HashMap::new();
    let mut before: Option<String> = None;
    loop {
        let mut path = format!("/v1/conversations/{conversation}/messages?limit=100");
        if let Some(before) = &before {
            path.push_str(&format!("&before={before}"));
        }
        let answer = caller.call("GET", &path, &admin, None, None).await;
        assert_eq!(
            answer.status,
            Some(200),
            "history of {conversation}: {answer:?}"
        );
        for message in answer.body["messages"].as_array().into_iter().flatten() {
            let text = |key: &str| message[key].as_str().map(str::to_owned);
            out.insert(
                text("id").unwrap_or_default(),
                Final {
                    status: text("status").unwrap_or_default(),
                    failure: text("failure"),
                    event_id: text("event_id"),
                },
            );
        }
        match answer.body["next"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => break,
        }
    }
    out
}

/// How many of `positions` are out of order: all but the longest
/// increasing run (not necessarily contiguous).
pub fn out_of_order(positions: &[usize]) -> usize {
    let mut tails: Vec<usize> = Vec::new();
    for &position in positions {
        match tails.binary_search(&position) {
            Ok(_) => {}
            Err(at) if at == tails.len() => tails.push(position),
            Err(at) => tails[at] = position,
        }
    }
    positions.len() - tails.len()
}

/// A room as the plain user sees it.
struct Seen {
    /// Event id -> place in the timeline.
    positions: HashMap<String, usize>,
    /// Message id -> the visible (unredacted) events carrying it, in order.
    copies: HashMap<String, Vec<(usize, String, Value)>>,
    redacted: HashSet<String>,
    /// Original event -> its replacements' (event id, new body).
    replacements: HashMap<String, Vec<(String, String)>>,
    /// Event -> how many redactions name it.
    redactions: HashMap<String, u32>,
    /// Event -> the place of the first redaction naming it.
    redacted_at: HashMap<String, usize>,
}

fn read_room(events: &[Value]) -> Seen {
    let mut seen = Seen {
        positions: HashMap::new(),
        copies: HashMap::new(),
        redacted: HashSet::new(),
        replacements: HashMap::new(),
        redactions: HashMap::new(),
        redacted_at: HashMap::new(),
    };
    for (position, event) in events.iter().enumerate() {
        let id = event["event_id"].as_str().unwrap_or_default().to_owned();
        seen.positions.insert(id.clone(), position);
        let content = &event["content"];
        if event["unsigned"]["redacted_because"].is_object() {
            seen.redacted.insert(id.clone());
        }
        match event["type"].as_str() {
            Some("m.room.redaction") => {
                let target = content["redacts"].as_str().or(event["redacts"].as_str());
                if let Some(target) = target {
                    *seen.redactions.entry(target.to_owned()).or_default() += 1;
                    seen.redacted_at
                        .entry(target.to_owned())
                        .or_insert(position);
                }
            }
            Some("m.room.message") if is_replacement(content) => {
                if let Some(original) = content
                    .pointer("/m.relates_to/event_id")
                    .and_then(Value::as_str)
                {
                    let body = content
                        .pointer("/m.new_content/body")
                        .and_then(Value::as_str);
                    seen.replacements
                        .entry(original.to_owned())
                        .or_default()
                        .push((id, body.unwrap_or_default().to_owned()));
                }
            }
            Some("m.room.message") => {
                if let Some(message) = content[MESSAGE_ID_KEY].as_str() {
                    seen.copies.entry(message.to_owned()).or_default().push((
                        position,
                        id,
                        event.clone(),
                    ));
                }
            }
            _ => {}
        }
    }
    seen
}

/// The text a plain user sees for `event`: the server's aggregated
/// replacement if there is one, else the event's own body.
async fn visible_text(user: &MatrixUser, room: &str, event: &Value, seen: &Seen) -> String {
    let id = event["event_id"].as_str().unwrap_or_default();
    if !seen.replacements.contains_key(id) {
        return event["content"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    let served = user.event(room, id).await;
    let aggregated = &served["unsigned"]["m.relations"]["m.replace"];
    if let Some(body) = aggregated
        .pointer("/content/m.new_content/body")
        .and_then(Value::as_str)
    {
        return body.to_owned();
    }
    match aggregated["event_id"].as_str() {
        Some(replacement) => seen.replacements[id]
            .iter()
            .find(|(event_id, _)| event_id == replacement)
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| {
                format!("(aggregated replacement {replacement} not in the timeline)")
            }),
        None => format!(
            "{} (no aggregated replacement)",
            served["content"]["body"].as_str().unwrap_or_default()
        ),
    }
}

fn count_answers(report: &mut Report, entries: &[Entry]) {
    report.requests = entries.len() as u64;
    for entry in entries {
        let kind = serde_json::to_value(entry.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let status = entry
            .status
            .map_or_else(|| "gave up".to_owned(), |s| s.to_string());
        *report
            .answers
            .entry(format!("{kind} {status}"))
            .or_default() += 1;
        for attempt in &entry.attempts {
            match attempt {
                0 => report.attempts_no_answer += 1,
                429 => report.attempts_429 += 1,
                s if *s >= 500 => report.attempts_5xx += 1,
                _ => {}
            }
        }
        let ok = |codes: &[u16]| entry.status.is_some_and(|s| codes.contains(&s));
        match entry.kind {
            Kind::Send if ok(&[201, 202]) => report.accepted_sends += 1,
            Kind::Undeliverable if ok(&[201, 202]) => report.accepted_undeliverable += 1,
            Kind::Edit if ok(&[200, 202]) => report.accepted_edits += 1,
            Kind::Delete if ok(&[204]) => report.accepted_deletes += 1,
            Kind::Replay => report.replays += 1,
            _ => {}
        }
    }
}

/// Positions in `items` (already in expected order), with a line of
/// evidence for each message placed before one expected earlier.
fn order_evidence(items: &[(&Accepted, usize)]) -> (usize, Vec<String>) {
    let positions: Vec<usize> = items.iter().map(|(_, p)| *p).collect();
    let mut evidence = Vec::new();
    for pair in items.windows(2) {
        let ((earlier, at_earlier), (later, at_later)) = (pair[0], pair[1]);
        if at_later < at_earlier {
            evidence.push(format!(
                "in {}: expected {} ({}, answer #{}) before {} ({}, answer #{}); the room has them at {} and {}",
                earlier.conversation,
                earlier.id,
                earlier.sender,
                earlier.accepted,
                later.id,
                later.sender,
                later.accepted,
                at_earlier,
                at_later
            ));
        }
    }
    (out_of_order(&positions), evidence)
}

/// The changes of `messages` that reached the room, each with what it was,
/// when it was answered and where the room has it: a delete's redaction,
/// and the replacement carrying a message's latest accepted edit (an edit
/// of a message not sent yet changes what is sent, and has no event).
fn changes_placed<'a>(
    messages: &[&'a Accepted],
    seen: &Seen,
    finals: &HashMap<String, Final>,
) -> Vec<(&'a Accepted, &'static str, u64, usize)> {
    let mut out = Vec::new();
    for message in messages {
        if let (Some(answered), Some(event_id)) = (
            message.delete_answered_ms,
            finals.get(&message.id).and_then(|f| f.event_id.as_ref()),
        ) && let Some(at) = seen.redacted_at.get(event_id)
        {
            out.push((*message, "delete", answered, *at));
        }
        let original = seen
            .copies
            .get(&message.id)
            .and_then(|copies| copies.first());
        if let (Some(answered), Some(latest), Some((_, original, _))) =
            (message.edit_answered_ms, message.edits.last(), original)
            && let Some(at) = seen
                .replacements
                .get(original)
                .into_iter()
                .flatten()
                .find(|(_, body)| body == latest)
                .and_then(|(event_id, _)| seen.positions.get(event_id))
        {
            out.push((*message, "edit", answered, *at));
        }
    }
    out
}

/// Compares the rooms and the history with the ledger.
pub async fn check(
    label: &str,
    caller: &Caller,
    user: &MatrixUser,
    rooms: &[Room],
    ledger: &Ledger,
) -> Report {
    let mut report = Report {
        label: label.to_owned(),
        ..Report::default()
    };
    let entries = ledger.entries();
    count_answers(&mut report, &entries);
    let mismatches = ledger.replay_mismatches();
    report.replays_new_message = mismatches.len() as u64;
    for line in mismatches {
        report.example("duplicated", line);
    }
    let messages = ledger.messages();
    for room in rooms {
        let finals = finals(caller, &room.conversation).await;
        let events = user.all_events(&room.room_id).await;
        let seen = read_room(&events);
        let ours: Vec<&Accepted> = messages
            .values()
            .filter(|m| m.conversation == room.conversation)
            .collect();
        let known: HashSet<&str> = ours.iter().map(|m| m.id.as_str()).collect();
        for (message, copies) in &seen.copies {
            if !known.contains(message.as_str()) {
                report.ghosts += 1;
                report.example(
                    "ghosts",
                    format!(
                        "{message} in {}: {} copies, never accepted",
                        room.conversation,
                        copies.len()
                    ),
                );
            }
        }
        let mut placed: Vec<(&Accepted, usize)> = Vec::new();
        for message in &ours {
            let fin = finals.get(&message.id).cloned().unwrap_or_else(|| Final {
                status: "missing from history".into(),
                ..Final::default()
            });
            let copies = seen
                .copies
                .get(&message.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let what = format!(
                "{} ({} in {})",
                message.id, message.sender, message.conversation
            );
            if fin.status == "pending" {
                report.pending += 1;
                report.example(
                    "nothing pending",
                    format!("{what}: pending, answered {}", message.answered),
                );
            }
            if fin.status == "failed" {
                report.failed += 1;
                let reason = fin.failure.clone().unwrap_or_default();
                *report.failure_reasons.entry(reason.clone()).or_default() += 1;
                if reason.trim().is_empty() {
                    report.failed_without_reason += 1;
                    report.example(
                        "failed with a reason",
                        format!("{what}: failed without a reason"),
                    );
                }
                if !copies.is_empty() {
                    report.failed_but_delivered += 1;
                    report.example(
                        "failed with a reason",
                        format!(
                            "{what}: failed ({reason}) yet in the room as {}",
                            copies[0].1
                        ),
                    );
                }
            }
            if message.undeliverable {
                if fin.status == "failed" {
                    report.failed_undeliverable += 1;
                } else {
                    report.undeliverable_not_failed += 1;
                    report.example(
                        "failed with a reason",
                        format!("{what}: refused for good by the homeserver, yet {} ({} copies in the room)", fin.status, copies.len()),
                    );
                }
                continue;
            }
            if message.deleted {
                report.deletes_checked += 1;
                if let Some((_, event_id, _)) = copies.first() {
                    report.deletes_not_applied += 1;
                    report.example(
                        "deletes applied",
                        format!("{what}: deleted (status {}, event {:?}) but visible as {event_id} ({} copies)", fin.status, fin.event_id, copies.len()),
                    );
                } else if let Some(event_id) = &fin.event_id
                    && seen.positions.contains_key(event_id)
                    && !seen.redacted.contains(event_id)
                {
                    report.deletes_not_applied += 1;
                    report.example(
                        "deletes applied",
                        format!("{what}: deleted but {event_id} is not redacted"),
                    );
                }
                if let Some(event_id) = &fin.event_id {
                    let redactions = seen.redactions.get(event_id).copied().unwrap_or_default();
                    if redactions > 1 {
                        report.duplicated_redactions += u64::from(redactions - 1);
                        report.example(
                            "deletes applied",
                            format!("{what}: {event_id} redacted {redactions} times"),
                        );
                    }
                    if let Some(position) = seen.positions.get(event_id) {
                        placed.push((message, *position));
                    }
                }
                continue;
            }
            report.expected += 1;
            match copies.len() {
                0 => {
                    report.lost += 1;
                    match fin.status.as_str() {
                        "pending" => report.lost_pending += 1,
                        "failed" => report.lost_failed += 1,
                        "sent" => report.lost_marked_sent += 1,
                        _ => report.lost_other += 1,
                    }
                    report.example(
                        "lost",
                        format!(
                            "{what}: not in the room; answered {}, now {}{}{}",
                            message.answered,
                            fin.status,
                            fin.failure
                                .as_deref()
                                .map(|f| format!(" ({f})"))
                                .unwrap_or_default(),
                            fin.event_id
                                .as_deref()
                                .map(|e| format!(", event {e}"))
                                .unwrap_or_default()
                        ),
                    );
                    continue;
                }
                1 => report.delivered += 1,
                n => {
                    report.delivered += 1;
                    report.duplicated += 1;
                    report.extra_copies += n as u64 - 1;
                    let ids: Vec<&str> = copies.iter().map(|(_, id, _)| id.as_str()).collect();
                    report.example(
                        "duplicated",
                        format!(
                            "{what}: {n} copies {ids:?}; answered {}, now {}",
                            message.answered, fin.status
                        ),
                    );
                }
            }
            let (position, event_id, event) = &copies[0];
            placed.push((message, *position));
            let replacements = seen
                .replacements
                .get(event_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut bodies: HashMap<&str, u32> = HashMap::new();
            for (_, body) in replacements {
                *bodies.entry(body.as_str()).or_default() += 1;
            }
            for (body, times) in bodies {
                if times > 1 {
                    report.duplicated_edits += u64::from(times - 1);
                    report.example(
                        "edits applied",
                        format!("{what}: the edit {body:?} delivered {times} times"),
                    );
                }
            }
            if let Some(latest) = message.edits.last() {
                report.edits_checked += 1;
                let shown = visible_text(user, &room.room_id, event, &seen).await;
                if &shown != latest {
                    report.edits_not_applied += 1;
                    report.example(
                        "edits applied",
                        format!("{what}: shows {shown:?}, the latest accepted edit is {latest:?} ({} edits accepted, {} replacements in the room)", message.edits.len(), replacements.len()),
                    );
                }
            }
        }
        // Acceptance order as a caller sees it: a message answered before
        // another was sent is shown first.
        for (later, at_later) in &placed {
            let overtaken = placed.iter().find(|(earlier, at_earlier)| {
                earlier.answered_ms < later.sent_ms && at_earlier > at_later
            });
            if let Some((earlier, at_earlier)) = overtaken {
                report.reordered += 1;
                report.example(
                    "reordered",
                    format!(
                        "in {}: {} ({}, sent at {} ms) is at {}, before {} ({}, answered at {} ms) at {}",
                        later.conversation,
                        later.id,
                        later.sender,
                        later.sent_ms,
                        at_later,
                        earlier.id,
                        earlier.sender,
                        earlier.answered_ms,
                        at_earlier
                    ),
                );
            }
        }
        // An edit or delete answered before a message was sent reaches the
        // room first (the latest edit: a newer one replaces a queued one).
        for (message, change, answered_ms, at_change) in changes_placed(&ours, &seen, &finals) {
            let overtaken = placed
                .iter()
                .find(|(later, at_later)| answered_ms < later.sent_ms && *at_later < at_change);
            if let Some((later, at_later)) = overtaken {
                report.reordered_changes += 1;
                report.example(
                    "reordered",
                    format!(
                        "in {}: the {change} of {} (answered at {answered_ms} ms) is at {at_change}, after {} (sent at {} ms) at {at_later}",
                        message.conversation, message.id, later.id, later.sent_ms
                    ),
                );
            }
        }
        // Concurrent sends may land in either order: counted, not checked.
        placed.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let positions: Vec<usize> = placed.iter().map(|(_, p)| *p).collect();
        report.concurrent_swapped += out_of_order(&positions) as u64;
        // ... and by the order of the answers for each sender.
        let mut senders: BTreeMap<&str, Vec<(&Accepted, usize)>> = BTreeMap::new();
        for (message, position) in &placed {
            senders
                .entry(message.sender.as_str())
                .or_default()
                .push((message, *position));
        }
        for (_, mut items) in senders {
            items.sort_by_key(|(message, _)| message.accepted);
            let (reordered, evidence) = order_evidence(&items);
            report.reordered_per_sender += reordered as u64;
            for line in evidence {
                report.example("reordered per sender", line);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_counts_what_breaks_the_longest_run() {
        assert_eq!(out_of_order(&[]), 0);
        assert_eq!(out_of_order(&[1, 2, 3]), 0);
        assert_eq!(out_of_order(&[2, 1, 3]), 1);
        assert_eq!(out_of_order(&[5, 1, 2, 3, 4]), 1);
        assert_eq!(out_of_order(&[4, 3, 2, 1]), 3);
    }

    #[test]
    fn a_room_is_read_as_a_plain_user_sees_it() {
        let events: Vec<Value> = serde_json::from_value(serde_json::json!([
            {"event_id": "$a", "type": "m.room.message", "content": {"body": "one", MESSAGE_ID_KEY: "m1"}},
            {"event_id": "$b", "type": "m.room.message", "content": {"body": "one", MESSAGE_ID_KEY: "m1"}},
            {"event_id": "$c", "type": "m.room.message", "content": {}, "unsigned": {"redacted_because": {}}},
            {"event_id": "$d", "type": "m.room.message", "content": {"body": "* two", MESSAGE_ID_KEY: "m1",
                "m.new_content": {"body": "two"}, "m.relates_to": {"rel_type": "m.replace", "event_id": "$a"}}},
            {"event_id": "$e", "type": "m.room.redaction", "content": {"redacts": "$c"}},
        ]))
        .unwrap();
        let seen = read_room(&events);
        assert_eq!(seen.copies["m1"].len(), 2, "the edit is not a copy");
        assert!(seen.redacted.contains("$c"));
        assert_eq!(
            seen.replacements["$a"],
            [("$d".to_owned(), "two".to_owned())]
        );
        assert_eq!(seen.redactions["$c"], 1);
        assert_eq!(seen.positions["$e"], 4);
    }
}
