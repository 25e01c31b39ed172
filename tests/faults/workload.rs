//! The suite's users: one task per (user, conversation), each a seeded,
//! reproducible sequence of sends, edits and deletes of its own messages,
//! replays of earlier sends, and (rarely) a message the homeserver will
//! refuse for good. A task waits for each answer before its next request,
//! so a sender's acceptance order is the order of its answers. The pace is
//! calm, or a burst (no pause), as the conductor says.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bridge_dev::fault::schedule::SplitMix;
use serde_json::json;

use crate::client::token;
use crate::harness::UNDELIVERABLE;
use crate::ledger::{Caller, Kind, Ledger};

/// How fast the users go.
#[derive(Debug, Default)]
pub struct Pace(AtomicU8);

impl Pace {
    const CALM: u8 = 0;
    const BURST: u8 = 1;
    const STOP: u8 = 2;

    pub fn calm(&self) {
        let _ =
            self.0
                .compare_exchange(Self::BURST, Self::CALM, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn burst(&self) {
        let _ =
            self.0
                .compare_exchange(Self::CALM, Self::BURST, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.0.store(Self::STOP, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::STOP
    }

    /// The pause before a user's next request.
    fn pause(&self, rng: &mut SplitMix, calm: (u64, u64)) -> Duration {
        match self.0.load(Ordering::SeqCst) {
            Self::CALM => rng.millis(calm.0, calm.1),
            _ => rng.millis(0, 40),
        }
    }
}

/// How often each operation is chosen (weights).
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub send: u64,
    pub undeliverable: u64,
    pub edit: u64,
    pub delete: u64,
    pub replay: u64,
    /// HOOK(membership): 0 until the membership routes exist; see
    /// [`change_membership`].
    pub membership: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            send: 62,
            undeliverable: 3,
            edit: 17,
            delete: 10,
            replay: 8,
            membership: 0,
        }
    }
}

/// What every user task shares.
pub struct Shared {
    pub caller: Caller,
    pub ledger: Arc<Ledger>,
    pub pace: Arc<Pace>,
    pub mix: Mix,
    /// The calm pause between requests, in ms.
    pub calm_ms: (u64, u64),
}

/// One of the task's own accepted messages.
struct Mine {
    id: String,
    text: String,
    edits: u32,
    deleted: bool,
    undeliverable: bool,
    key: String,
    body: String,
}

enum Op {
    Send,
    Undeliverable,
    Edit,
    Delete,
    Replay,
    Membership,
}

fn pick(rng: &mut SplitMix, mix: &Mix) -> Op {
    let weights = [
        (mix.send, Op::Send as u8),
        (mix.undeliverable, Op::Undeliverable as u8),
        (mix.edit, Op::Edit as u8),
        (mix.delete, Op::Delete as u8),
        (mix.replay, Op::Replay as u8),
        (mix.membership, Op::Membership as u8),
    ];
    let total: u64 = weights.iter().map(|(w, _)| w).sum();
    let mut at = rng.below(total);
    for (weight, op) in weights {
        if at < weight {
            return match op {
                0 => Op::Send,
                1 => Op::Undeliverable,
                2 => Op::Edit,
                3 => Op::Delete,
                4 => Op::Replay,
                _ => Op::Membership,
            };
        }
        at -= weight;
    }
    Op::Send
}

/// HOOK(membership): the membership routes (members added, removed,
/// leaving) are not in this version; another change adds them. When they
/// land: give [`Mix::membership`] a weight, make this call them (say, the
/// user leaves the conversation and is added back, or a new member joins
/// and sends), record each request in the ledger (a `Kind::Membership`),
/// and have the checker compare the room's `m.room.member` state and the
/// senders of later messages with it. Until then it does nothing.
async fn change_membership(_shared: &Shared, _user: &str, _conversation: &str) -> bool {
    false
}

/// One user in one conversation, until the pace says stop.
pub async fn user_in_conversation(
    shared: Arc<Shared>,
    user: String,
    conversation: String,
    seed: u64,
) {
    let mut rng = SplitMix::new(seed);
    let mut mine: Vec<Mine> = Vec::new();
    let token = token(&user, false);
    let messages = format!("/v1/conversations/{conversation}/messages");
    let mut sent = 0u32;
    while !shared.pace.stopped() {
        let live: Vec<usize> = (0..mine.len())
            .filter(|&i| !mine[i].deleted && !mine[i].undeliverable)
            .collect();
        match pick(&mut rng, &shared.mix) {
            op @ (Op::Send | Op::Undeliverable) => {
                sent += 1;
                let undeliverable = matches!(op, Op::Undeliverable);
                let text = if undeliverable {
                    format!("{user} in {conversation}: message {sent} {UNDELIVERABLE}")
                } else {
                    format!("{user} in {conversation}: message {sent}")
                };
                let kind = if undeliverable {
                    Kind::Undeliverable
                } else {
                    Kind::Send
                };
                let begun = shared
                    .ledger
                    .begin(&user, &conversation, kind, None, Some(&text));
                let body = json!({ "body": text }).to_string();
                let key = begun.key.clone();
                let answer = shared
                    .caller
                    .call("POST", &messages, &token, Some(&key), Some(&body))
                    .await;
                let entry = shared.ledger.record(begun, answer);
                if matches!(entry.status, Some(201 | 202))
                    && let Some(id) = entry.message
                {
                    mine.push(Mine {
                        id,
                        text,
                        edits: 0,
                        deleted: false,
                        undeliverable,
                        key,
                        body,
                    });
                }
            }
            Op::Edit if !live.is_empty() => {
                let target = &mut mine[live[rng.below(live.len() as u64) as usize]];
                target.edits += 1;
                let text = format!("{} (edit {})", target.text, target.edits);
                let begun = shared.ledger.begin(
                    &user,
                    &conversation,
                    Kind::Edit,
                    Some(&target.id),
                    Some(&text),
                );
                let body = json!({ "body": text }).to_string();
                let answer = shared
                    .caller
                    .call(
                        "PUT",
                        &format!("{messages}/{}", target.id),
                        &token,
                        Some(&begun.key.clone()),
                        Some(&body),
                    )
                    .await;
                shared.ledger.record(begun, answer);
            }
            Op::Delete if !live.is_empty() => {
                let target = &mut mine[live[rng.below(live.len() as u64) as usize]];
                let begun =
                    shared
                        .ledger
                        .begin(&user, &conversation, Kind::Delete, Some(&target.id), None);
                let answer = shared
                    .caller
                    .call(
                        "DELETE",
                        &format!("{messages}/{}", target.id),
                        &token,
                        Some(&begun.key.clone()),
                        None,
                    )
                    .await;
                if shared.ledger.record(begun, answer).status == Some(204) {
                    target.deleted = true;
                }
            }
            Op::Replay if !mine.is_empty() => {
                let target = &mine[rng.below(mine.len() as u64) as usize];
                let mut begun = shared.ledger.begin(
                    &user,
                    &conversation,
                    Kind::Replay,
                    Some(&target.id),
                    Some(&target.text),
                );
                begun.key = target.key.clone();
                let answer = shared
                    .caller
                    .call(
                        "POST",
                        &messages,
                        &token,
                        Some(&target.key),
                        Some(&target.body),
                    )
                    .await;
                shared.ledger.record(begun, answer);
            }
            Op::Membership => {
                change_membership(&shared, &user, &conversation).await;
            }
            // Nothing of its own to change yet.
            Op::Edit | Op::Delete | Op::Replay => continue,
        }
        tokio::time::sleep(shared.pace.pause(&mut rng, shared.calm_ms)).await;
    }
}

/// `count` messages from `user` to `conversation`, one after another, as
/// fast as answered (the load test).
pub async fn send_in_a_row(shared: Arc<Shared>, user: String, conversation: String, count: u32) {
    let token = token(&user, false);
    let messages = format!("/v1/conversations/{conversation}/messages");
    for n in 1..=count {
        let text = format!("{user} in {conversation}: load {n}");
        let begun = shared
            .ledger
            .begin(&user, &conversation, Kind::Send, None, Some(&text));
        let body = json!({ "body": text }).to_string();
        let answer = shared
            .caller
            .call(
                "POST",
                &messages,
                &token,
                Some(&begun.key.clone()),
                Some(&body),
            )
            .await;
        shared.ledger.record(begun, answer);
    }
}
