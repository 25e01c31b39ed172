//! The local front door: what API Gateway (HTTP API, JWT authorizer) does in
//! AWS, on loopback. It checks the bearer token (HS256 dev secret, issuer,
//! audience, expiry), matches the routes of `template.yaml`, builds the same
//! payload-2.0 event API Gateway would, and hands it to the real function
//! handler in process. Its own refusals use API Gateway's bodies
//! (`{"message": "Unauthorized"}`), as callers will see them in AWS.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::token::TokenConfig;
use bridge::api::routes::{self, Function, RouteSpec};
use bridge::handlers::history::History;
use bridge::handlers::provision::Provisioner;
use bridge::handlers::send::SendService;
use bridge::matrix::AppserviceClient;
use bridge::queue::SqsRetryQueue;
use bridge::store::DynamoStore;

/// API Gateway's payload limit for a request to a Lambda integration.
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// The functions behind the front door.
pub struct Gateway {
    pub tokens: TokenConfig,
    pub provision: Provisioner<DynamoStore, AppserviceClient>,
    pub send: SendService<DynamoStore, AppserviceClient, SqsRetryQueue>,
    pub history: History<DynamoStore>,
}

/// Serves the front door on `addr` until the process ends.
pub async fn serve(gateway: Gateway, addr: SocketAddr) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(front_door)
        .with_state(Arc::new(gateway));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "front door listening");
    axum::serve(listener, app).await
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

async fn front_door(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path.starts_with("/_matrix/") {
        let body =
            json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}).to_string();
        return (
            StatusCode::NOT_FOUND,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    let Some((spec, params)) = routes::find(&parts.method, &path) else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(claims) = bearer.and_then(|token| gateway.tokens.verify(token.trim()).ok()) else {
        return gateway_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_PAYLOAD).await else {
        return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let event = payload_v2(spec, &parts, &params, claims, &body);
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(request) => request,
        Err(err) => {
            tracing::error!(error = %err, "could not build the Lambda event");
            return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    let response = match spec.function {
        Function::Provision => gateway.provision.handle(request).await,
        Function::Send => gateway.send.handle(request).await,
        Function::History => gateway.history.handle(request).await,
        Function::Retry => return gateway_error(StatusCode::NOT_FOUND, "Not Found"),
    };
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, axum::body::Body::from(body.to_vec()))
}

/// The API Gateway HTTP API payload (format 2.0) for a request.
fn payload_v2(
    spec: &RouteSpec,
    parts: &http::request::Parts,
    params: &std::collections::HashMap<String, String>,
    claims: std::collections::HashMap<String, String>,
    body: &[u8],
) -> Value {
    let now = OffsetDateTime::now_utc();
    let raw_query = parts.uri.query().unwrap_or_default();
    let mut query: Map<String, Value> = Map::new();
    for (name, value) in url_pairs(raw_query) {
        match query.get_mut(&name) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                query.insert(name, Value::String(value));
            }
        }
    }
    let (body, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    json!({
        "version": "2.0",
        "routeKey": spec.key(),
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers(&parts.headers),
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "pathParameters": params,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "authorizer": {"jwt": {"claims": claims, "scopes": null}},
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": parts.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default(),
            },
            "requestId": request_id,
            "routeKey": spec.key(),
            "stage": "$default",
            "time": now.format(&time::format_description::well_known::Rfc2822).unwrap_or_default(),
            "timeEpoch": now.unix_timestamp() * 1000,
        },
        "body": body,
        "isBase64Encoded": encoded,
    })
}

/// Headers as API Gateway passes them: lower-case names, repeated values
/// joined with commas.
fn headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        match out.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                out.insert(name.as_str().to_owned(), Value::String(value.to_owned()));
            }
        }
    }
    out
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
        .collect()
}
