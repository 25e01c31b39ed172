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
    let (request_id, outcome) = match ApiRequest::from_lambda(metrics.function(), request) {
        Ok(request) => {
            let request_id = request.request_id.clone();
            let route = request.route;
            let span = tracing::info_span!("api", request_id = %request_id, route = ?route, caller = %request.caller.user_id);
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
