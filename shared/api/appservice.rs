//! The edge of the appservice routes (`/_matrix/app/*`, auth kind
//! [`Auth::HsToken`]): the homeserver calls them with the `hs_token`, and
//! they answer in Matrix's error format, `{"errcode", "error"}`.
//!
//! The token comes as `Authorization: Bearer` or as the legacy
//! `access_token` query parameter (both must match when both are given), and
//! is compared in constant time. It is never logged.

use bytes::Bytes;
use lambda_http::{Body, RequestExt, Response};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::ErrorChain;
use super::request::Parsed;
use super::routes::{self, Auth, Route};
use super::{EdgeError, EdgeRequest, answer};
use crate::config::Secret;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::secrets::CachedSecret;

/// An error answered to the homeserver, as the Matrix spec shapes it.
#[derive(Debug, thiserror::Error)]
pub enum MatrixApiError {
    /// `401 M_MISSING_TOKEN`.
    #[error("no hs_token was given")]
    MissingToken,
    /// `403 M_FORBIDDEN`.
    #[error("the hs_token is not this appservice's")]
    Forbidden,
    /// `404 M_UNRECOGNIZED` (or `405` for a known path with another method).
    #[error("unrecognized request")]
    Unrecognized { method_not_allowed: bool },
    /// `404 M_NOT_FOUND`: no such user or room alias.
    #[error("{0}")]
    NotFound(String),
    /// `400 M_NOT_JSON` / `M_BAD_JSON` / `M_INVALID_PARAM`.
    #[error("{message}")]
    BadJson {
        errcode: &'static str,
        message: String,
    },
    /// `503 M_UNKNOWN`: the homeserver should try the transaction again.
    #[error("the bridge is temporarily unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `500 M_UNKNOWN`: a bug; the cause is logged, not answered.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The one translation of the domain error for the homeserver: what can
/// pass on retrying is `503`, the rest `500`; neither says more.
impl From<Error> for MatrixApiError {
    fn from(err: Error) -> Self {
        if err.is_transient() {
            Self::Unavailable(err.into())
        } else {
            Self::Internal(err.into())
        }
    }
}

impl MatrixApiError {
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingToken => 401,
            Self::Forbidden => 403,
            Self::Unrecognized {
                method_not_allowed: false,
            } => 404,
            Self::Unrecognized {
                method_not_allowed: true,
            } => 405,
            Self::NotFound(_) => 404,
            Self::BadJson { .. } => 400,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    pub fn errcode(&self) -> &'static str {
        match self {
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::Forbidden => "M_FORBIDDEN",
            Self::Unrecognized { .. } => "M_UNRECOGNIZED",
            Self::NotFound(_) => "M_NOT_FOUND",
            Self::BadJson { errcode, .. } => errcode,
            Self::Unavailable(_) | Self::Internal(_) => "M_UNKNOWN",
        }
    }

    /// A request ruma could not read: `M_NOT_JSON` for a body that is not
    /// JSON, `M_INVALID_PARAM` for a malformed id in the path (ruma reads
    /// path and query parameters alike), `M_BAD_JSON` for JSON of the wrong
    /// shape.
    pub fn unreadable(err: FromHttpRequestError) -> Self {
        let errcode = match &err {
            FromHttpRequestError::Deserialization(DeserializationError::Json(json))
                if json.is_syntax() || json.is_eof() =>
            {
                "M_NOT_JSON"
            }
            FromHttpRequestError::Deserialization(
                DeserializationError::Ident(_) | DeserializationError::Query(_),
            ) => "M_INVALID_PARAM",
            _ => "M_BAD_JSON",
        };
        Self::BadJson {
            errcode,
            message: err.to_string(),
        }
    }

    /// The response for this error; logs the cause of server errors.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        match &self {
            Self::Unavailable(cause) | Self::Internal(cause) => {
                tracing::error!(request_id, status, error = %ErrorChain(cause.as_ref()), "appservice request failed");
            }
            other => {
                tracing::info!(request_id, status, error = %other, "appservice request refused")
            }
        }
        let body = json!({"errcode": self.errcode(), "error": self.to_string()});
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

/// A request from the homeserver whose `hs_token` was checked.
#[derive(Debug)]
pub struct AppserviceRequest {
    pub route: Route,
    pub request_id: String,
    pub method: http::Method,
    pub path: std::collections::HashMap<String, String>,
    pub body: Bytes,
}

impl AppserviceRequest {
    /// Parses `request` for `function` and checks its token against
    /// `hs_token` (read again once if it does not match: it may have been
    /// rotated).
    pub async fn from_lambda(
        function: &str,
        request: lambda_http::Request,
        hs_token: &CachedSecret,
    ) -> Result<Self, (String, MatrixApiError)> {
        let method = request.method().clone();
        let raw_path = request.raw_http_path().to_owned();
        let parsed = Parsed::from_lambda(function, request).map_err(|unrouted| {
            // Under a catch-all route: a path another method serves is 405.
            let known_path = routes::ROUTES
                .iter()
                .any(|spec| spec.function == function && spec.match_path(&raw_path).is_some());
            (
                unrouted.request_id,
                MatrixApiError::Unrecognized {
                    method_not_allowed: known_path,
                },
            )
        })?;
        let fail = |err| (parsed.request_id.clone(), err);
        if parsed.route.auth != Auth::HsToken {
            return Err(fail(MatrixApiError::Unrecognized {
                method_not_allowed: false,
            }));
        }
        let bearer = parsed
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let query = parsed.query.first("access_token");
        let expected = hs_token.current();
        match check_hs_token(bearer, query, &expected) {
            Err(MatrixApiError::Forbidden) if hs_token.refresh(&expected).await => {
                check_hs_token(bearer, query, &hs_token.current()).map_err(fail)?;
            }
            checked => checked.map_err(fail)?,
        }
        Ok(Self {
            route: parsed.route.route,
            request_id: parsed.request_id,
            method,
            path: parsed.path,
            body: parsed.body,
        })
    }

    /// The request as ruma's server-side type `R`, the path parameters
    /// given in the order of its path: a `400` in Matrix's words when it
    /// cannot be read.
    pub fn parse<R: IncomingRequest>(&self, path_args: &[&str]) -> Result<R, MatrixApiError> {
        let request = http::Request::builder()
            .method(self.method.clone())
            .uri("/")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(self.body.as_ref())
            .map_err(MatrixApiError::internal)?;
        R::try_from_http_request(request, path_args).map_err(MatrixApiError::unreadable)
    }

    /// A path parameter (the route table's name for it).
    pub fn path_param(&self, name: &str) -> Result<&str, MatrixApiError> {
        self.path
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| MatrixApiError::BadJson {
                errcode: "M_INVALID_PARAM",
                message: format!("path parameter '{name}' is missing"),
            })
    }
}

impl MatrixApiError {
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(cause.into())
    }
}

/// Port errors reach the homeserver through the domain error.
impl From<crate::store::StoreError> for MatrixApiError {
    fn from(err: crate::store::StoreError) -> Self {
        Error::from(err).into()
    }
}

/// The `200` answer of a ruma response type (`{}` for the appservice API's).
pub fn respond<R: OutgoingResponse>(response: R) -> Result<Response<Body>, MatrixApiError> {
    let response = response
        .try_into_http_response::<Vec<u8>>()
        .map_err(MatrixApiError::internal)?;
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Checks the token of an appservice request: from the header, from the
/// legacy query parameter, or from both when they agree.
pub fn check_hs_token(
    bearer: Option<&str>,
    query: Option<&str>,
    expected: &Secret,
) -> Result<(), MatrixApiError> {
    let token = match (bearer, query) {
        (None, None) => return Err(MatrixApiError::MissingToken),
        (Some(a), Some(b)) if !bool::from(a.as_bytes().ct_eq(b.as_bytes())) => {
            return Err(MatrixApiError::Forbidden);
        }
        (Some(token), _) | (None, Some(token)) => token,
    };
    if bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(MatrixApiError::Forbidden)
    }
}

/// Parses an appservice request for `function`, checks its token, runs
/// `handle` on it, and answers any error in Matrix's format.
pub async fn serve<F, Fut>(
    metrics: &Metrics,
    hs_token: &CachedSecret,
    request: lambda_http::Request,
    handle: F,
) -> Response<Body>
where
    F: FnOnce(AppserviceRequest) -> Fut,
    Fut: Future<Output = Result<Response<Body>, MatrixApiError>>,
{
    let started = std::time::Instant::now();
    let parsed = AppserviceRequest::from_lambda(metrics.function(), request, hs_token).await;
    answer(metrics, started, parsed, handle).await
}

impl EdgeRequest for AppserviceRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("appservice", request_id = %self.request_id, route = ?self.route)
    }
}

impl EdgeError for MatrixApiError {
    fn into_response(self, request_id: &str) -> Response<Body> {
        MatrixApiError::into_response(self, request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap_or_default()
    }

    #[test]
    fn tokens_from_header_or_query_must_match() {
        let secret = Secret::new("hs-secret");
        assert!(check_hs_token(Some("hs-secret"), None, &secret).is_ok());
        assert!(check_hs_token(None, Some("hs-secret"), &secret).is_ok());
        assert!(check_hs_token(Some("hs-secret"), Some("hs-secret"), &secret).is_ok());
        assert!(matches!(
            check_hs_token(None, None, &secret),
            Err(MatrixApiError::MissingToken)
        ));
        assert!(matches!(
            check_hs_token(Some("wrong"), None, &secret),
            Err(MatrixApiError::Forbidden)
        ));
        assert!(matches!(
            check_hs_token(Some("hs-secret"), Some("other"), &secret),
            Err(MatrixApiError::Forbidden)
        ));
        assert!(matches!(
            check_hs_token(Some(""), None, &secret),
            Err(MatrixApiError::Forbidden)
        ));
    }

    #[test]
    fn errors_take_matrix_shape_and_hide_causes() {
        let cases = [
            (MatrixApiError::MissingToken, 401, "M_MISSING_TOKEN"),
            (MatrixApiError::Forbidden, 403, "M_FORBIDDEN"),
            (
                MatrixApiError::Unrecognized {
                    method_not_allowed: false,
                },
                404,
                "M_UNRECOGNIZED",
            ),
            (
                MatrixApiError::Unrecognized {
                    method_not_allowed: true,
                },
                405,
                "M_UNRECOGNIZED",
            ),
            (
                MatrixApiError::BadJson {
                    errcode: "M_NOT_JSON",
                    message: "not JSON".into(),
                },
                400,
                "M_NOT_JSON",
            ),
        ];
        for (err, status, errcode) in cases {
            let response = err.into_response("r");
            assert_eq!(response.status(), status);
            assert_eq!(body_of(&response)["errcode"], errcode);
        }
        let down = MatrixApiError::from(Error::from(crate::store::StoreError::Unavailable(
            "dynamodb at 10.1.2.3 throttled".into(),
        )));
        let response = down.into_response("r");
        assert_eq!(response.status(), 503);
        let text = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        assert!(!text.contains("10.1.2.3"), "{text}");
        assert_eq!(body_of(&response)["errcode"], "M_UNKNOWN");
    }
}
