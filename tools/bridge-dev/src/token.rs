//! Dev JWTs (HS256 with the local secret), minted for callers and checked by
//! the front door the way API Gateway's JWT authorizer checks real ones:
//! signature, issuer, audience, expiry, not-before and issued-at.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use bridge::api::caller::ADMIN_SCOPE;
use bridge::config::{ConfigError, Env, Secret};

/// The dev token settings: `BRIDGE_DEV_JWT_SECRET`, `BRIDGE_JWT_ISSUER`,
/// `BRIDGE_JWT_AUDIENCE`.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub secret: Secret,
    pub issuer: String,
    pub audience: String,
}

impl TokenConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let get = |name: &'static str| {
            env.get(name)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        Ok(Self {
            secret: Secret::new(get("BRIDGE_DEV_JWT_SECRET")?),
            issuer: get("BRIDGE_JWT_ISSUER")?,
            audience: get("BRIDGE_JWT_AUDIENCE")?,
        })
    }

    /// A token for `user`, valid for `ttl`, with the admin scope if asked.
    pub fn mint(
        &self,
        user: &str,
        admin: bool,
        ttl: time::Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let scope = if admin {
            format!("openid {ADMIN_SCOPE}")
        } else {
            "openid".to_owned()
        };
        self.mint_claims(&json!({
            "sub": user,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl.whole_seconds(),
            "scope": scope,
        }))
    }

    /// A token carrying exactly `claims`, signed with the dev secret.
    pub fn mint_claims(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(self.secret.expose().as_bytes()),
        )
    }

    /// The claims of a valid token, as API Gateway passes them to a function:
    /// every value a string (lists as `[a b]`).
    pub fn verify(
        &self,
        token: &str,
    ) -> Result<HashMap<String, String>, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        let data = decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_secret(self.secret.expose().as_bytes()),
            &validation,
        )?;
        // API Gateway also refuses a token issued in the future.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Some(iat) = data.claims.get("iat")
            && iat.as_i64().is_none_or(|iat| iat > now + LEEWAY as i64)
        {
            return Err(jsonwebtoken::errors::ErrorKind::ImmatureSignature.into());
        }
        Ok(data
            .claims
            .into_iter()
            .map(|(name, value)| (name, claim_string(value)))
            .collect())
    }
}

/// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY: u64 = 5;

fn claim_string(value: Value) -> String {
    match value {
        Value::String(text) => text,
        Value::Array(items) => {
            let items: Vec<String> = items.into_iter().map(claim_string).collect();
            format!("[{}]", items.join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TokenConfig {
        TokenConfig {
            secret: Secret::new("dev-secret"),
            issuer: "https://bridge.local".into(),
            audience: "matrix-bridge".into(),
        }
    }

    #[test]
    fn minted_tokens_verify_to_string_claims() {
        let token = config()
            .mint("alice", true, time::Duration::minutes(5))
            .unwrap();
        let claims = config().verify(&token).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["scope"], "openid bridge.admin");
        assert!(claims["exp"].parse::<i64>().is_ok());
    }

    #[test]
    fn wrong_secret_issuer_audience_or_expiry_fail() {
        let token = config()
            .mint("alice", false, time::Duration::minutes(5))
            .unwrap();
        let other_secret = TokenConfig {
            secret: Secret::new("other"),
            ..config()
        };
        assert!(other_secret.verify(&token).is_err());
        let other_issuer = TokenConfig {
            issuer: "https://evil".into(),
            ..config()
        };
        assert!(other_issuer.verify(&token).is_err());
        let other_audience = TokenConfig {
            audience: "else".into(),
            ..config()
        };
        assert!(other_audience.verify(&token).is_err());
        let expired = config()
            .mint("alice", false, time::Duration::minutes(-5))
            .unwrap();
        assert!(config().verify(&expired).is_err());
        assert!(config().verify("not.a.jwt").is_err());
    }

    #[test]
    fn tokens_not_yet_valid_fail() {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let token = |extra: Value| {
            let mut claims = json!({
                "sub": "alice", "iss": "https://bridge.local", "aud": "matrix-bridge",
                "exp": now + 600,
            });
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            config().mint_claims(&claims).unwrap()
        };
        assert!(config().verify(&token(json!({"iat": now}))).is_ok());
        assert!(config().verify(&token(json!({"nbf": now - 10}))).is_ok());
        assert!(config().verify(&token(json!({"nbf": now + 3600}))).is_err());
        assert!(config().verify(&token(json!({"iat": now + 3600}))).is_err());
        assert!(
            config()
                .verify(&token(json!({"iat": "yesterday"})))
                .is_err()
        );
    }
}
