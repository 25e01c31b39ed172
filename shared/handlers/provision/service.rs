//! The provisioning service: users' puppets, and conversations' rooms with
//! their members, as plain calls that return the domain error. The
//! provision function serves it over HTTP; `bridgectl` (the bulk cutover
//! tool) calls it directly, built from the same [`Ports`].
//!
//! Its calls are spread over this module's siblings: [`claim`](super::claim)
//! creates conversations, [`members`](super::members) and
//! [`update`](super::update) change them, each change going to Matrix
//! through [`apply`](super::apply).

use ruma::OwnedMxcUri;

use super::avatar;
use super::plan::{Avatar, MAX_NAME, PutUser, checked_text};
use crate::error::Error;
use crate::fetch::Fetcher;
use crate::handlers::puppets::{WantedPuppet, ensure_puppets};
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::matrix::Matrix;
use crate::metrics::Metrics;
use crate::model::{Conversation, Member, Puppet};
use crate::ports::{InitError, Ports};
use crate::queue::RetryQueue;
use crate::store::Store;

/// What became of a change: Matrix has it, or it waits in the
/// conversation's outbox for the retry function (the API answers `202`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    Queued,
}

/// A conversation after a creation request: it, its members, and whether
/// this request made it (`false`: it existed already).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    pub conversation: Conversation,
    pub members: Vec<Member>,
    pub created: bool,
}

/// The service's state: the ports it works on.
pub struct Provisioning<S, M, Q> {
    pub(super) store: S,
    pub(super) matrix: M,
    pub(super) queue: Q,
    pub(super) namer: PuppetNamer,
    pub(super) metrics: Metrics,
    pub(super) fetcher: Fetcher,
}

/// Builds the service from the ports, as a function's state is built.
pub async fn from_ports<P: Ports>(
    ports: &P,
    metrics: Metrics,
) -> Result<Provisioning<P::Store, P::Matrix, P::Queue>, InitError> {
    Ok(Provisioning {
        store: ports.store().await?,
        matrix: ports.matrix().await?,
        queue: ports.queue().await?,
        namer: ports.namer()?,
        metrics,
        fetcher: ports.fetcher()?,
    })
}

impl<S: Store, M: Matrix, Q: RetryQueue> Provisioning<S, M, Q> {
    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn matrix(&self) -> &M {
        &self.matrix
    }

    pub fn namer(&self) -> &PuppetNamer {
        &self.namer
    }

    /// Registers a user's puppet (once) and brings its global profile in
    /// line: display name, and avatar (an `https://` one fetched once per
    /// address).
    pub async fn put_user(&self, user: AppUserId, input: PutUser) -> Result<Puppet, Error> {
        let display_name = input
            .display_name
            .map(|name| checked_text("display_name", name, MAX_NAME))
            .transpose()?;
        let wanted_avatar = input
            .avatar_url
            .map(|url| Avatar::parse("avatar_url", &url))
            .transpose()?;
        let avatar = match &wanted_avatar {
            None => None,
            Some(wanted) => {
                let known = self.store.puppets(std::slice::from_ref(&user)).await?.pop();
                let current = known.as_ref().map_or((None, None), |puppet| {
                    (
                        puppet.avatar_url.as_deref(),
                        puppet.avatar_source.as_deref(),
                    )
                });
                Some(
                    avatar::store(&self.matrix, &self.fetcher, "avatar_url", wanted, current)
                        .await?,
                )
            }
        };
        let wanted = [WantedPuppet {
            matrix_user_id: self.namer.user_id(&user),
            user,
            display_name,
            avatar,
            defaults_only: false,
        }];
        ensure_puppets(&self.store, &self.matrix, &self.metrics, &wanted)
            .await?
            .pop()
            .ok_or_else(|| Error::Inconsistent("no puppet returned for one asked".into()))
    }

    /// A conversation and its members.
    pub async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<(Conversation, Vec<Member>)>, Error> {
        Ok(self.store.conversation_with_members(id).await?)
    }

    /// The mxc URI a stored avatar names.
    pub(super) fn avatar_uri(conversation: &Conversation) -> Option<OwnedMxcUri> {
        conversation.avatar_url.as_deref().map(OwnedMxcUri::from)
    }
}
