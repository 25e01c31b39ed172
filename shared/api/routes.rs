//! The API's routes, the function that serves each and who may call it, as
//! in `template.yaml`.
//!
//! In AWS, API Gateway matches the route and passes its key
//! (`"POST /v1/conversations/{id}/messages"`) and path parameters; the local
//! front door matches with [`find`] to do the same.

use std::collections::HashMap;

use http::Method;

use super::caller::ADMIN_SCOPE;

/// Who may call a route, and how that is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Auth {
    /// A user's JWT, checked by API Gateway's JWT authorizer.
    User,
    /// A JWT with the `bridge.admin` scope: the authorizer checks the scope
    /// too (`AuthorizationScopes` in `template.yaml`).
    Admin,
    /// The homeserver, with the appservice `hs_token`: no JWT authorizer;
    /// the function checks the token itself, in constant time.
    HsToken,
}

impl Auth {
    /// The OAuth scopes a token needs on top of being valid, as the JWT
    /// authorizer checks them.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            Self::Admin => &[ADMIN_SCOPE],
            Self::User | Self::HsToken => &[],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    PutUser,
    CreateConversation,
    GetConversation,
    UpdateConversation,
    ArchiveConversation,
    PutMember,
    RemoveMember,
    SendMessage,
    EditMessage,
    DeleteMessage,
    ListMessages,
    GetMessage,
    UploadMedia,
    SetTyping,
    MarkRead,
    /// `PUT /_matrix/app/v1/transactions/{txnId}`: the homeserver's events.
    AppTransaction,
    /// `GET /_matrix/app/v1/users/{userId}`: does this puppet exist?
    AppUser,
    /// `GET /_matrix/app/v1/rooms/{roomAlias}`: does this alias exist?
    AppRoomAlias,
    /// `POST /_matrix/app/v1/ping`.
    AppPing,
}

/// One row of the route table.
#[derive(Debug)]
pub struct RouteSpec {
    pub route: Route,
    pub method: Method,
    /// The path template, with `{name}` for each parameter.
    pub path: &'static str,
    /// The name of the function that serves it (see `handlers::registry`).
    pub function: &'static str,
    pub auth: Auth,
}

impl RouteSpec {
    /// The API Gateway route key, e.g. `GET /v1/conversations/{id}`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path parameters, if `path` matches this route's template.
    pub fn match_path(&self, path: &str) -> Option<HashMap<String, String>> {
        let mut template = self.path.trim_matches('/').split('/');
        let mut actual = path
            .trim_end_matches('/')
            .trim_start_matches('/')
            .split('/');
        let mut params = HashMap::new();
        loop {
            match (template.next(), actual.next()) {
                (None, None) => return Some(params),
                (Some(expected), Some(segment)) => {
                    if let Some(name) = expected.strip_prefix('{').and_then(|n| n.strip_suffix('}'))
                    {
                        if segment.is_empty() {
                            return None;
                        }
                        params.insert(name.to_owned(), percent_decode(segment)?);
                    } else if expected != segment {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }
}

fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        route: Route::PutUser,
        method: Method::PUT,
        path: "/v1/users/{user_id}",
        function: "provision",
        auth: Auth::Admin,
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
        method: Method::GET,
        path: "/v1/conversations/{id}",
        function: "provision",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::UpdateConversation,
        method: Method::PATCH,
        path: "/v1/conversations/{id}",
        function: "provision",
        auth: Auth::Admin,
    },
    RouteSpec {
        route: Route::ArchiveConversation,
        method: Method::DELETE,
        path: "/v1/conversations/{id}",
        function: "provision",
        auth: Auth::Admin,
    },
    RouteSpec {
        route: Route::PutMember,
        method: Method::PUT,
        path: "/v1/conversations/{id}/members/{user_id}",
        function: "provision",
        auth: Auth::Admin,
    },
    RouteSpec {
        route: Route::RemoveMember,
        method: Method::DELETE,
        path: "/v1/conversations/{id}/members/{user_id}",
        function: "provision",
        auth: Auth::Admin,
    },
    RouteSpec {
        route: Route::SendMessage,
        method: Method::POST,
        path: "/v1/conversations/{id}/messages",
        function: "send",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::EditMessage,
        method: Method::PUT,
        path: "/v1/conversations/{id}/messages/{message_id}",
        function: "edit",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::DeleteMessage,
        method: Method::DELETE,
        path: "/v1/conversations/{id}/messages/{message_id}",
        function: "delete",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::ListMessages,
        method: Method::GET,
        path: "/v1/conversations/{id}/messages",
        function: "history",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::GetMessage,
        method: Method::GET,
        path: "/v1/conversations/{id}/messages/{message_id}",
        function: "history",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::UploadMedia,
        method: Method::POST,
        path: "/v1/conversations/{id}/media",
        function: "media",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::SetTyping,
        method: Method::POST,
        path: "/v1/conversations/{id}/typing",
        function: "activity",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::MarkRead,
        method: Method::POST,
        path: "/v1/conversations/{id}/read",
        function: "activity",
        auth: Auth::User,
    },
    RouteSpec {
        route: Route::AppTransaction,
        method: Method::PUT,
        path: "/_matrix/app/v1/transactions/{txnId}",
        function: "transactions",
        auth: Auth::HsToken,
    },
    RouteSpec {
        route: Route::AppUser,
        method: Method::GET,
        path: "/_matrix/app/v1/users/{userId}",
        function: "transactions",
        auth: Auth::HsToken,
    },
    RouteSpec {
        route: Route::AppRoomAlias,
        method: Method::GET,
        path: "/_matrix/app/v1/rooms/{roomAlias}",
        function: "transactions",
        auth: Auth::HsToken,
    },
    RouteSpec {
        route: Route::AppPing,
        method: Method::POST,
        path: "/_matrix/app/v1/ping",
        function: "transactions",
        auth: Auth::HsToken,
    },
];

/// Everything under a prefix that no route above matches, any method: API
/// Gateway's `ANY /prefix/{proxy+}`. Its function answers it as unknown
/// (for `/_matrix/`, `404 M_UNRECOGNIZED`, or `405` for a known path with
/// another method), so AWS answers as the Matrix spec asks and not with
/// API Gateway's own `404`. Locally the front door answers these itself,
/// in the same words.
#[derive(Debug)]
pub struct CatchAll {
    /// The prefix, with its trailing `/`.
    pub prefix: &'static str,
    pub function: &'static str,
    pub auth: Auth,
}

impl CatchAll {
    pub const METHOD: &'static str = "ANY";

    /// Its path as API Gateway writes it: `/_matrix/{proxy+}`.
    pub fn path(&self) -> String {
        format!("{}{{proxy+}}", self.prefix)
    }

    /// Its API Gateway route key: `ANY /_matrix/{proxy+}`.
    pub fn key(&self) -> String {
        format!("{} {}", Self::METHOD, self.path())
    }
}

pub const CATCH_ALL: &[CatchAll] = &[CatchAll {
    prefix: "/_matrix/",
    function: "transactions",
    auth: Auth::HsToken,
}];

/// The route with this API Gateway route key.
pub fn by_key(key: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|spec| spec.key() == key)
}

/// The route a method and path go to, with its path parameters.
pub fn find(method: &Method, path: &str) -> Option<(&'static RouteSpec, HashMap<String, String>)> {
    ROUTES
        .iter()
        .filter(|spec| spec.method == method)
        .find_map(|spec| spec.match_path(path).map(|params| (spec, params)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_routes_and_parameters() {
        let (spec, params) = find(&Method::GET, "/v1/conversations/grp-42/messages/abc").unwrap();
        assert_eq!(spec.route, Route::GetMessage);
        assert_eq!(params["id"], "grp-42");
        assert_eq!(params["message_id"], "abc");
        let (spec, params) = find(&Method::POST, "/v1/conversations/event%3A7/messages").unwrap();
        assert_eq!(spec.route, Route::SendMessage);
        assert_eq!(params["id"], "event:7");
        assert_eq!(
            find(&Method::POST, "/v1/conversations").unwrap().0.route,
            Route::CreateConversation
        );
        let (spec, params) = find(
            &Method::PUT,
            "/v1/conversations/grp-42/members/%40carol%3Aexample.org",
        )
        .unwrap();
        assert_eq!(spec.route, Route::PutMember);
        assert_eq!(params["user_id"], "@carol:example.org");
        assert_eq!(
            find(&Method::DELETE, "/v1/conversations/grp-42")
                .unwrap()
                .0
                .route,
            Route::ArchiveConversation
        );
    }

    #[test]
    fn unknown_paths_and_methods_do_not_match() {
        assert!(find(&Method::DELETE, "/v1/users/alice").is_none());
        assert!(find(&Method::GET, "/v1/conversations//messages").is_none());
        assert!(find(&Method::GET, "/v2/conversations/x").is_none());
        assert!(find(&Method::GET, "/v1/conversations/x/messages/y/z").is_none());
    }

    #[test]
    fn appservice_routes_take_their_parameters() {
        let (spec, params) = find(
            &Method::GET,
            "/_matrix/app/v1/users/%40app_alice%3Alocalhost",
        )
        .unwrap();
        assert_eq!(spec.route, Route::AppUser);
        assert_eq!(params["userId"], "@app_alice:localhost");
        assert_eq!(spec.auth, Auth::HsToken);
        assert!(find(&Method::GET, "/_matrix/app/v1/transactions/1").is_none());
        assert_eq!(CATCH_ALL[0].key(), "ANY /_matrix/{proxy+}");
        assert!(by_key(&CATCH_ALL[0].key()).is_none());
    }

    #[test]
    fn route_keys_are_unique_and_resolvable() {
        for spec in ROUTES {
            assert_eq!(by_key(&spec.key()).map(|s| s.route), Some(spec.route));
        }
    }
}
