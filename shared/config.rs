//! Typed configuration, read from the environment once per container.
//!
//! Each function loads only the parts it needs, so a history reader does not
//! require a Matrix token. A missing or malformed variable is an error that
//! names the variable; secrets are wrapped in [`Secret`] so they never appear
//! in `Debug` output or logs.

use std::fmt;

use ruma::{OwnedServerName, OwnedUserId, UserId};

use crate::ids::PuppetNamer;

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A string that must not be logged: its `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where variables come from: the process environment, or a map in tests.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

fn required(env: &dyn Env, name: &'static str) -> Result<String, ConfigError> {
    match env.get(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(ConfigError::Missing(name)),
    }
}

fn optional(env: &dyn Env, name: &'static str, default: &str) -> String {
    env.get(name)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// How the bridge reaches its homeserver and names its users.
#[derive(Clone, Debug)]
pub struct MatrixConfig {
    /// Base URL of the client-server API, without a trailing slash.
    pub homeserver_url: String,
    pub server_name: OwnedServerName,
    pub as_token: Secret,
    /// Localpart prefix of every puppet, e.g. `app_`.
    pub puppet_prefix: String,
    /// The appservice's own user (`sender_localpart`), which creates rooms.
    pub bot_user_id: OwnedUserId,
}

impl MatrixConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let homeserver_url = required(env, "MATRIX_HOMESERVER_URL")?;
        if !(homeserver_url.starts_with("http://") || homeserver_url.starts_with("https://")) {
            return Err(invalid(
                "MATRIX_HOMESERVER_URL",
                "must start with http:// or https://",
            ));
        }
        let server_name = server_name(env)?;
        let as_token = Secret::new(required(env, "MATRIX_AS_TOKEN")?);
        let puppet_prefix = puppet_prefix(env)?;
        let bot_localpart = optional(env, "BRIDGE_BOT_LOCALPART", "bridgebot");
        let bot_user_id = UserId::parse(format!("@{bot_localpart}:{server_name}"))
            .map_err(|err| invalid("BRIDGE_BOT_LOCALPART", err.to_string()))?;
        Ok(Self {
            homeserver_url: homeserver_url.trim_end_matches('/').to_owned(),
            server_name,
            as_token,
            puppet_prefix,
            bot_user_id,
        })
    }
}

fn server_name(env: &dyn Env) -> Result<OwnedServerName, ConfigError> {
    OwnedServerName::try_from(required(env, "MATRIX_SERVER_NAME")?)
        .map_err(|err| invalid("MATRIX_SERVER_NAME", err.to_string()))
}

fn puppet_prefix(env: &dyn Env) -> Result<String, ConfigError> {
    let prefix = optional(env, "BRIDGE_PUPPET_PREFIX", "app_");
    if prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        Ok(prefix)
    } else {
        Err(invalid(
            "BRIDGE_PUPPET_PREFIX",
            "may contain only a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

/// How puppets are named, for functions that only read (no Matrix token).
pub fn puppet_namer(env: &dyn Env) -> Result<PuppetNamer, ConfigError> {
    Ok(PuppetNamer::new(puppet_prefix(env)?, &server_name(env)?))
}

/// The DynamoDB table that holds every record of the bridge.
#[derive(Clone, Debug)]
pub struct TableConfig {
    pub table_name: String,
}

impl TableConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, "BRIDGE_TABLE")?,
        })
    }
}

/// The SQS FIFO queue that carries delivery retries.
#[derive(Clone, Debug)]
pub struct RetryQueueConfig {
    pub queue_url: String,
}

impl RetryQueueConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let queue_url = required(env, "BRIDGE_RETRY_QUEUE_URL")?;
        if !queue_url.ends_with(".fifo") {
            return Err(invalid(
                "BRIDGE_RETRY_QUEUE_URL",
                "must be a FIFO queue (its URL ends in .fifo) so retries keep their order",
            ));
        }
        Ok(Self { queue_url })
    }
}

/// What fetching images from `https://` addresses may do: public addresses
/// only, unless `BRIDGE_FETCH_ALLOW_LOOPBACK` is `1` (local tests, which
/// serve images on loopback; never set in a deployment).
pub fn fetch_policy(env: &dyn Env) -> Result<crate::fetch::FetchPolicy, ConfigError> {
    let reach = match optional(env, "BRIDGE_FETCH_ALLOW_LOOPBACK", "0").as_str() {
        "0" | "false" => crate::fetch::Reach::Public,
        "1" | "true" => crate::fetch::Reach::PublicAndLoopback,
        _ => {
            return Err(invalid(
                "BRIDGE_FETCH_ALLOW_LOOPBACK",
                "must be 0 or 1 (1 only for local tests)",
            ));
        }
    };
    Ok(crate::fetch::FetchPolicy {
        reach,
        ..crate::fetch::FetchPolicy::default()
    })
}

/// How many times the retry function tries a delivery: the retry queue's
/// `maxReceiveCount` (`BRIDGE_RETRY_MAX_RECEIVE_COUNT`, 8 by default).
pub fn retry_max_attempts(env: &dyn Env) -> Result<u32, ConfigError> {
    optional(env, "BRIDGE_RETRY_MAX_RECEIVE_COUNT", "8")
        .parse()
        .ok()
        .filter(|count| *count >= 1)
        .ok_or_else(|| {
            invalid(
                "BRIDGE_RETRY_MAX_RECEIVE_COUNT",
                "must be a whole number of at least 1",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: [(&str, &str); 5] = [
        ("MATRIX_HOMESERVER_URL", "http://127.0.0.1:8008/"),
        ("MATRIX_SERVER_NAME", "localhost"),
        ("MATRIX_AS_TOKEN", "s3cret-token"),
        ("BRIDGE_TABLE", "bridge"),
        ("BRIDGE_RETRY_QUEUE_URL", "http://q/123/retry.fifo"),
    ];

    #[test]
    fn matrix_config_reads_defaults_and_trims_the_url() {
        let config = MatrixConfig::from_env(&FULL).unwrap();
        assert_eq!(config.homeserver_url, "http://127.0.0.1:8008");
        assert_eq!(config.puppet_prefix, "app_");
        assert_eq!(config.bot_user_id.as_str(), "@bridgebot:localhost");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let env = [
            ("MATRIX_HOMESERVER_URL", "http://x"),
            ("MATRIX_SERVER_NAME", "localhost"),
        ];
        let err = MatrixConfig::from_env(&env).unwrap_err();
        assert_eq!(err, ConfigError::Missing("MATRIX_AS_TOKEN"));
        assert_eq!(
            err.to_string(),
            "environment variable MATRIX_AS_TOKEN is required but not set"
        );
    }

    #[test]
    fn invalid_values_are_explained() {
        let env = [
            ("MATRIX_HOMESERVER_URL", "ftp://x"),
            ("MATRIX_SERVER_NAME", "localhost"),
            ("MATRIX_AS_TOKEN", "t"),
        ];
        let err = MatrixConfig::from_env(&env).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "MATRIX_HOMESERVER_URL",
                ..
            }
        ));
        let queue = RetryQueueConfig::from_env(&[("BRIDGE_RETRY_QUEUE_URL", "http://q/retry")]);
        assert!(matches!(queue, Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn fetches_stay_on_public_addresses_unless_a_test_says() {
        use crate::fetch::Reach;
        assert_eq!(fetch_policy(&FULL).unwrap().reach, Reach::Public);
        let local = [("BRIDGE_FETCH_ALLOW_LOOPBACK", "1")];
        assert_eq!(
            fetch_policy(&local).unwrap().reach,
            Reach::PublicAndLoopback
        );
        assert!(fetch_policy(&[("BRIDGE_FETCH_ALLOW_LOOPBACK", "yes")]).is_err());
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let config = MatrixConfig::from_env(&FULL).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret-token"), "{printed}");
        assert!(printed.contains("Secret(***)"));
    }
}
