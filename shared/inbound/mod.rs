//! The inbound queue: what arrives from Matrix, for the application, as docs/API.md
//! "Events to the application" describes it. One JSON [`InboundEvent`] per
//! SQS message on a FIFO queue: `MessageGroupId` is the conversation, so a
//! conversation's events arrive in order, and the deduplication id is the
//! Matrix event and what became of it, so a repeat within SQS's five-minute
//! window is dropped by SQS itself.
//!
//! [`SqsInboundQueue`] is the adapter; [`MemoryInbound`] the fake, which
//! keeps every publication (it does not deduplicate), so tests see repeats.

mod event;
mod memory;
mod sqs;

use std::future::Future;

pub use event::{EventKind, InboundEvent, Membership};
pub use memory::MemoryInbound;
pub use sqs::SqsInboundQueue;

/// The largest SQS message body (and batch) the adapter sends.
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("the inbound queue is unavailable")]
pub struct InboundError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl InboundError {
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(cause.into())
    }
}

/// Where events for the application go.
pub trait InboundQueue: Send + Sync {
    /// Publishes `events`: each conversation's in the order given (other
    /// conversations' may interleave). Returns once all were accepted.
    fn publish(
        &self,
        events: &[InboundEvent],
    ) -> impl Future<Output = Result<(), InboundError>> + Send;
}
