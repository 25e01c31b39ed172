//! The API's one error type, and its one mapping to HTTP.
//!
//! Client errors explain what was wrong. Server errors say nothing internal:
//! their cause goes to the log with the request id, and the body names the
//! request id so the two can be matched.

use std::error::Error as StdError;
use std::time::Duration;

use lambda_http::{Body, Response};
use serde_json::json;

use crate::error::Error;
use crate::matrix::MatrixError;
use crate::queue::QueueError;
use crate::store::StoreError;

type Cause = Box<dyn StdError + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    RateLimited { retry_after: Option<Duration> },
    /// A dependency (table, queue, homeserver) is down or overloaded.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Cause),
    /// A bug or an impossible state.
    #[error("internal error")]
    Internal(#[source] Cause),
}

/// The one translation of the domain error into the API's: refusals the
/// caller can act on keep their words, the rest hides behind `503`/`500`.
impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::EventTooLarge { .. } => Self::PayloadTooLarge(err.to_string()),
            Error::Removed(_) => Self::Forbidden(err.to_string()),
            Error::Matrix(matrix) => match matrix.rate_limit() {
                Some(retry_after) => Self::RateLimited { retry_after },
                None if matrix.is_transient() => Self::unavailable(matrix),
                None if matrix.status().is_some() => Self::InvalidRequest(format!(
                    "{}; the request cannot succeed as it is",
                    matrix.reason()
                )),
                None => Self::internal(matrix),
            },
            Error::Invalid(reason) => Self::InvalidRequest(reason),
            Error::Conflict(reason) => Self::Conflict(reason),
            Error::NotFound(reason) => Self::NotFound(reason),
            Error::Store(StoreError::Corrupt(_)) | Error::Inconsistent(_) => Self::internal(err),
            Error::Store(_) | Error::Queue(_) | Error::Inbound(_) => Self::unavailable(err),
        }
    }
}

/// Port errors reach the API through the domain error, so `?` works on them
/// in handlers and they are translated in one place.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Error::from(err).into()
    }
}

impl From<MatrixError> for ApiError {
    fn from(err: MatrixError) -> Self {
        Error::from(err).into()
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        Error::from(err).into()
    }
}

impl ApiError {
    pub fn unavailable(cause: impl Into<Cause>) -> Self {
        Self::Unavailable(cause.into())
    }

    pub fn internal(cause: impl Into<Cause>) -> Self {
        Self::Internal(cause.into())
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::PayloadTooLarge(_) => 413,
            Self::UnsupportedMediaType(_) => 415,
            Self::RateLimited { .. } => 429,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The response for this error; logs the cause of server errors.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        match &self {
            Self::Unavailable(cause) | Self::Internal(cause) => {
                tracing::error!(request_id, status, error = %ErrorChain(cause.as_ref()), "request failed");
            }
            other => tracing::info!(request_id, status, error = %other, "request refused"),
        }
        let retry_after = match &self {
            Self::RateLimited { retry_after } => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            Self::Unavailable(_) => Some(Duration::from_secs(5)),
            _ => None,
        };
        let body = json!({
            "error": {"code": self.code(), "message": self.to_string()},
            "request_id": request_id,
        });
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(after) = retry_after {
            builder = builder.header(http::header::RETRY_AFTER, after.as_secs().max(1));
        }
        builder
            .body(Body::from(body.to_string()))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

/// Displays an error with its sources, for the log.
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn client_errors_explain_themselves() {
        let response =
            ApiError::InvalidRequest("body: missing field `id`".into()).into_response("req-1");
        assert_eq!(response.status(), 400);
        assert_eq!(
            body_of(&response),
            json!({"error": {"code": "invalid_request", "message": "body: missing field `id`"}, "request_id": "req-1"})
        );
    }

    #[test]
    fn every_variant_has_its_status_and_code() {
        let cases = [
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::RateLimited { retry_after: None },
                429,
                "rate_limited",
            ),
        ];
        for (err, status, code) in cases {
            let response = err.into_response("r");
            assert_eq!(response.status(), status);
            assert_eq!(body_of(&response)["error"]["code"], code);
        }
    }

    #[test]
    fn server_errors_hide_their_cause() {
        let cause = std::io::Error::other("connection to 10.0.0.7:8000 refused, token=abc");
        let response = ApiError::unavailable(cause).into_response("req-2");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        let text = String::from_utf8(response.body().to_vec()).unwrap();
        assert!(
            !text.contains("10.0.0.7") && !text.contains("token"),
            "{text}"
        );
        assert_eq!(
            body_of(&response)["error"]["message"],
            "the service is temporarily unavailable"
        );
        let response = ApiError::internal("bug").into_response("req-3");
        assert_eq!(response.status(), 500);
        assert_eq!(body_of(&response)["error"]["message"], "internal error");
    }
}
