//! Fetching an image the application names by an `https://` address (an
//! avatar), without letting that address reach inside the network the
//! bridge runs in.
//!
//! - Only `https://` addresses, on public IP addresses ([`address`]): an IP
//!   literal is checked before anything is sent; a name is resolved by the
//!   bridge's own resolver, which refuses it when any of its addresses is
//!   not public, and the connection goes to the addresses it checked (no
//!   second lookup to rebind). No proxy from the environment is used.
//! - Redirects are followed by hand, at most [`FetchPolicy::max_redirects`],
//!   each new address checked the same way.
//! - Limits: [`FetchPolicy::max_bytes`] (from `Content-Length`, and while
//!   reading), [`FetchPolicy::timeout`] for the whole fetch, and the type:
//!   an image on the media allow-list whose bytes say what its
//!   `Content-Type` says (`crate::media`).
//!
//! [`Reach::PublicAndLoopback`] lets local tests serve images on loopback
//! over plain `http://`; it is off unless `BRIDGE_FETCH_ALLOW_LOOPBACK=1`
//! is set, which the template never does.

pub mod address;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub use address::Reach;

use crate::media::{self, MediaInfo, MediaKind};

/// What a fetch may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    pub reach: Reach,
    pub max_bytes: usize,
    /// For the whole fetch, redirects included.
    pub timeout: Duration,
    pub max_redirects: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            reach: Reach::Public,
            max_bytes: 2 * 1024 * 1024,
            timeout: Duration::from_secs(8),
            max_redirects: 3,
        }
    }
}

/// Why a fetch was refused or failed, in the bridge's words (no address
/// the application did not give, nothing about the bridge's network).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("'{0}' is not an https:// address")]
    NotHttps(String),
    #[error("the address is not a public one")]
    NotPublic,
    #[error("the server answered {0}")]
    Status(u16),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("the image is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Refused(String),
    #[error("it could not be fetched in {0} seconds")]
    TimedOut(u64),
    #[error("it could not be fetched")]
    Failed,
}

/// An image fetched and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub info: MediaInfo,
}

/// The resolver the fetch client connects through: a name is refused when
/// any address it resolves to is not allowed.
struct GuardedResolver {
    reach: Reach,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.reach;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || !addrs.iter().all(|addr| reach.allows(addr.ip())) {
                return Err(Box::new(NotPublic) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The resolver's refusal, found again in the error chain.
#[derive(Debug, thiserror::Error)]
#[error("the name resolves to an address that is not public")]
struct NotPublic;

/// Fetches images under a [`FetchPolicy`]. Clones share the connections.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Self, reqwest::Error> {
        let http = crate::tls::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                reach: policy.reach,
            })
            .connect_timeout(Duration::from_secs(3))
            .timeout(policy.timeout)
            .user_agent(concat!("lambda-matrix-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            policy: Arc::new(policy),
        })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Fetches the image at `url`, following redirects by hand.
    pub async fn fetch_image(&self, url: &str) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.policy.timeout, self.fetch(url))
            .await
            .unwrap_or(Err(FetchError::TimedOut(self.timeout_secs())))
    }

    async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let mut url =
            self.checked(Url::parse(url).map_err(|_| FetchError::NotHttps(url.into()))?)?;
        let mut redirects = 0;
        let response = loop {
            let response = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|err| self.classify(err))?;
            if !response.status().is_redirection() {
                break response;
            }
            redirects += 1;
            if redirects > self.policy.max_redirects {
                return Err(FetchError::TooManyRedirects(self.policy.max_redirects));
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or(FetchError::Status(response.status().as_u16()))?;
            let next = url
                .join(location)
                .map_err(|_| FetchError::NotHttps(location.into()))?;
            url = self.checked(next)?;
        };
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max = self.policy.max_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > max as u64)
        {
            return Err(FetchError::TooLarge(max));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| self.classify(err))? {
            if bytes.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        let info = media::inspect(&content_type, &bytes)
            .map_err(|err| FetchError::Refused(err.to_string()))?;
        if info.kind() != MediaKind::Image {
            return Err(FetchError::Refused(format!(
                "{} is not an image",
                info.mimetype
            )));
        }
        Ok(Fetched { bytes, info })
    }

    /// `url` if it may be fetched: `https://` (or, on loopback in tests,
    /// `http://`), and an IP literal host only if it is allowed. Names are
    /// checked by the resolver when connecting.
    fn checked(&self, url: Url) -> Result<Url, FetchError> {
        let Some(host) = url.host_str() else {
            return Err(FetchError::NotHttps(url.to_string()));
        };
        let literal: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        if literal.is_some_and(|ip| !self.policy.reach.allows(ip)) {
            return Err(FetchError::NotPublic);
        }
        let local_test = self.policy.reach == Reach::PublicAndLoopback
            && url.scheme() == "http"
            && matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if url.scheme() != "https" && !local_test {
            return Err(FetchError::NotHttps(url.to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Refused(
                "addresses with credentials are not fetched".into(),
            ));
        }
        Ok(url)
    }
}

impl Fetcher {
    fn timeout_secs(&self) -> u64 {
        self.policy.timeout.as_secs().max(1)
    }

    /// A request that failed: refused by the resolver, timed out, or else.
    fn classify(&self, err: reqwest::Error) -> FetchError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(cause) = source {
            if cause.is::<NotPublic>() {
                return FetchError::NotPublic;
            }
            source = cause.source();
        }
        if err.is_timeout() {
            FetchError::TimedOut(self.timeout_secs())
        } else {
            tracing::info!(error = %err.without_url(), "an image could not be fetched");
            FetchError::Failed
        }
    }
}
