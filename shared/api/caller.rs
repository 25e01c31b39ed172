//! Who is calling an API route, and what they may do: the caller read from
//! the JWT claims at the HTTP edge.
//!
//! In AWS the HTTP API's JWT authorizer has already checked the token
//! (signature, issuer, audience, expiry, not-before) and, on service routes,
//! the `bridge.admin` scope; the function reads the claims it passed on.
//! Locally the front door checks the same way and passes the same claims.
//! A `scope` containing `bridge.admin` marks a service token, which may
//! provision and act for any user through `as_user`.

use std::collections::HashMap;

use super::ApiError;
use crate::ids::{AppUserId, ConversationId};

/// The scope that makes a token a service (admin) token.
pub const ADMIN_SCOPE: &str = "bridge.admin";

/// The authenticated caller of an API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: AppUserId,
    pub admin: bool,
}

impl Caller {
    /// Reads the caller from JWT claims as API Gateway passes them on
    /// (every claim as a string; `scope` space-separated).
    pub fn from_claims(claims: &HashMap<String, String>) -> Result<Self, ApiError> {
        let sub = claims
            .get("sub")
            .ok_or_else(|| ApiError::Unauthorized("the token has no 'sub' claim".into()))?;
        let user_id = AppUserId::parse(sub.as_str()).map_err(|err| {
            ApiError::Unauthorized(format!("the token's 'sub' is not a valid user id: {err}"))
        })?;
        let admin = has_scope(claims, ADMIN_SCOPE);
        Ok(Self { user_id, admin })
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs a service token (scope '{ADMIN_SCOPE}')"
            )))
        }
    }

    /// The user a request acts for: the caller, or `as_user` for a service token.
    pub fn acting_user(&self, as_user: Option<AppUserId>) -> Result<AppUserId, ApiError> {
        match as_user {
            None => Ok(self.user_id.clone()),
            Some(user) if self.admin => Ok(user),
            Some(_) => Err(ApiError::Forbidden(format!(
                "only a service token (scope '{ADMIN_SCOPE}') may act as another user"
            ))),
        }
    }

    /// The answer for acting as `user`, who is not a member of `id`: `404`
    /// for users, so ids do not leak; `403` for a service token, which may
    /// know the conversation.
    pub fn not_a_member(&self, user: &AppUserId, id: &ConversationId) -> ApiError {
        if self.admin {
            ApiError::Forbidden(format!(
                "user '{user}' is not a member of conversation '{id}'"
            ))
        } else {
            ApiError::NotFound(format!("conversation '{id}' not found"))
        }
    }

    /// Whose membership a read needs: `None` for a service token reading
    /// as itself (it sees every conversation), else the acting user. Callers
    /// who are not members get `404`, so ids do not leak.
    pub fn reader(&self, as_user: Option<AppUserId>) -> Result<Option<AppUserId>, ApiError> {
        if self.admin && as_user.is_none() {
            Ok(None)
        } else {
            self.acting_user(as_user).map(Some)
        }
    }
}

/// Whether JWT claims grant `wanted` in their `scope` (or `scp`) claim, as
/// API Gateway's JWT authorizer reads them.
pub fn has_scope(claims: &HashMap<String, String>, wanted: &str) -> bool {
    ["scope", "scp"]
        .iter()
        .filter_map(|name| claims.get(*name))
        .any(|scope| scope_contains(scope, wanted))
}

/// Whether a space-separated OAuth `scope` string (API Gateway may also pass
/// a list as `[a b]`) contains `wanted`.
fn scope_contains(scope: &str, wanted: &str) -> bool {
    scope
        .trim_matches(|c| c == '[' || c == ']')
        .split([' ', ','])
        .any(|item| item == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_sub_and_admin_scope() {
        let caller =
            Caller::from_claims(&claims(&[("sub", "svc"), ("scope", "openid bridge.admin")]))
                .unwrap();
        assert!(caller.admin);
        let caller =
            Caller::from_claims(&claims(&[("sub", "alice"), ("scope", "bridge.admins")])).unwrap();
        assert!(!caller.admin);
        let caller =
            Caller::from_claims(&claims(&[("sub", "svc"), ("scope", "[read bridge.admin]")]))
                .unwrap();
        assert!(caller.admin);
    }

    #[test]
    fn a_token_without_a_valid_sub_is_unauthorized() {
        assert!(matches!(
            Caller::from_claims(&claims(&[])),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            Caller::from_claims(&claims(&[("sub", "not valid!")])),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn only_admins_act_for_others() {
        let alice = AppUserId::parse("alice").unwrap();
        let bob = AppUserId::parse("bob").unwrap();
        let user = Caller {
            user_id: alice.clone(),
            admin: false,
        };
        assert_eq!(user.acting_user(None).unwrap(), alice);
        assert!(matches!(
            user.acting_user(Some(bob.clone())),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(user.require_admin(), Err(ApiError::Forbidden(_))));
        let admin = Caller {
            user_id: alice,
            admin: true,
        };
        assert_eq!(admin.acting_user(Some(bob.clone())).unwrap(), bob);
        assert!(admin.require_admin().is_ok());
    }

    #[test]
    fn reads_need_the_membership_of_the_acting_user() {
        let alice = AppUserId::parse("alice").unwrap();
        let bob = AppUserId::parse("bob").unwrap();
        let user = Caller {
            user_id: alice.clone(),
            admin: false,
        };
        assert_eq!(user.reader(None).unwrap(), Some(alice));
        assert!(matches!(
            user.reader(Some(bob.clone())),
            Err(ApiError::Forbidden(_))
        ));
        let admin = Caller {
            admin: true,
            ..user
        };
        assert_eq!(
            admin.reader(None).unwrap(),
            None,
            "a service token sees all"
        );
        assert_eq!(admin.reader(Some(bob.clone())).unwrap(), Some(bob));
    }
}
