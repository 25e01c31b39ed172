//! Matrix call failures, classified as worth retrying or not.

use std::time::Duration;

use serde::Deserialize;

/// The standard Matrix error body.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    pub errcode: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

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
    #[error("the homeserver is rate limiting us")]
    RateLimited { retry_after: Option<Duration> },
    /// A 5xx answer.
    #[error("the homeserver failed with {status}: {errcode} {message}")]
    Server {
        status: u16,
        errcode: String,
        message: String,
    },
    /// A 4xx answer other than rate limiting: the request itself is refused.
    #[error("the homeserver refused the request with {status}: {errcode} {message}")]
    Refused {
        status: u16,
        errcode: String,
        message: String,
    },
    /// A request that could not be built or a response that could not be read.
    #[error("matrix protocol error: {0}")]
    Protocol(String),
}

impl MatrixError {
    pub fn from_status(status: u16, body: &[u8], retry_after_header: Option<Duration>) -> Self {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        if status == 429 || parsed.errcode == "M_LIMIT_EXCEEDED" {
            let retry_after = parsed
                .retry_after_ms
                .map(Duration::from_millis)
                .or(retry_after_header);
            return Self::RateLimited { retry_after };
        }
        let errcode = if parsed.errcode.is_empty() {
            "M_UNKNOWN".to_owned()
        } else {
            parsed.errcode
        };
        if status >= 500 {
            Self::Server {
                status,
                errcode,
                message: parsed.error,
            }
        } else {
            Self::Refused {
                status,
                errcode,
                message: parsed.error,
            }
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::RateLimited { .. } | Self::Server { .. }
        )
    }

    /// The Matrix error code, for refusals and server errors.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Server { errcode, .. } | Self::Refused { errcode, .. } => Some(errcode),
            Self::RateLimited { .. } => Some("M_LIMIT_EXCEEDED"),
            _ => None,
        }
    }

    /// How long the homeserver asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let limited = MatrixError::from_status(
            429,
            br#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#,
            None,
        );
        assert!(limited.is_transient());
        assert_eq!(limited.retry_after(), Some(Duration::from_millis(1500)));
        let header_only = MatrixError::from_status(429, b"", Some(Duration::from_secs(3)));
        assert_eq!(header_only.retry_after(), Some(Duration::from_secs(3)));
        let server = MatrixError::from_status(502, b"<html>bad gateway</html>", None);
        assert!(server.is_transient());
        assert_eq!(server.errcode(), Some("M_UNKNOWN"));
        let refused = MatrixError::from_status(
            403,
            br#"{"errcode":"M_FORBIDDEN","error":"not in room"}"#,
            None,
        );
        assert!(!refused.is_transient());
        assert_eq!(refused.errcode(), Some("M_FORBIDDEN"));
        assert_eq!(
            refused.to_string(),
            "the homeserver refused the request with 403: M_FORBIDDEN not in room"
        );
    }
}
