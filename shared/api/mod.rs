//! The HTTP edge, for API Gateway (HTTP API, payload 2.0) events: the route
//! table with each route's auth kind, request parsing, the caller, the JSON
//! views, and the one mapping of errors to HTTP responses (the API's JSON
//! errors, and Matrix's for the appservice routes).

pub mod appservice;
pub mod caller;
mod error;
mod request;
pub mod routes;
pub mod views;

pub use error::{ApiError, ErrorChain};
pub use request::{ApiRequest, MAX_JSON_BODY};
pub use routes::{Auth, Route};

use crate::metrics::Metrics;

use lambda_http::{Body, Response};
use serde::Serialize;

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: u16, value: &T) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(ApiError::internal)
}

/// An empty `204 No Content`.
pub fn no_content() -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(204)
        .body(Body::Empty)
        .map_err(ApiError::internal)
}

/// A parsed request of one of the edges (the JSON API, the appservice routes).
pub(crate) trait EdgeRequest {
    fn request_id(&self) -> &str;
    /// The span its handling runs in: ids and route, never a token.
    fn span(&self) -> tracing::Span;
}

/// An error of one of the edges, answered in that edge's format.
pub(crate) trait EdgeError {
    fn into_response(self, request_id: &str) -> Response<Body>;
}

/// Runs `handle` on a parsed request in its span, answers any error in the
/// edge's format, and records the request's metrics.
pub(crate) async fn answer<R, E, F, Fut>(
    metrics: &Metrics,
    started: std::time::Instant,
    parsed: Result<R, (String, E)>,
    handle: F,
) -> Response<Body>
where
    R: EdgeRequest,
    E: EdgeError,
    F: FnOnce(R) -> Fut,
    Fut: Future<Output = Result<Response<Body>, E>>,
{
    let (request_id, outcome) = match parsed {
        Ok(request) => {
            let request_id = request.request_id().to_owned();
            let span = request.span();
            (
                request_id,
                tracing::Instrument::instrument(handle(request), span).await,
            )
        }
        Err((request_id, err)) => (request_id, Err(err)),
    };
    let response = outcome.unwrap_or_else(|err| err.into_response(&request_id));
    metrics.request(response.status().as_u16(), started.elapsed());
    response
}

/// Parses a request for the function `metrics` are about, runs `handle` on
/// it, and turns any error into its HTTP response. Every API function's
/// entry point.
pub async fn serve<F, Fut>(
    metrics: &Metrics,
    request: lambda_http::Request,
    handle: F,
) -> Response<Body>
where
    F: FnOnce(ApiRequest) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let started = std::time::Instant::now();
    let parsed = ApiRequest::from_lambda(metrics.function(), request);
    answer(metrics, started, parsed, handle).await
}

impl EdgeRequest for ApiRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("api", request_id = %self.request_id, route = ?self.route, caller = %self.caller.user_id)
    }
}

impl EdgeError for ApiError {
    fn into_response(self, request_id: &str) -> Response<Body> {
        ApiError::into_response(self, request_id)
    }
}
