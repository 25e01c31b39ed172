//! Matrix call failures, read with ruma's error types and classified as
//! worth retrying or not.
//!
//! The homeserver's own error text is for the log only: [`MatrixError::reason`]
//! is the bridge's wording of a refusal, fit to store on a message and show
//! to the application.

use std::time::{Duration, SystemTime};

use ruma::api::EndpointError;
use ruma::api::error::{Error as RumaError, ErrorKind, LimitExceededErrorData, RetryAfter};

#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// No answer: connection refused, reset, or timed out. When the request
    /// may have reached the homeserver, `maybe_delivered` is true.
    #[error("the homeserver did not answer")]
    Unreachable {
        maybe_delivered: bool,
        #[source]
        source: reqwest::Error,
    },
    /// An error answer (4xx or 5xx), as ruma reads it: the status, and the
    /// `errcode` with its data (`retry_after_ms` for rate limits).
    #[error("the homeserver answered {0}")]
    Answered(RumaError),
    /// A request that could not be built or a response that could not be read.
    #[error("matrix protocol error: {0}")]
    Protocol(String),
}

impl MatrixError {
    /// Reads an error answer. A `Retry-After` header counts as the rate
    /// limit's delay, as ruma reads it.
    pub fn from_status(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let mut response = http::Response::builder().status(status);
        if let Some(after) = retry_after {
            response = response.header(http::header::RETRY_AFTER, after.as_secs());
        }
        match response.body(body) {
            Ok(response) => Self::Answered(RumaError::from_http_response(response)),
            Err(err) => Self::Protocol(err.to_string()),
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answered(err) => Some(err.status_code.as_u16()),
            _ => None,
        }
    }

    /// The Matrix error kind of an error answer with a standard body.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Answered(err) => err.error_kind(),
            _ => None,
        }
    }

    fn is_rate_limit(&self) -> bool {
        self.status() == Some(429) || matches!(self.kind(), Some(ErrorKind::LimitExceeded(_)))
    }

    /// Whether trying again later may succeed: no answer, a rate limit, or
    /// a server error.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Answered(err) => err.status_code.is_server_error() || self.is_rate_limit(),
            Self::Protocol(_) => false,
        }
    }

    /// Whether the request may have taken effect all the same: no answer
    /// to a request that was sent, a server error, or an answer that could
    /// not be read. A refusal (4xx, a rate limit) or a request that never
    /// reached the homeserver did not.
    pub fn may_have_landed(&self) -> bool {
        match self {
            Self::Unreachable {
                maybe_delivered, ..
            } => *maybe_delivered,
            Self::Answered(err) => err.status_code.is_server_error(),
            Self::Protocol(_) => true,
        }
    }

    /// Whether the homeserver said the user may not do this (`M_FORBIDDEN`).
    pub fn is_forbidden(&self) -> bool {
        matches!(self.kind(), Some(ErrorKind::Forbidden))
    }

    /// Whether this is a rate limit, and how long the homeserver asked us to
    /// wait if it said.
    pub fn rate_limit(&self) -> Option<Option<Duration>> {
        if !self.is_rate_limit() {
            return None;
        }
        Some(match self.kind() {
            Some(ErrorKind::LimitExceeded(LimitExceededErrorData {
                retry_after: Some(after),
                ..
            })) => Some(match after {
                RetryAfter::Delay(delay) => *delay,
                RetryAfter::DateTime(at) => at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            }),
            _ => None,
        })
    }

    /// Why delivery failed, in the bridge's words: no homeserver text.
    pub fn reason(&self) -> String {
        match self {
            Self::Unreachable { .. } => "the homeserver did not answer".into(),
            Self::Protocol(_) => "the homeserver's answer could not be read".into(),
            Self::Answered(_) if self.is_rate_limit() => "the homeserver kept rate limiting".into(),
            Self::Answered(err) if err.status_code.is_server_error() => {
                format!("the homeserver failed ({})", err.status_code.as_u16())
            }
            Self::Answered(err) => match err.error_kind() {
                Some(ErrorKind::Forbidden) => {
                    "the homeserver does not allow the sender to post in the room".into()
                }
                Some(ErrorKind::TooLarge) => "the message is too large for the homeserver".into(),
                Some(kind) => format!("the homeserver refused it ({})", kind.errcode()),
                None => format!("the homeserver refused it ({})", err.status_code.as_u16()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers_with_ruma() {
        let limited = MatrixError::from_status(
            429,
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":1500}"#,
            None,
        );
        assert!(limited.is_transient());
        assert_eq!(
            limited.rate_limit(),
            Some(Some(Duration::from_millis(1500)))
        );
        let header_only = MatrixError::from_status(429, b"", Some(Duration::from_secs(3)));
        assert!(header_only.is_transient());
        assert_eq!(header_only.rate_limit(), Some(None));
        let header_wins = MatrixError::from_status(
            429,
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"x","retry_after_ms":1500}"#,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(header_wins.rate_limit(), Some(Some(Duration::from_secs(3))));
        let server = MatrixError::from_status(502, b"<html>bad gateway</html>", None);
        assert!(server.is_transient());
        assert_eq!(server.rate_limit(), None);
        assert_eq!(server.reason(), "the homeserver failed (502)");
        let refused = MatrixError::from_status(
            403,
            br#"{"errcode":"M_FORBIDDEN","error":"User @x is not in room !secret"}"#,
            None,
        );
        assert!(!refused.is_transient());
        assert!(refused.is_forbidden());
        assert_eq!(refused.status(), Some(403));
        let bad = MatrixError::from_status(400, br#"{"errcode":"M_BAD_JSON","error":"no"}"#, None);
        assert_eq!(bad.reason(), "the homeserver refused it (M_BAD_JSON)");
    }

    #[test]
    fn reasons_never_carry_the_homeservers_text() {
        let refused = MatrixError::from_status(
            403,
            br#"{"errcode":"M_FORBIDDEN","error":"User @x is not in room !secret"}"#,
            None,
        );
        assert!(refused.to_string().contains("!secret"), "the log keeps it");
        assert!(!refused.reason().contains("secret"), "{}", refused.reason());
    }
}
