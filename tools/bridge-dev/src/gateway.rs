//! The local front door: what API Gateway (HTTP API, JWT authorizer) does in
//! AWS, on loopback. It checks the bearer token (HS256 dev secret, issuer,
//! audience, expiry, not-before, issued-at, and a route's scopes), matches
//! the routes of `template.yaml`, builds the same payload-2.0 event API
//! Gateway would, and hands it to the registered function in process.
//! Appservice routes (`/_matrix/app/*`) pass without a JWT: their function
//! checks the homeserver's token itself. Its own refusals use API Gateway's bodies
//! (`{"message": "Unauthorized"}`), as callers will see them in AWS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::token::TokenConfig;
use bridge::api::caller::has_scope;
use bridge::api::routes::{self, Auth, RouteSpec};
use bridge::function::{Handler, HttpFunction};
use bridge::handlers::registry;
use bridge::ports::{InitError, Ports};

/// API Gateway's payload limit for a request to a Lambda integration.
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// The front door: the token settings, the route table, and every HTTP
/// function of the registry, by name.
pub struct Gateway {
    tokens: TokenConfig,
    routes: &'static [RouteSpec],
    functions: HashMap<&'static str, Box<dyn HttpFunction>>,
}

impl Gateway {
    /// The front door for the routes of `template.yaml`, with every HTTP
    /// function of the registry built from `ports`.
    pub async fn build<P: Ports>(tokens: TokenConfig, ports: &P) -> Result<Self, InitError> {
        let mut functions = HashMap::new();
        for function in registry::<P>() {
            if let Handler::Http(handler) = function.handler(ports).await? {
                functions.insert(function.name, handler);
            }
        }
        Ok(Self {
            tokens,
            routes: routes::ROUTES,
            functions,
        })
    }
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

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A refusal of the front door's own, in API Gateway's words; under
/// `/_matrix/` in Matrix's, as the homeserver expects from an appservice.
fn refusal(status: StatusCode, path: &str) -> Response {
    if path.starts_with("/_matrix/") {
        let status = match status {
            StatusCode::METHOD_NOT_ALLOWED => status,
            _ => StatusCode::NOT_FOUND,
        };
        return json_response(
            status,
            json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        );
    }
    let message = match status {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::PAYLOAD_TOO_LARGE => "Request Entity Too Large",
        StatusCode::INTERNAL_SERVER_ERROR => "Internal Server Error",
        _ => "Not Found",
    };
    json_response(status, json!({ "message": message }))
}

/// What the front door does with a request, before reading its body.
#[derive(Debug)]
enum Admission<'a> {
    /// Hand it to the route's function, with the token's claims if the
    /// route's auth kind takes a JWT.
    Pass {
        spec: &'static RouteSpec,
        params: HashMap<String, String>,
        claims: Option<HashMap<String, String>>,
    },
    /// Refuse it with this status.
    Refuse(StatusCode, &'a str),
}

impl Gateway {
    /// Routes a request and checks its token as the route's auth kind says,
    /// as API Gateway does: no route is 404 (405 for a known appservice
    /// path); a missing or invalid JWT 401; a JWT without a route's scopes
    /// 403; appservice routes pass without a JWT.
    fn admit<'a>(&self, method: &Method, path: &'a str, headers: &HeaderMap) -> Admission<'a> {
        let found = self
            .routes
            .iter()
            .filter(|spec| spec.method == method)
            .find_map(|spec| spec.match_path(path).map(|params| (spec, params)));
        let Some((spec, params)) = found else {
            let other_method = self
                .routes
                .iter()
                .any(|spec| spec.match_path(path).is_some());
            let status = if other_method && path.starts_with("/_matrix/") {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::NOT_FOUND
            };
            return Admission::Refuse(status, path);
        };
        let claims = match spec.auth {
            Auth::HsToken => None,
            Auth::User | Auth::Admin => {
                let bearer = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "));
                let Some(claims) = bearer.and_then(|token| self.tokens.verify(token.trim()).ok())
                else {
                    return Admission::Refuse(StatusCode::UNAUTHORIZED, path);
                };
                if !spec
                    .auth
                    .scopes()
                    .iter()
                    .all(|scope| has_scope(&claims, scope))
                {
                    return Admission::Refuse(StatusCode::FORBIDDEN, path);
                }
                Some(claims)
            }
        };
        Admission::Pass {
            spec,
            params,
            claims,
        }
    }
}

async fn front_door(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (spec, params, claims) = match gateway.admit(&parts.method, &path, &parts.headers) {
        Admission::Pass {
            spec,
            params,
            claims,
        } => (spec, params, claims),
        Admission::Refuse(status, path) => return refusal(status, path),
    };
    let Some(function) = gateway.functions.get(spec.function) else {
        return refusal(StatusCode::NOT_FOUND, &path);
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_PAYLOAD).await else {
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, &path);
    };
    let event = payload_v2(spec, &parts, &params, claims, &body);
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(request) => request,
        Err(err) => {
            tracing::error!(error = %err, "could not build the Lambda event");
            return refusal(StatusCode::INTERNAL_SERVER_ERROR, &path);
        }
    };
    let (parts, body) = function.call(request).await.into_parts();
    Response::from_parts(parts, axum::body::Body::from(body.to_vec()))
}

/// The API Gateway HTTP API payload (format 2.0) for a request.
fn payload_v2(
    spec: &RouteSpec,
    parts: &http::request::Parts,
    params: &HashMap<String, String>,
    claims: Option<HashMap<String, String>>,
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
            "authorizer": claims.map(|claims| json!({"jwt": {"claims": claims, "scopes": null}})),
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

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::api::routes::Route;
    use bridge::config::Secret;

    fn tokens() -> TokenConfig {
        TokenConfig {
            secret: Secret::new("dev-secret"),
            issuer: "https://bridge.local".into(),
            audience: "matrix-bridge".into(),
        }
    }

    static TEST_ROUTES: &[RouteSpec] = &[
        RouteSpec {
            route: Route::GetConversation,
            method: Method::GET,
            path: "/v1/conversations/{id}",
            function: "provision",
            auth: Auth::User,
        },
        RouteSpec {
            route: Route::CreateConversation,
            method: Method::POST,
            path: "/v1/conversations",
            function: "provision",
            auth: Auth::Admin,
        },
        RouteSpec {
            route: Route::GetConversation,
            method: Method::PUT,
            path: "/_matrix/app/v1/transactions/{txn_id}",
            function: "transactions",
            auth: Auth::HsToken,
        },
    ];

    fn gateway() -> Gateway {
        Gateway {
            tokens: tokens(),
            routes: TEST_ROUTES,
            functions: HashMap::new(),
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    fn status(admission: Admission<'_>) -> StatusCode {
        match admission {
            Admission::Pass { .. } => StatusCode::OK,
            Admission::Refuse(status, _) => status,
        }
    }

    #[test]
    fn each_auth_kind_is_enforced() {
        let gateway = gateway();
        let five_minutes = time::Duration::minutes(5);
        let user = tokens().mint("alice", false, five_minutes).unwrap();
        let admin = tokens().mint("svc", true, five_minutes).unwrap();
        let get = |headers: &HeaderMap| {
            status(gateway.admit(&Method::GET, "/v1/conversations/x", headers))
        };
        assert_eq!(get(&HeaderMap::new()), StatusCode::UNAUTHORIZED);
        assert_eq!(get(&bearer("forged")), StatusCode::UNAUTHORIZED);
        assert_eq!(get(&bearer(&user)), StatusCode::OK);
        let post = |headers: &HeaderMap| {
            status(gateway.admit(&Method::POST, "/v1/conversations", headers))
        };
        assert_eq!(post(&HeaderMap::new()), StatusCode::UNAUTHORIZED);
        assert_eq!(post(&bearer(&user)), StatusCode::FORBIDDEN);
        assert_eq!(post(&bearer(&admin)), StatusCode::OK);
        let Admission::Pass { claims, params, .. } = gateway.admit(
            &Method::PUT,
            "/_matrix/app/v1/transactions/42",
            &HeaderMap::new(),
        ) else {
            panic!("appservice routes pass without a JWT");
        };
        assert_eq!(claims, None);
        assert_eq!(params["txn_id"], "42");
    }

    #[test]
    fn unknown_routes_are_refused_in_the_right_words() {
        let gateway = gateway();
        let none = HeaderMap::new();
        assert_eq!(
            status(gateway.admit(&Method::GET, "/v2/nothing", &none)),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(gateway.admit(&Method::GET, "/_matrix/app/v1/transactions/1", &none)),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(gateway.admit(&Method::GET, "/_matrix/app/v1/nothing", &none)),
            StatusCode::NOT_FOUND
        );
        let matrix = refusal(StatusCode::NOT_FOUND, "/_matrix/app/v1/nothing");
        assert_eq!(matrix.status(), StatusCode::NOT_FOUND);
        let api = refusal(StatusCode::FORBIDDEN, "/v1/conversations");
        assert_eq!(api.status(), StatusCode::FORBIDDEN);
    }
}
