//! The functions' logic: plain async code over the ports, one module per
//! Lambda function, testable without a network, and the [`registry`] that
//! lists them.
//!
//! Each function module has a `NAME`, a `function()` for the registry, and
//! builds its own state from the [`Ports`](crate::ports::Ports).

mod access;
pub mod activity;
mod attachments;
mod cache;
pub mod changes;
pub mod delete;
pub mod edit;
pub mod history;
pub mod media;
mod mentions;
pub mod outbound;
pub mod provision;
mod puppets;
pub mod react;
pub mod retry;
pub mod send;
pub mod sweeper;
mod target;
mod text;
pub mod transactions;

use crate::function::Function;
use crate::ports::Ports;

/// Every function of the bridge: the one list that the front door,
/// `bridge-dev`, the tests and the build scripts read. Each also has a
/// binary in `functions/`, a `[[bin]]` in `Cargo.toml` and a resource in
/// `template.yaml` (a test checks they agree).
pub fn registry<P: Ports>() -> [Function<P>; 11] {
    [
        provision::function(),
        send::function(),
        edit::function(),
        delete::function(),
        react::function(),
        history::function(),
        retry::function(),
        media::function(),
        activity::function(),
        sweeper::function(),
        transactions::function(),
    ]
}
