//! The fault suite: the bridge's delivery guarantees (issue 9) under faults
//! and under load, on the local stack.
//!
//! Several app users send, edit, delete and replay across several
//! conversations, concurrently, through the front door and the registry's
//! functions in process, while the homeserver is killed and restarted (once
//! mid-burst), a fault proxy between the functions and Synapse misbehaves on
//! a seeded schedule, and the emulator refuses connections for short
//! windows. The retry function is fed from a real SQS FIFO queue. Then a
//! checker reads every room as a plain Matrix user and compares it with a
//! ledger of what the API accepted: nothing lost, doubled, reordered or
//! left pending, every edit and delete applied, everything undeliverable
//! `failed` with a reason. The load test sends from 50 senders at once into
//! one conversation and across 20 conversations: no 5xx, each message once,
//! in order.
//!
//! It stops the real Synapse, so it is a test binary of its own (cargo runs
//! test binaries one after another) and its tests take turns. Settings come
//! from `FAULT_*` variables (see [`suite::Settings`]); `scripts/soak` runs
//! it longer. Each run writes its ledger, report and the proxy's log under
//! `.local/faults/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../stack/client.rs"]
mod client;
#[path = "../support/mod.rs"]
mod support;

mod checker;
mod emulator;
mod harness;
mod homeserver;
mod ledger;
mod suite;
mod workload;
