//! [`Ports`] on the in-memory fakes: the store, the Matrix homeserver, the
//! retry queue and the inbound queue, shared by every function built from
//! one [`Fakes`], so
//! a test can drive the registered functions and look at what they did.

use crate::config::{RetryBackoff, Secret, SweepSettings};
use crate::fetch::{FetchPolicy, Fetcher};
use crate::ids::PuppetNamer;
use crate::inbound::MemoryInbound;
use crate::matrix::fake::FakeMatrix;
use crate::metrics::Metrics;
use crate::ports::{InitError, Ports};
use crate::queue::MemoryQueue;
use crate::secrets::CachedSecret;
use crate::store::MemoryStore;

/// The fakes one test's functions share.
#[derive(Clone)]
pub struct Fakes {
    pub store: MemoryStore,
    pub matrix: FakeMatrix,
    pub queue: MemoryQueue,
    pub inbound: MemoryInbound,
    pub namer: PuppetNamer,
    pub sweep: SweepSettings,
    pub backoff: RetryBackoff,
    /// Public addresses only, as deployed; tests that serve images on
    /// loopback widen it.
    pub fetch: FetchPolicy,
    /// The appservice's `hs_token`: [`Fakes::HS_TOKEN`].
    pub hs_token: Secret,
}

impl Fakes {
    /// The homeserver's token the fakes' functions accept.
    pub const HS_TOKEN: &str = "hs-token-of-the-tests";

    /// Fresh fakes; puppets are `@app_<user>:localhost`.
    pub fn new() -> Self {
        Self {
            store: MemoryStore::new(),
            matrix: FakeMatrix::default(),
            queue: MemoryQueue::default(),
            inbound: MemoryInbound::default(),
            hs_token: Secret::new(Self::HS_TOKEN),
            namer: PuppetNamer::new("app_", ruma::server_name!("localhost")),
            sweep: SweepSettings::default(),
            backoff: RetryBackoff::default(),
            fetch: FetchPolicy::default(),
        }
    }
}

impl Default for Fakes {
    fn default() -> Self {
        Self::new()
    }
}

impl Ports for Fakes {
    type Store = MemoryStore;
    type Matrix = FakeMatrix;
    type Queue = MemoryQueue;
    type Inbound = MemoryInbound;

    async fn store(&self) -> Result<MemoryStore, InitError> {
        Ok(self.store.clone())
    }

    async fn matrix(&self) -> Result<FakeMatrix, InitError> {
        Ok(self.matrix.clone())
    }

    async fn queue(&self) -> Result<MemoryQueue, InitError> {
        Ok(self.queue.clone())
    }

    async fn inbound(&self) -> Result<MemoryInbound, InitError> {
        Ok(self.inbound.clone())
    }

    async fn hs_token(&self) -> Result<CachedSecret, InitError> {
        Ok(CachedSecret::fixed(self.hs_token.clone()))
    }

    fn namer(&self) -> Result<PuppetNamer, InitError> {
        Ok(self.namer.clone())
    }

    fn sweep_settings(&self) -> Result<SweepSettings, InitError> {
        Ok(self.sweep)
    }

    fn retry_backoff(&self) -> Result<RetryBackoff, InitError> {
        Ok(self.backoff)
    }

    fn metrics(&self, function: &'static str) -> Metrics {
        Metrics::off(function)
    }

    fn fetcher(&self) -> Result<Fetcher, InitError> {
        Ok(Fetcher::new(self.fetch.clone())?)
    }
}
