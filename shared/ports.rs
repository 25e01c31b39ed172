//! What a function's state is built from: the [`Ports`] a container offers
//! (store, Matrix, retry queue, inbound queue, puppet naming, settings,
//! metrics), and the
//! [`InitError`] that stops a function when one cannot be had.
//!
//! `runtime::Adapters` offers the deployed adapters (DynamoDB, the
//! appservice client, SQS) configured from the environment;
//! `fakes::Fakes` offers the in-memory fakes for tests. Handler modules
//! build from either, so the front door, the tests and Lambda run the same
//! wiring.

use std::future::Future;

use crate::config::{RetryBackoff, SweepSettings};
use crate::fetch::{FetchPolicy, Fetcher};
use crate::ids::PuppetNamer;
use crate::inbound::InboundQueue;
use crate::matrix::Matrix;
use crate::metrics::Metrics;
use crate::queue::RetryQueue;
use crate::secrets::CachedSecret;
use crate::store::Store;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What stops a function at init. `main` reports its error with `Debug`, so
/// this prints as a sentence (with its causes), not as a struct dump.
pub struct InitError(BoxError);

impl<E: Into<BoxError>> From<E> for InitError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl std::fmt::Debug for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::api::ErrorChain(self.0.as_ref()))
    }
}

/// The adapters and settings functions are built from. Each getter checks
/// its own settings before anything touches the network, so a function
/// reports a missing setting before it connects anywhere.
pub trait Ports: Send + Sync {
    type Store: Store + 'static;
    type Matrix: Matrix + 'static;
    type Queue: RetryQueue + 'static;
    type Inbound: InboundQueue + 'static;

    fn store(&self) -> impl Future<Output = Result<Self::Store, InitError>> + Send;

    /// The homeserver, as the appservice (needs its `as_token`, which the
    /// deployed adapters read from Secrets Manager here, once).
    fn matrix(&self) -> impl Future<Output = Result<Self::Matrix, InitError>> + Send;

    fn queue(&self) -> impl Future<Output = Result<Self::Queue, InitError>> + Send;

    /// The queue of events for the application (what arrives from Matrix).
    fn inbound(&self) -> impl Future<Output = Result<Self::Inbound, InitError>> + Send;

    /// The homeserver's token for the appservice routes (`hs_token`), read
    /// once, and again when a request's token does not match (rotation).
    fn hs_token(&self) -> impl Future<Output = Result<CachedSecret, InitError>> + Send;

    /// How application users map to puppets (no token needed).
    fn namer(&self) -> Result<PuppetNamer, InitError>;

    /// When the sweeper steps in (the defaults, unless configured).
    fn sweep_settings(&self) -> Result<SweepSettings, InitError> {
        Ok(SweepSettings::default())
    }

    /// How long the retry function hides a job it hands back (the
    /// defaults, unless configured).
    fn retry_backoff(&self) -> Result<RetryBackoff, InitError> {
        Ok(RetryBackoff::default())
    }

    /// The metrics of `function`.
    fn metrics(&self, function: &'static str) -> Metrics;

    /// The client that fetches images from `https://` addresses (avatars):
    /// public addresses only, unless the ports say otherwise for a test.
    fn fetcher(&self) -> Result<Fetcher, InitError> {
        Ok(Fetcher::new(FetchPolicy::default())?)
    }
}
