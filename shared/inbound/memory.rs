//! The in-memory [`InboundQueue`] for tests: it keeps every publication, in
//! order, and can be told to fail the next ones.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{InboundError, InboundEvent, InboundQueue};

#[derive(Default)]
struct State {
    published: Vec<InboundEvent>,
    failures: u32,
}

/// Clones share their events.
#[derive(Clone, Default)]
pub struct MemoryInbound {
    state: Arc<Mutex<State>>,
}

impl MemoryInbound {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything published, in order (repeats included).
    pub fn events(&self) -> Vec<InboundEvent> {
        self.state().published.clone()
    }

    /// Makes the next `count` publications fail, as an unavailable queue.
    pub fn fail_next(&self, count: u32) {
        self.state().failures += count;
    }
}

impl InboundQueue for MemoryInbound {
    async fn publish(&self, events: &[InboundEvent]) -> Result<(), InboundError> {
        let mut state = self.state();
        if state.failures > 0 {
            state.failures -= 1;
            return Err(InboundError::new("the fake queue was told to fail"));
        }
        state.published.extend_from_slice(events);
        Ok(())
    }
}
