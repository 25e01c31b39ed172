//! The appservice's tokens, as a function holds them: read once per
//! container at init from where they are kept (AWS Secrets Manager in
//! Lambda; the environment, for the local stack only), cached, and read
//! again when the other side says the one in hand is wrong (it was rotated).
//!
//! A refresh is one fetch at a time and at most one per
//! [`MIN_REFRESH_INTERVAL`], so a flood of requests with a wrong `hs_token`
//! cannot turn into a flood of Secrets Manager calls. Values never reach a
//! log: they are [`Secret`]s, and [`CachedSecret`] prints as `***`.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::api::ErrorChain;
use crate::config::Secret;
use crate::function::BoxFuture;
use crate::ports::BoxError;

/// The shortest time between two fetches of one secret after the first.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Where a secret is read from.
pub trait Fetch: Send + Sync {
    fn fetch(&self) -> BoxFuture<'_, Result<Secret, BoxError>>;
}

/// A secret held for the life of a container. Clones share the value.
#[derive(Clone)]
pub struct CachedSecret {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Secret>,
    /// None for a value given in the environment: nothing to read again.
    source: Option<Box<dyn Fetch>>,
    /// Held while fetching; when the last refresh started.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl CachedSecret {
    /// A value that never changes (the local stack's, the tests').
    pub fn fixed(secret: Secret) -> Self {
        Self::new(secret, None)
    }

    /// Reads the secret from `source` now (at init) and keeps it.
    pub async fn fetched(source: impl Fetch + 'static) -> Result<Self, BoxError> {
        let secret = source.fetch().await?;
        Ok(Self::new(secret, Some(Box::new(source))))
    }

    fn new(secret: Secret, source: Option<Box<dyn Fetch>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(secret),
                source,
                last_refresh: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The value in hand.
    pub fn current(&self) -> Secret {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After `refused` was found wrong: reads the secret again, unless it
    /// was read less than [`MIN_REFRESH_INTERVAL`] ago. True when there is
    /// now another value than `refused` to try (also when a concurrent
    /// refresh found it).
    pub async fn refresh(&self, refused: &Secret) -> bool {
        let Some(source) = &self.inner.source else {
            return false;
        };
        let mut last = self.inner.last_refresh.lock().await;
        if self.current() != *refused {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match source.fetch().await {
            Ok(fresh) if fresh != *refused => {
                *self
                    .inner
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = fresh;
                tracing::info!("secret read again after an auth failure: it was rotated");
                true
            }
            Ok(_) => {
                tracing::warn!("secret read again after an auth failure: unchanged");
                false
            }
            Err(err) => {
                tracing::warn!(error = %ErrorChain(err.as_ref()), "could not read the secret again");
                false
            }
        }
    }
}

impl fmt::Debug for CachedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CachedSecret(***)")
    }
}

/// A secret in AWS Secrets Manager (its `SecretString`), by ARN or name.
pub struct SecretsManagerSecret {
    client: aws_sdk_secretsmanager::Client,
    id: String,
}

impl SecretsManagerSecret {
    pub fn new(client: aws_sdk_secretsmanager::Client, id: impl Into<String>) -> Self {
        Self {
            client,
            id: id.into(),
        }
    }
}

impl Fetch for SecretsManagerSecret {
    fn fetch(&self) -> BoxFuture<'_, Result<Secret, BoxError>> {
        Box::pin(async move {
            let output = self
                .client
                .get_secret_value()
                .secret_id(&self.id)
                .send()
                .await
                .map_err(|err| {
                    format!(
                        "reading secret {}: {}",
                        self.id,
                        aws_sdk_secretsmanager::error::DisplayErrorContext(err)
                    )
                })?;
            let value = output
                .secret_string()
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| format!("secret {} has no string value", self.id))?;
            Ok(Secret::new(value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A source answering the values of `answers` in turn, counting fetches.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<Vec<&'static str>>>,
        fetches: Arc<AtomicU32>,
    }

    impl Scripted {
        fn new(answers: &[&'static str]) -> Self {
            let mut answers = answers.to_vec();
            answers.reverse();
            Self {
                answers: Arc::new(Mutex::new(answers)),
                fetches: Arc::default(),
            }
        }
    }

    impl Fetch for Scripted {
        fn fetch(&self) -> BoxFuture<'_, Result<Secret, BoxError>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let next = self.answers.lock().unwrap().pop();
            Box::pin(async move { next.map(Secret::new).ok_or_else(|| "unavailable".into()) })
        }
    }

    #[tokio::test]
    async fn read_once_then_again_only_after_a_refusal() {
        let source = Scripted::new(&["old", "new"]);
        let secret = CachedSecret::fetched(source.clone()).await.unwrap();
        assert_eq!(secret.current().expose(), "old");
        assert_eq!(secret.current().expose(), "old");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1, "cached");
        assert!(secret.refresh(&Secret::new("old")).await);
        assert_eq!(secret.current().expose(), "new");
        // A caller still holding the old value is told to retry, without a fetch.
        assert!(secret.refresh(&Secret::new("old")).await);
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refreshes_are_rate_limited() {
        let source = Scripted::new(&["same", "same", "other"]);
        let secret = CachedSecret::fetched(source.clone()).await.unwrap();
        // Read again: unchanged, so the refused value stays refused.
        assert!(!secret.refresh(&Secret::new("same")).await);
        // And not read again before the interval is over.
        for _ in 0..10 {
            assert!(!secret.refresh(&Secret::new("same")).await);
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(secret.current().expose(), "same");
    }

    #[tokio::test]
    async fn a_failed_read_keeps_the_value_in_hand() {
        let secret = CachedSecret::fetched(Scripted::new(&["kept"]))
            .await
            .unwrap();
        assert!(!secret.refresh(&Secret::new("kept")).await);
        assert_eq!(secret.current().expose(), "kept");
        assert!(CachedSecret::fetched(Scripted::new(&[])).await.is_err());
    }

    #[tokio::test]
    async fn fixed_values_are_never_read_again_nor_printed() {
        let secret = CachedSecret::fixed(Secret::new("local-only"));
        assert!(!secret.refresh(&Secret::new("local-only")).await);
        assert_eq!(format!("{secret:?}"), "CachedSecret(***)");
    }
}
