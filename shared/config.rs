//! Typed configuration, read from the environment once per container.
//!
//! Each function loads only the parts it needs, so a history reader does not
//! require a Matrix token. A missing or malformed variable is an error that
//! names the variable; secrets are wrapped in [`Secret`] so they never appear
//! in `Debug` output or logs.

use std::fmt;

use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};

use crate::ids::{MAX_ENCODED_USER, MAX_MATRIX_USER_ID, PuppetNamer};

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "neither environment variable {stored} (the secret's ARN, in AWS) nor {value} (its value, for local use only) is set"
    )]
    MissingSecret {
        stored: &'static str,
        value: &'static str,
    },
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

/// Where a secret comes from. In Lambda, the template sets
/// `<NAME>_SECRET_ARN`, the ARN of a Secrets Manager secret read at init:
/// the value never is in the function's configuration. The local stack and
/// the tests set `<NAME>` to the value itself; that is for local use only.
#[derive(Clone, Debug)]
pub enum SecretSetting {
    /// The value, from the environment (local use only).
    Value(Secret),
    /// A Secrets Manager secret's ARN (or name).
    Stored { variable: &'static str, id: String },
}

impl SecretSetting {
    /// The value when the environment gives it (local use), or an error
    /// naming the variable that points to a stored secret instead.
    pub fn local_value(&self) -> Result<Secret, ConfigError> {
        match self {
            Self::Value(secret) => Ok(secret.clone()),
            Self::Stored { variable, .. } => Err(invalid(
                variable,
                "names a stored secret, which only the deployed adapters read",
            )),
        }
    }
}

/// The secret given by `value` (its value, local use) or `stored` (its ARN),
/// exactly one of them.
fn secret_setting(
    env: &dyn Env,
    value: &'static str,
    stored: &'static str,
) -> Result<SecretSetting, ConfigError> {
    let given = |name| env.get(name).filter(|v| !v.trim().is_empty());
    match (given(value), given(stored)) {
        (Some(_), Some(_)) => Err(invalid(
            value,
            format!("is set together with {stored}: set only one ({stored} in AWS)"),
        )),
        (Some(secret), None) => Ok(SecretSetting::Value(Secret::new(secret.trim()))),
        (None, Some(id)) => Ok(SecretSetting::Stored {
            variable: stored,
            id: id.trim().to_owned(),
        }),
        (None, None) => Err(ConfigError::MissingSecret { stored, value }),
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
    /// `MATRIX_AS_TOKEN_SECRET_ARN`, or `MATRIX_AS_TOKEN` locally.
    pub as_token: SecretSetting,
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
        let as_token = secret_setting(env, "MATRIX_AS_TOKEN", "MATRIX_AS_TOKEN_SECRET_ARN")?;
        let puppet_prefix = puppet_prefix(env)?;
        check_puppet_ids_fit(&puppet_prefix, &server_name)?;
        let bot_user_id = bot_user_id(env, &server_name)?;
        Ok(Self {
            homeserver_url: homeserver_url.trim_end_matches('/').to_owned(),
            server_name,
            as_token,
            puppet_prefix,
            bot_user_id,
        })
    }
}

/// The bot's localpart (`BRIDGE_BOT_LOCALPART`, `bridgebot` by default).
fn bot_localpart(env: &dyn Env) -> String {
    optional(env, "BRIDGE_BOT_LOCALPART", "bridgebot")
}

fn bot_user_id(env: &dyn Env, server_name: &ServerName) -> Result<OwnedUserId, ConfigError> {
    UserId::parse(format!("@{}:{server_name}", bot_localpart(env)))
        .map_err(|err| invalid("BRIDGE_BOT_LOCALPART", err.to_string()))
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
    let (prefix, server) = (puppet_prefix(env)?, server_name(env)?);
    check_puppet_ids_fit(&prefix, &server)?;
    Ok(PuppetNamer::new(prefix, &server))
}

/// Every application user id must make a valid Matrix user id: `@`, the
/// prefix, the longest encoding of a user id, `:` and the server name must
/// fit in Matrix's 255 bytes.
fn check_puppet_ids_fit(prefix: &str, server: &ServerName) -> Result<(), ConfigError> {
    let longest = 1 + prefix.len() + MAX_ENCODED_USER + 1 + server.as_str().len();
    if longest <= MAX_MATRIX_USER_ID {
        return Ok(());
    }
    Err(invalid(
        "BRIDGE_PUPPET_PREFIX",
        format!(
            "with MATRIX_SERVER_NAME '{server}', a 64-character user id would make a {longest}-byte \
             Matrix id, over Matrix's {MAX_MATRIX_USER_ID}; the prefix and the server name may \
             have {} bytes together",
            MAX_MATRIX_USER_ID - 2 - MAX_ENCODED_USER
        ),
    ))
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

/// When the sweeper steps in: operations pending longer than `stale_after`
/// are handed (back) to the retry function; those pending longer than
/// `max_age` are failed, with a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepSettings {
    pub stale_after: time::Duration,
    pub max_age: time::Duration,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            stale_after: time::Duration::minutes(10),
            max_age: time::Duration::hours(24),
        }
    }
}

impl SweepSettings {
    /// `BRIDGE_SWEEP_AFTER_SECONDS` (600) and `BRIDGE_MAX_PENDING_AGE_SECONDS`
    /// (86400).
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let seconds = |name: &'static str, default: &str| {
            optional(env, name, default)
                .parse::<i64>()
                .ok()
                .filter(|seconds| *seconds >= 1)
                .map(time::Duration::seconds)
                .ok_or_else(|| invalid(name, "must be a whole number of seconds, at least 1"))
        };
        let settings = Self {
            stale_after: seconds("BRIDGE_SWEEP_AFTER_SECONDS", "600")?,
            max_age: seconds("BRIDGE_MAX_PENDING_AGE_SECONDS", "86400")?,
        };
        if settings.max_age <= settings.stale_after {
            return Err(invalid(
                "BRIDGE_MAX_PENDING_AGE_SECONDS",
                "must be longer than BRIDGE_SWEEP_AFTER_SECONDS",
            ));
        }
        Ok(settings)
    }
}

/// How long the retry function hides a job it hands back (SQS
/// `ChangeMessageVisibility`): exponential in the job's receives, from
/// `base` up to `max`, with jitter, and never shorter than the homeserver's
/// `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBackoff {
    pub base: std::time::Duration,
    pub max: std::time::Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            base: std::time::Duration::from_secs(10),
            max: std::time::Duration::from_secs(300),
        }
    }
}

impl RetryBackoff {
    /// `BRIDGE_RETRY_BACKOFF_BASE_SECONDS` (10) and
    /// `BRIDGE_RETRY_BACKOFF_MAX_SECONDS` (300: below the sweeper's
    /// `BRIDGE_SWEEP_AFTER_SECONDS`, so a job waiting out its back-off is
    /// not taken for a lost one; SQS allows up to 12 hours).
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let seconds = |name: &'static str, default: &str| {
            optional(env, name, default)
                .parse::<u64>()
                .ok()
                .filter(|seconds| (1..=43_200).contains(seconds))
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| invalid(name, "must be a whole number of seconds, 1 to 43200"))
        };
        let backoff = Self {
            base: seconds("BRIDGE_RETRY_BACKOFF_BASE_SECONDS", "10")?,
            max: seconds("BRIDGE_RETRY_BACKOFF_MAX_SECONDS", "300")?,
        };
        if backoff.max < backoff.base {
            return Err(invalid(
                "BRIDGE_RETRY_BACKOFF_MAX_SECONDS",
                "must be at least BRIDGE_RETRY_BACKOFF_BASE_SECONDS",
            ));
        }
        Ok(backoff)
    }

    /// How long to hide a job received `receives` times, given a `jitter`
    /// in [0, 1) and the homeserver's `retry_after`: a random point in the
    /// upper half of `base * 2^(receives - 1)` (capped at `max`), at least
    /// `retry_after`.
    pub fn delay(
        &self,
        receives: u32,
        jitter: f64,
        retry_after: Option<std::time::Duration>,
    ) -> std::time::Duration {
        let doublings = receives.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1 << doublings).min(self.max);
        let delay = ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        delay.max(retry_after.unwrap_or_default())
    }
}

/// The homeserver's token for the appservice routes (`MATRIX_HS_TOKEN`), as
/// a value: for the registration `bridge-dev` writes.
pub fn hs_token(env: &dyn Env) -> Result<Secret, ConfigError> {
    Ok(Secret::new(required(env, "MATRIX_HS_TOKEN")?))
}

/// Where the `transactions` function reads the homeserver's token from
/// (`MATRIX_HS_TOKEN_SECRET_ARN`, or `MATRIX_HS_TOKEN` locally).
pub fn hs_token_setting(env: &dyn Env) -> Result<SecretSetting, ConfigError> {
    secret_setting(env, "MATRIX_HS_TOKEN", "MATRIX_HS_TOKEN_SECRET_ARN")
}

/// The SQS FIFO queue that carries what arrives from Matrix to the
/// application (`BRIDGE_INBOUND_QUEUE_URL`).
#[derive(Clone, Debug)]
pub struct InboundQueueConfig {
    pub queue_url: String,
}

impl InboundQueueConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let queue_url = required(env, "BRIDGE_INBOUND_QUEUE_URL")?;
        if !queue_url.ends_with(".fifo") {
            return Err(invalid(
                "BRIDGE_INBOUND_QUEUE_URL",
                "must be a FIFO queue (its URL ends in .fifo) so events keep their order",
            ));
        }
        Ok(Self { queue_url })
    }
}

/// The appservice registration the homeserver is given: read from the same
/// variables as the functions (the tokens, the server name, the puppet
/// prefix, the bot), plus where the homeserver reaches the webhook.
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    /// The registration's `id` (`BRIDGE_APPSERVICE_ID`, `bridge` by default).
    pub id: String,
    /// The base URL the homeserver calls, `$url/_matrix/app/v1/...`
    /// (`BRIDGE_WEBHOOK_URL`: the API's URL in AWS, the front door locally).
    pub url: String,
    pub as_token: Secret,
    pub hs_token: Secret,
    pub sender_localpart: String,
    pub puppet_prefix: String,
    pub server_name: OwnedServerName,
}

impl RegistrationConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let url = required(env, "BRIDGE_WEBHOOK_URL")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "BRIDGE_WEBHOOK_URL",
                "must start with http:// or https://",
            ));
        }
        let server_name = server_name(env)?;
        // Checked as the functions check it.
        bot_user_id(env, &server_name)?;
        Ok(Self {
            id: optional(env, "BRIDGE_APPSERVICE_ID", "bridge"),
            url: url.trim_end_matches('/').to_owned(),
            as_token: Secret::new(required(env, "MATRIX_AS_TOKEN")?),
            hs_token: hs_token(env)?,
            sender_localpart: bot_localpart(env),
            puppet_prefix: puppet_prefix(env)?,
            server_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puppet_ids_must_fit_in_matrix_user_ids() {
        let long_prefix = "p".repeat(40);
        let env = [
            (
                "MATRIX_SERVER_NAME",
                "a-rather-long-homeserver-name.example.org",
            ),
            ("BRIDGE_PUPPET_PREFIX", long_prefix.as_str()),
        ];
        let err = puppet_namer(&env).unwrap_err().to_string();
        assert!(
            err.contains("BRIDGE_PUPPET_PREFIX") && err.contains("255"),
            "{err}"
        );
        let fits = [
            ("MATRIX_SERVER_NAME", "example.org"),
            ("BRIDGE_PUPPET_PREFIX", "app_"),
        ];
        let namer = puppet_namer(&fits).unwrap();
        // The longest id there is makes a valid Matrix id.
        let longest = crate::ids::AppUserId::parse("=".repeat(64)).unwrap();
        assert!(namer.user_id(&longest).as_str().len() <= MAX_MATRIX_USER_ID);
    }

    #[test]
    fn retry_backoff_doubles_with_jitter_up_to_its_cap_and_honours_retry_after() {
        use std::time::Duration;
        let backoff = RetryBackoff::from_env(&[("X", "y")]).unwrap();
        assert_eq!(backoff, RetryBackoff::default());
        let secs = |receives, jitter| backoff.delay(receives, jitter, None).as_secs_f64();
        assert_eq!(secs(1, 0.0), 5.0, "half of the base at least");
        assert_eq!(secs(1, 0.999_999).round(), 10.0);
        assert_eq!(secs(4, 0.0), 40.0, "doubling per receive");
        assert_eq!(secs(40, 0.0), 150.0, "capped at max");
        assert!(secs(40, 0.5) <= 300.0);
        assert_ne!(secs(3, 0.1), secs(3, 0.9), "jittered");
        assert_eq!(
            backoff.delay(1, 0.0, Some(Duration::from_secs(120))),
            Duration::from_secs(120),
            "never before the homeserver's Retry-After"
        );
        assert!(RetryBackoff::from_env(&[("BRIDGE_RETRY_BACKOFF_BASE_SECONDS", "0")]).is_err());
        assert!(
            RetryBackoff::from_env(&[
                ("BRIDGE_RETRY_BACKOFF_BASE_SECONDS", "60"),
                ("BRIDGE_RETRY_BACKOFF_MAX_SECONDS", "30")
            ])
            .is_err()
        );
    }

    #[test]
    fn sweep_settings_have_defaults_and_are_checked() {
        assert_eq!(
            SweepSettings::from_env(&[("X", "y")]).unwrap(),
            SweepSettings::default()
        );
        let custom = SweepSettings::from_env(&[("BRIDGE_SWEEP_AFTER_SECONDS", "60")]).unwrap();
        assert_eq!(custom.stale_after, time::Duration::minutes(1));
        assert!(SweepSettings::from_env(&[("BRIDGE_SWEEP_AFTER_SECONDS", "0")]).is_err());
        assert!(
            SweepSettings::from_env(&[
                ("BRIDGE_SWEEP_AFTER_SECONDS", "100"),
                ("BRIDGE_MAX_PENDING_AGE_SECONDS", "50")
            ])
            .is_err()
        );
    }

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
        assert_eq!(
            err.to_string(),
            "neither environment variable MATRIX_AS_TOKEN_SECRET_ARN (the secret's ARN, in AWS) \
             nor MATRIX_AS_TOKEN (its value, for local use only) is set"
        );
        let err = MatrixConfig::from_env(&[("MATRIX_SERVER_NAME", "localhost")]).unwrap_err();
        assert_eq!(err, ConfigError::Missing("MATRIX_HOMESERVER_URL"));
    }

    #[test]
    fn tokens_come_from_a_stored_secret_or_locally_from_their_value() {
        let base = [
            ("MATRIX_HOMESERVER_URL", "http://x"),
            ("MATRIX_SERVER_NAME", "localhost"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let env: std::collections::HashMap<String, String> = base
                .iter()
                .chain(extra)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            MatrixConfig::from_env(&env)
        };
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:as-AbCdEf";
        let stored = with(&[("MATRIX_AS_TOKEN_SECRET_ARN", arn)]).unwrap();
        assert!(
            matches!(&stored.as_token, SecretSetting::Stored { id, .. } if id == arn),
            "{stored:?}"
        );
        let err = stored.as_token.local_value().unwrap_err().to_string();
        assert!(err.contains("MATRIX_AS_TOKEN_SECRET_ARN"), "{err}");
        let local = with(&[("MATRIX_AS_TOKEN", "local-value")]).unwrap();
        assert_eq!(
            local.as_token.local_value().unwrap().expose(),
            "local-value"
        );
        let both = with(&[
            ("MATRIX_AS_TOKEN", "local-value"),
            ("MATRIX_AS_TOKEN_SECRET_ARN", arn),
        ]);
        assert!(
            matches!(
                both,
                Err(ConfigError::Invalid {
                    name: "MATRIX_AS_TOKEN",
                    ..
                })
            ),
            "{both:?}"
        );
        assert!(matches!(
            hs_token_setting(&[("MATRIX_HS_TOKEN_SECRET_ARN", arn)]),
            Ok(SecretSetting::Stored {
                variable: "MATRIX_HS_TOKEN_SECRET_ARN",
                ..
            })
        ));
        assert_eq!(
            hs_token_setting(&[("X", "y")]).unwrap_err(),
            ConfigError::MissingSecret {
                stored: "MATRIX_HS_TOKEN_SECRET_ARN",
                value: "MATRIX_HS_TOKEN"
            }
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

    #[test]
    fn the_registration_reads_what_the_functions_read() {
        let env = [
            ("BRIDGE_WEBHOOK_URL", "https://api.example.org/"),
            ("MATRIX_SERVER_NAME", "example.org"),
            ("MATRIX_AS_TOKEN", "as-secret"),
            ("MATRIX_HS_TOKEN", "hs-secret"),
            ("BRIDGE_PUPPET_PREFIX", "chat_"),
        ];
        let registration = RegistrationConfig::from_env(&env).unwrap();
        assert_eq!(registration.url, "https://api.example.org");
        assert_eq!(registration.id, "bridge");
        assert_eq!(registration.sender_localpart, "bridgebot");
        assert_eq!(registration.puppet_prefix, "chat_");
        assert_eq!(registration.hs_token, hs_token(&env).unwrap());
        assert!(!format!("{registration:?}").contains("hs-secret"));
        let no_hs = [("MATRIX_HS_TOKEN", " ")];
        assert_eq!(
            hs_token(&no_hs).unwrap_err(),
            ConfigError::Missing("MATRIX_HS_TOKEN")
        );
        let queue = InboundQueueConfig::from_env(&[("BRIDGE_INBOUND_QUEUE_URL", "http://q/in")]);
        assert!(matches!(queue, Err(ConfigError::Invalid { .. })));
    }
}
