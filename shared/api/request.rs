//! A parsed API request: its route, caller, parameters and body.

use std::collections::HashMap;
use std::str::FromStr;

use bytes::Bytes;
use http::HeaderMap;
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use lambda_http::aws_lambda_events::query_map::QueryMap;

use super::ApiError;
use super::caller::Caller;
use super::routes::{self, Auth, Route, RouteSpec};
use crate::ids::ConversationId;

/// The largest JSON body any route accepts (a message body is at most 32 KiB).
pub const MAX_JSON_BODY: usize = 64 * 1024;
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// An API request, parsed from an API Gateway HTTP API event. Its `Debug`
/// names the headers without their values: a bearer token must never reach
/// a log.
pub struct ApiRequest {
    pub route: Route,
    pub request_id: String,
    pub caller: Caller,
    path: HashMap<String, String>,
    query: QueryMap,
    headers: HeaderMap,
    body: Bytes,
}

/// What every route's request has, before its caller is known (no `Debug`:
/// it holds the headers and the claims).
pub(super) struct Parsed {
    pub route: &'static RouteSpec,
    pub request_id: String,
    pub path: HashMap<String, String>,
    pub query: QueryMap,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The JWT claims API Gateway's authorizer passed on, if any.
    pub claims: Option<HashMap<String, String>>,
}

/// Why a request could not be parsed: its request id (so even a refused
/// request can be traced), and a route error.
pub(super) struct Unrouted {
    pub request_id: String,
}

impl Parsed {
    /// Parses `request` for `function`: its route must be one of `function`'s.
    pub fn from_lambda(function: &str, request: lambda_http::Request) -> Result<Self, Unrouted> {
        let context = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => Some(context.clone()),
            _ => None,
        };
        let request_id = context
            .as_ref()
            .and_then(|c| c.request_id.clone())
            .or_else(|| request.lambda_context_ref().map(|c| c.request_id.clone()))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

        let route_key = context.as_ref().and_then(|c| c.route_key.as_deref());
        let found = match route_key.and_then(routes::by_key) {
            Some(spec) => Some((spec, None)),
            None => routes::find(request.method(), request.raw_http_path())
                .map(|(spec, params)| (spec, Some(params))),
        };
        let Some((spec, matched)) = found.filter(|(spec, _)| spec.function == function) else {
            return Err(Unrouted { request_id });
        };
        let path = match matched {
            Some(params) => params,
            None => request
                .path_parameters_ref()
                .map(|params| {
                    params
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let claims = context
            .as_ref()
            .and_then(|c| c.authorizer.as_ref())
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| jwt.claims.clone());
        let query = request.query_string_parameters();
        let (parts, body) = request.into_parts();
        let body = match body {
            Body::Empty => Bytes::new(),
            Body::Text(text) => Bytes::from(text),
            Body::Binary(bytes) => Bytes::from(bytes),
            _ => Bytes::new(),
        };
        Ok(Self {
            route: spec,
            request_id,
            path,
            query,
            headers: parts.headers,
            body,
            claims,
        })
    }
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(|name| name.as_str()).collect();
        f.debug_struct("ApiRequest")
            .field("route", &self.route)
            .field("request_id", &self.request_id)
            .field("caller", &self.caller)
            .field("path", &self.path)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl ApiRequest {
    /// Parses `request` for `function` and reads its caller as the route's
    /// auth kind says. On failure, returns the request id with the error.
    pub fn from_lambda(
        function: &str,
        request: lambda_http::Request,
    ) -> Result<Self, (String, ApiError)> {
        let parsed = Parsed::from_lambda(function, request).map_err(|unrouted| {
            (
                unrouted.request_id,
                ApiError::NotFound("no such route".into()),
            )
        })?;
        let fail = |err| (parsed.request_id.clone(), err);
        let caller = match parsed.route.auth {
            Auth::User | Auth::Admin => {
                let claims = parsed.claims.as_ref().ok_or_else(|| {
                    fail(ApiError::Unauthorized(
                        "a valid bearer token is required".into(),
                    ))
                })?;
                Caller::from_claims(claims).map_err(fail)?
            }
            // Served with Matrix's errors, by `AppserviceRequest`.
            Auth::HsToken => return Err(fail(ApiError::NotFound("no such route".into()))),
        };
        if parsed.route.auth == Auth::Admin {
            caller.require_admin().map_err(fail)?;
        }
        Ok(Self {
            route: parsed.route.route,
            request_id: parsed.request_id,
            caller,
            path: parsed.path,
            query: parsed.query,
            headers: parsed.headers,
            body: parsed.body,
        })
    }

    /// A path parameter, parsed; a malformed one is a `400` naming it.
    pub fn path_param<T>(&self, name: &str) -> Result<T, ApiError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self.path.get(name).ok_or_else(|| {
            ApiError::InvalidRequest(format!("path parameter '{name}' is missing"))
        })?;
        raw.parse()
            .map_err(|err| ApiError::InvalidRequest(format!("path parameter '{name}': {err}")))
    }

    pub fn conversation_id(&self) -> Result<ConversationId, ApiError> {
        let raw = self.path.get("id").cloned().unwrap_or_default();
        ConversationId::parse(raw)
            .map_err(|err| ApiError::InvalidRequest(format!("path parameter 'id': {err}")))
    }

    /// A query parameter, parsed if present.
    pub fn query<T>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.query
            .first(name)
            .map(|raw| {
                raw.parse().map_err(|err| {
                    ApiError::InvalidRequest(format!("query parameter '{name}': {err}"))
                })
            })
            .transpose()
    }

    /// The `Idempotency-Key` header, if any: 1 to 128 visible ASCII characters.
    pub fn idempotency_key(&self) -> Result<Option<String>, ApiError> {
        let Some(key) = self.header("idempotency-key") else {
            return Ok(None);
        };
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ApiError::InvalidRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            )));
        }
        Ok(Some(key.to_owned()))
    }

    /// The SHA-256 of the raw body, in hex: what "the same request" means
    /// for an `Idempotency-Key`.
    pub fn body_hash(&self) -> String {
        Sha256::digest(&self.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as JSON of type `T`: `415` for another content type, `413`
    /// over [`MAX_JSON_BODY`], `400` with serde's explanation otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if let Some(content_type) = self.header("content-type") {
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected 'application/json', got '{essence}'"
                )));
            }
        }
        if self.body.len() > MAX_JSON_BODY {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body is {} bytes; at most {MAX_JSON_BODY} are accepted",
                self.body.len()
            )));
        }
        if self.body.is_empty() {
            return Err(ApiError::InvalidRequest("a JSON body is required".into()));
        }
        serde_json::from_slice(&self.body)
            .map_err(|err| ApiError::InvalidRequest(format!("invalid JSON body: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        route_key: &str,
        path: &str,
        claims: &str,
        content_type: &str,
        body: &str,
    ) -> lambda_http::Request {
        let json = serde_json::json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": "limit=5",
            "queryStringParameters": {"limit": "5"},
            "headers": {"content-type": content_type},
            "pathParameters": {"id": "grp-1"},
            "requestContext": {
                "accountId": "1", "apiId": "api", "domainName": "x", "domainPrefix": "x",
                "http": {"method": route_key.split(' ').next().unwrap_or("GET"), "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
                "requestId": "req-9", "routeKey": route_key, "stage": "$default", "time": "", "timeEpoch": 0,
                "authorizer": serde_json::from_str::<serde_json::Value>(claims).unwrap(),
            },
            "body": body,
            "isBase64Encoded": false,
        });
        lambda_http::request::from_str(&json.to_string()).unwrap()
    }

    const ALICE: &str = r#"{"jwt": {"claims": {"sub": "alice"}, "scopes": null}}"#;
    const SERVICE: &str =
        r#"{"jwt": {"claims": {"sub": "svc", "scope": "bridge.admin"}, "scopes": null}}"#;

    #[test]
    fn parses_route_caller_params_and_query() {
        let request = event(
            "GET /v1/conversations/{id}/messages",
            "/v1/conversations/grp-1/messages",
            ALICE,
            "application/json",
            "",
        );
        let request = ApiRequest::from_lambda("history", request).unwrap();
        assert_eq!(request.route, Route::ListMessages);
        assert_eq!(request.request_id, "req-9");
        assert_eq!(request.caller.user_id.as_str(), "alice");
        assert_eq!(request.conversation_id().unwrap().as_str(), "grp-1");
        assert_eq!(request.query::<u32>("limit").unwrap(), Some(5));
        assert!(request.query::<u32>("before").unwrap().is_none());
    }

    #[test]
    fn a_route_of_another_function_is_not_found() {
        let request = event(
            "GET /v1/conversations/{id}/messages",
            "/v1/conversations/grp-1/messages",
            ALICE,
            "application/json",
            "",
        );
        let (request_id, err) = ApiRequest::from_lambda("send", request).unwrap_err();
        assert_eq!(request_id, "req-9");
        assert!(matches!(err, ApiError::NotFound(_)));
    }

    #[test]
    fn no_claims_is_unauthorized() {
        let request = event(
            "POST /v1/conversations",
            "/v1/conversations",
            "{}",
            "application/json",
            "{}",
        );
        let (_, err) = ApiRequest::from_lambda("provision", request).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)));
    }

    #[test]
    fn service_routes_need_the_admin_scope() {
        let request = event(
            "PUT /v1/users/{user_id}",
            "/v1/users/bob",
            ALICE,
            "application/json",
            "{}",
        );
        let (_, err) = ApiRequest::from_lambda("provision", request).unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err}");
        let request = event(
            "PUT /v1/users/{user_id}",
            "/v1/users/bob",
            SERVICE,
            "application/json",
            "{}",
        );
        assert!(ApiRequest::from_lambda("provision", request).is_ok());
    }

    #[test]
    fn debug_output_names_headers_without_their_values() {
        let mut request = event(
            "GET /v1/conversations/{id}/messages",
            "/v1/conversations/grp-1/messages",
            ALICE,
            "application/json",
            "",
        );
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            "Bearer eyJ.secret.token".parse().unwrap(),
        );
        let request = ApiRequest::from_lambda("history", request).unwrap();
        let debug = format!("{request:?}");
        assert!(debug.contains("authorization"), "{debug}");
        assert!(!debug.contains("eyJ.secret.token"), "{debug}");
    }

    #[test]
    fn bodies_are_checked() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            name: String,
        }
        let parse = |content_type: &str, body: &str| {
            let request = event(
                "POST /v1/conversations",
                "/v1/conversations",
                SERVICE,
                content_type,
                body,
            );
            ApiRequest::from_lambda("provision", request)
                .unwrap()
                .json::<Body>()
        };
        assert!(parse("application/json; charset=utf-8", r#"{"name": "x"}"#).is_ok());
        assert!(matches!(
            parse("text/plain", r#"{"name": "x"}"#),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse("application/json", ""),
            Err(ApiError::InvalidRequest(_))
        ));
        let err = parse("application/json", r#"{"nam": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");
        let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(MAX_JSON_BODY));
        assert!(matches!(
            parse("application/json", &big),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }
}
