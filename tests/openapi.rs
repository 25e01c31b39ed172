//! `docs/openapi.yaml` against the code, no network: every route of the
//! route table (`shared/api/routes.rs`) documented with its method, path
//! parameters, function and auth kind, and nothing else; each route's error
//! answers in its edge's shape; every `$ref` resolving and every schema
//! compiling; the sample requests of `events/` valid against their request
//! schemas. The answers of the running stack are checked against the same
//! file by `tests/stack/openapi.rs`. Also what the project's documents say
//! of themselves and of the code: links only inside the repository, and the
//! README's configuration table equal to what `shared/config.rs` reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/openapi.rs"]
mod openapi;

use std::collections::BTreeSet;

use bridge::api::ApiError;
use bridge::api::appservice::MatrixApiError;
use bridge::api::routes::{Auth, CATCH_ALL, ROUTES, RouteSpec};
use openapi::{FILE, Spec};
use serde_json::{Value, json};

/// The `security` an operation of this auth kind must declare.
fn security_for(auth: Auth) -> Value {
    match auth {
        Auth::User | Auth::Admin => json!([{ "bearerJwt": auth.scopes() }]),
        Auth::HsToken => json!([{ "hsTokenBearer": [] }, { "hsTokenQuery": [] }]),
    }
}

/// How to document `spec`, for the failure messages: whoever adds a route
/// (or merges a branch that did) reads exactly what is missing.
fn how_to_document(spec: &RouteSpec) -> String {
    format!(
        "add to {FILE}:\n  paths:\n    {path}:\n      {method}:\n        operationId: {route:?}\n        \
         x-function: {function}\n        security: {security}\n        (its path parameters, request \
         body and responses: see the neighbouring routes)",
        path = spec.path,
        method = spec.method.as_str().to_ascii_lowercase(),
        route = spec.route,
        function = spec.function,
        security = security_for(spec.auth),
    )
}

/// The `{name}`s of a path template.
fn template_parameters(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_route_of_the_route_table_is_documented_with_its_auth() {
    let spec = Spec::load();
    let mut problems = Vec::new();
    for route in ROUTES {
        let key = route.key();
        let Some(operation) = spec.operation(route.method.as_str(), route.path) else {
            problems.push(format!(
                "route `{key}` (Route::{:?}, function `{}`, auth {:?}) is missing from {FILE}; {}",
                route.route,
                route.function,
                route.auth,
                how_to_document(route)
            ));
            continue;
        };
        let expected_id = format!("{:?}", route.route);
        if operation["operationId"].as_str() != Some(expected_id.as_str()) {
            problems.push(format!(
                "`{key}`: operationId is {}, the route is Route::{expected_id}",
                operation["operationId"]
            ));
        }
        if operation["x-function"].as_str() != Some(route.function) {
            problems.push(format!(
                "`{key}`: x-function is {}, the route table says `{}`",
                operation["x-function"], route.function
            ));
        }
        let security = security_for(route.auth);
        if operation["security"] != security {
            problems.push(format!(
                "`{key}`: security is {}, but its auth kind {:?} needs {security}",
                operation["security"], route.auth
            ));
        }
        // Path parameters: exactly the template's, each required.
        let documented: BTreeSet<String> = spec
            .parameters(route.path, operation)
            .into_iter()
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| {
                if parameter["required"] != true {
                    problems.push(format!(
                        "`{key}`: path parameter {} must be `required: true`",
                        parameter["name"]
                    ));
                }
                parameter["name"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        let wanted = template_parameters(route.path);
        if documented != wanted {
            problems.push(format!(
                "`{key}`: path parameters documented {documented:?}, the path has {wanted:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{FILE} disagrees with shared/api/routes.rs:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn the_file_documents_no_route_the_route_table_lacks() {
    let spec = Spec::load();
    let ours: BTreeSet<String> = ROUTES.iter().map(RouteSpec::key).collect();
    let stale: Vec<String> = spec
        .operations()
        .into_iter()
        .map(|(method, path)| format!("{method} {path}"))
        .filter(|key| !ours.contains(key))
        .collect();
    assert!(
        stale.is_empty(),
        "{FILE} documents routes that shared/api/routes.rs does not have (remove them, or add \
         the routes): {stale:?}"
    );
}

#[test]
fn the_catch_all_routes_are_described() {
    let spec = Spec::load();
    let documented: Vec<(String, String)> = spec.doc["x-catch-all"]
        .as_array()
        .expect("x-catch-all lists the catch-all routes")
        .iter()
        .map(|entry| {
            (
                entry["route"].as_str().unwrap_or_default().to_owned(),
                entry["function"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let ours: Vec<(String, String)> = CATCH_ALL
        .iter()
        .map(|catch_all| (catch_all.key(), catch_all.function.to_owned()))
        .collect();
    assert_eq!(documented, ours, "{FILE}: x-catch-all against CATCH_ALL");
}

#[test]
fn each_edge_answers_its_errors_in_its_own_shape() {
    let spec = Spec::load();
    let mut problems = Vec::new();
    for route in ROUTES {
        let key = route.key();
        let Some(operation) = spec.operation(route.method.as_str(), route.path) else {
            continue; // reported by the test above
        };
        let (shape, other, needed): (&str, &str, &[&str]) = match route.auth {
            Auth::User => ("Error", "MatrixError", &["400", "401", "500", "503"]),
            Auth::Admin => ("Error", "MatrixError", &["400", "401", "403", "500", "503"]),
            Auth::HsToken => (
                "MatrixError",
                "\"#/components/schemas/Error\"",
                &["401", "403"],
            ),
        };
        let responses = operation["responses"].as_object().expect("responses");
        for status in needed {
            if !responses.contains_key(*status) {
                problems.push(format!("`{key}` does not document its {status}"));
            }
        }
        if !responses.keys().any(|status| status.starts_with('2')) {
            // Only the alias query has no success: it always says no.
            if route.path != "/_matrix/app/v1/rooms/{roomAlias}" {
                problems.push(format!("`{key}` documents no success"));
            }
        }
        for (status, response) in responses {
            let response = spec.resolve(response);
            let schema = response["content"]["application/json"]["schema"].to_string();
            if status.starts_with('2') {
                if status != "204" && schema == "null" {
                    problems.push(format!("`{key}` {status}: no JSON schema"));
                }
                continue;
            }
            if !schema.contains(&format!("#/components/schemas/{shape}")) || schema.contains(other)
            {
                problems.push(format!(
                    "`{key}` {status}: an error here is a {shape}, the file says {schema}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{FILE}:\n- {}", problems.join("\n- "));
}

#[test]
fn the_error_codes_are_the_functions_codes() {
    let spec = Spec::load();
    let cause = || std::io::Error::other("x");
    let errors = [
        ApiError::InvalidRequest("x".into()),
        ApiError::Unauthorized("x".into()),
        ApiError::Forbidden("x".into()),
        ApiError::NotFound("x".into()),
        ApiError::Conflict("x".into()),
        ApiError::PayloadTooLarge("x".into()),
        ApiError::UnsupportedMediaType("x".into()),
        ApiError::RateLimited { retry_after: None },
        ApiError::unavailable(cause()),
        ApiError::internal(cause()),
    ];
    let codes: BTreeSet<&str> = errors.iter().map(ApiError::code).collect();
    let documented: BTreeSet<&str> = spec.doc["components"]["schemas"]["Error"]["properties"]
        ["error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        documented, codes,
        "{FILE}: Error.code against ApiError::code"
    );

    // Each status's response pins the code the function answers it with: a
    // real error body of each kind passes its status's schema on a route
    // that documents it, and fails another status's.
    let (method, path) = ("POST", "/v1/conversations/{id}/messages");
    for error in errors {
        let status = error.status();
        let body = json!({"error": {"code": error.code(), "message": "x"}, "request_id": "r"});
        let schema = spec
            .response_schema(method, path, status)
            .unwrap()
            .expect("a JSON error");
        spec.check(schema, &body)
            .unwrap_or_else(|why| panic!("{status} {}: {why}", error.code()));
        let wrong = json!({"error": {"code": "conflict", "message": "x"}, "request_id": "r"});
        if status != 409 {
            assert!(
                spec.check(schema, &wrong).is_err(),
                "{status} takes any code"
            );
        }
    }

    // The appservice edge's errcodes.
    let matrix = [
        MatrixApiError::MissingToken,
        MatrixApiError::Forbidden,
        MatrixApiError::NotFound("x".into()),
        MatrixApiError::BadJson {
            errcode: "M_NOT_JSON",
            message: "x".into(),
        },
        MatrixApiError::Unavailable(cause().into()),
        MatrixApiError::internal(cause()),
    ];
    let (method, path) = ("GET", "/_matrix/app/v1/users/{userId}");
    for error in matrix {
        let status = error.status();
        let schema = spec
            .response_schema(method, path, status)
            .unwrap()
            .expect("a JSON error");
        let body = json!({"errcode": error.errcode(), "error": error.to_string()});
        spec.check(schema, &body)
            .unwrap_or_else(|why| panic!("{status} {}: {why}", error.errcode()));
    }
}

#[test]
fn every_reference_resolves_and_every_schema_compiles() {
    let spec = Spec::load();
    let mut references = Vec::new();
    openapi::references(&spec.doc, "#", &mut references);
    let broken: Vec<String> = references
        .iter()
        .filter(|(_, reference)| spec.pointer(reference).is_none())
        .map(|(at, reference)| format!("{at}: {reference}"))
        .collect();
    assert!(broken.is_empty(), "{FILE}: unresolved $refs: {broken:?}");
    assert!(references.len() > 50, "the file uses its components");

    for (name, schema) in spec.doc["components"]["schemas"].as_object().unwrap() {
        spec.validator(schema).unwrap();
        for example in schema["examples"].as_array().into_iter().flatten() {
            spec.check(schema, example)
                .unwrap_or_else(|why| panic!("{FILE}: an example of {name}: {why}"));
        }
    }
}

/// The sample API Gateway events of `events/` carry real request bodies:
/// each is valid against its route's request schema.
#[test]
fn the_sample_requests_match_their_request_schemas() {
    let spec = Spec::load();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let event: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let Some((method, route)) = event["routeKey"].as_str().and_then(|k| k.split_once(' '))
        else {
            continue;
        };
        let Some(schema) = spec.request_schema(method, route) else {
            continue;
        };
        let Some(body) = event["body"]
            .as_str()
            .filter(|_| event["isBase64Encoded"] != true)
        else {
            continue;
        };
        let body: Value = serde_json::from_str(body).unwrap();
        spec.check(schema, &body)
            .unwrap_or_else(|why| panic!("{}: {why}", path.display()));
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} sample requests were checked");
}

/// The request schemas refuse what the functions refuse (unknown fields:
/// `deny_unknown_fields`), so a documented request is one the API takes.
#[test]
fn request_schemas_are_closed_as_the_functions_are() {
    let spec = Spec::load();
    for route in ROUTES.iter().filter(|route| route.auth != Auth::HsToken) {
        let Some(schema) = spec.request_schema(route.method.as_str(), route.path) else {
            continue;
        };
        assert_eq!(
            spec.resolve(schema)["additionalProperties"],
            json!(false),
            "{FILE}: `{}` takes unknown fields, the function refuses them",
            route.key()
        );
    }
}

/// The documentation's links stay inside the repository and resolve: a
/// clone of the project has everything its documents point at.
#[test]
fn the_documents_link_only_to_files_of_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let documents = [
        "README.md",
        "CONTRIBUTING.md",
        "docs/API.md",
        "docs/DESIGN.md",
        "bench/RESULTS.md",
    ];
    let mut broken = Vec::new();
    for document in documents {
        let text = std::fs::read_to_string(root.join(document)).unwrap();
        let dir = root.join(document).parent().unwrap().to_owned();
        // Markdown links: `](target)`.
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let file = target.split('#').next().unwrap_or_default();
            if file.is_empty() {
                continue;
            }
            let path = dir.join(file);
            let inside = path
                .canonicalize()
                .map(|path| path.starts_with(root.canonicalize().unwrap()))
                .unwrap_or(false);
            if !inside {
                broken.push(format!("{document}: {target}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing in the repository: {broken:?}"
    );
}

/// The variables `shared/config.rs` reads, each with its default: `None`
/// when it is required (or one of two, as a token and its secret's ARN).
fn config_variables() -> std::collections::BTreeMap<String, Option<String>> {
    let source = include_str!("../shared/config.rs");
    // Only the code, not its tests.
    let code = source.split("#[cfg(test)]").next().unwrap();
    let mut variables = std::collections::BTreeMap::new();
    // `optional(env, "NAME", "default")` and `seconds("NAME", "default")`.
    for call in ["optional(env, ", "seconds("] {
        for rest in code.split(call).skip(1) {
            let args: Vec<&str> = rest.splitn(5, '"').collect();
            if args.len() == 5 && args[2].trim() == "," {
                variables.insert(args[1].to_owned(), Some(args[3].to_owned()));
            }
        }
    }
    // Any other name in quotes is read without a default.
    for (index, piece) in code.split('"').enumerate() {
        let name = index % 2 == 1
            && piece.len() > 3
            && piece
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && (piece.starts_with("MATRIX_") || piece.starts_with("BRIDGE_"));
        if name {
            variables.entry(piece.to_owned()).or_insert(None);
        }
    }
    variables
}

/// The README's configuration tables: variable -> its default column.
fn readme_variables() -> std::collections::BTreeMap<String, String> {
    let readme = include_str!("../README.md");
    let configuration = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("the README has a Configuration section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut variables = std::collections::BTreeMap::new();
    for row in configuration.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        for name in cells[0].trim_start_matches("| ").split(", ") {
            let name = name.trim_matches('`');
            variables.insert(name.to_owned(), cells[1].trim().to_owned());
        }
    }
    variables
}

/// The README's configuration table names exactly what the code reads, with
/// the code's defaults: a variable added, renamed or given another default
/// in `shared/config.rs` fails here until the README says so.
#[test]
fn the_readme_configuration_table_is_what_the_code_reads() {
    let code = config_variables();
    let readme = readme_variables();
    assert!(code.len() >= 15, "config.rs read as {code:?}");
    let mut problems = Vec::new();
    for (name, default) in &code {
        match readme.get(name) {
            None => problems.push(format!(
                "{name} is read by shared/config.rs but not in the README"
            )),
            Some(documented) => match default {
                Some(default) if documented != &format!("`{default}`") => problems.push(format!(
                    "{name}: the README's default is {documented}, the code's `{default}`"
                )),
                None if !["required", "one of the two"].contains(&documented.as_str()) => {
                    problems.push(format!(
                        "{name}: the README's default is {documented}, the code requires it"
                    ));
                }
                _ => {}
            },
        }
    }
    // What the README lists of the bridge's own (not the SDK's, Lambda's
    // or the local tools') must be read by the code.
    let tools_only = [
        "BRIDGE_RETRY_DLQ_URL",
        "BRIDGE_API_URL",
        "BRIDGE_GATEWAY_LISTEN",
        "BRIDGE_DEV_JWT_SECRET",
        "BRIDGE_JWT_ISSUER",
        "BRIDGE_JWT_AUDIENCE",
        "MATRIX_REGISTRATION_SHARED_SECRET",
        "BRIDGE_APPSERVICE_REGISTRATION",
        "BRIDGE_ROOT",
        "BRIDGE_SKIP_RETRY_POLLER",
        "BRIDGE_RETRY_WORKERS",
        "BRIDGE_SKIP_BUILD",
        "BRIDGE_DEV_BIN",
        "BRIDGE_DEV_ROOT",
    ];
    for name in readme.keys() {
        let ours = name.starts_with("MATRIX_") || name.starts_with("BRIDGE_");
        if ours && !code.contains_key(name) && !tools_only.contains(&name.as_str()) {
            problems.push(format!(
                "{name} is in the README's configuration but shared/config.rs never reads it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md, Configuration: {problems:#?}"
    );
}
