//! `template.yaml` against the code: the functions of the registry, their
//! binaries, the route table with each route's auth kind. No network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use bridge::api::routes::{Auth, CATCH_ALL, CatchAll, ROUTES};
use bridge::fakes::Fakes;
use bridge::function::Trigger;
use bridge::handlers::registry;
use serde_norway::Value;

fn template() -> Value {
    // CloudFormation's short tags (!Ref, !GetAtt, !Sub) parse as tagged values.
    serde_norway::from_str(include_str!("../template.yaml")).unwrap()
}

/// The template's functions: (binary, its resource).
fn functions(template: &Value) -> Vec<(String, Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|resource| resource["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|resource| {
            let binary = resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .expect("every function names its binary")
                .to_owned();
            (binary, resource.clone())
        })
        .collect()
}

/// The events of a function of one type.
fn events<'a>(function: &'a Value, kind: &str) -> Vec<&'a Value> {
    function["Properties"]["Events"]
        .as_mapping()
        .map(|events| {
            events
                .values()
                .filter(|event| event["Type"].as_str() == Some(kind))
                .map(|event| &event["Properties"])
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_template_deploys_exactly_the_registered_functions() {
    let ours: BTreeSet<&str> = registry::<Fakes>().iter().map(|f| f.name).collect();
    let template = template();
    let theirs: BTreeSet<String> = functions(&template).into_iter().map(|(b, _)| b).collect();
    assert_eq!(
        theirs,
        ours.iter().map(|name| (*name).to_owned()).collect(),
        "template.yaml's functions"
    );
    // Each has its binary: a main in functions/ and a [[bin]] for it.
    let cargo: toml::Table = include_str!("../Cargo.toml").parse().unwrap();
    let bins = cargo["bin"].as_array().unwrap();
    for name in &ours {
        let main = format!("functions/{name}.rs");
        let bin = bins
            .iter()
            .find(|bin| bin["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("Cargo.toml has no [[bin]] {name}"));
        assert_eq!(bin["path"].as_str(), Some(main.as_str()));
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(&main)
                .exists(),
            "{main} is missing"
        );
    }
}

#[test]
fn each_function_is_triggered_as_registered() {
    let template = template();
    let functions = functions(&template);
    for function in registry::<Fakes>() {
        let (_, resource) = functions
            .iter()
            .find(|(binary, _)| binary == function.name)
            .unwrap();
        let counts = (
            events(resource, "HttpApi").len(),
            events(resource, "SQS").len(),
            events(resource, "Schedule").len(),
        );
        let name = function.name;
        match function.trigger {
            Trigger::Http => assert!(counts.0 > 0 && counts.1 + counts.2 == 0, "{name}: routes"),
            Trigger::Queue => assert_eq!(counts, (0, 1, 0), "{name}: one queue"),
            Trigger::Schedule => assert_eq!(counts, (0, 0, 1), "{name}: one schedule"),
        }
    }
}

#[test]
fn the_template_declares_exactly_these_routes_with_their_auth() {
    let template = template();
    let mut theirs = Vec::new();
    for (binary, resource) in functions(&template) {
        for event in events(&resource, "HttpApi") {
            let auth = &event["Auth"];
            let kind = match (
                auth["Authorizer"].as_str(),
                auth["AuthorizationScopes"].as_sequence(),
            ) {
                (Some("NONE"), None) => "hs_token".to_owned(),
                (None | Some("BridgeJwt"), None) => "user".to_owned(),
                (Some("BridgeJwt"), Some(scopes)) => {
                    let scopes: Vec<&str> = scopes.iter().filter_map(Value::as_str).collect();
                    format!("scopes {}", scopes.join(" "))
                }
                other => panic!("{binary}: unexpected route auth {other:?}"),
            };
            theirs.push((
                binary.clone(),
                event["Method"].as_str().unwrap().to_owned(),
                event["Path"].as_str().unwrap().to_owned(),
                kind,
            ));
        }
    }
    theirs.sort();
    let kind = |auth: Auth| match auth {
        Auth::User => "user".to_owned(),
        Auth::Admin => format!("scopes {}", auth.scopes().join(" ")),
        Auth::HsToken => "hs_token".to_owned(),
    };
    let mut ours: Vec<_> = ROUTES
        .iter()
        .map(|spec| {
            (
                spec.function.to_owned(),
                spec.method.to_string(),
                spec.path.to_owned(),
                kind(spec.auth),
            )
        })
        .chain(CATCH_ALL.iter().map(|catch_all| {
            (
                catch_all.function.to_owned(),
                CatchAll::METHOD.to_owned(),
                catch_all.path(),
                kind(catch_all.auth),
            )
        }))
        .collect();
    ours.sort();
    assert_eq!(theirs, ours);
}

#[test]
fn secrets_are_no_echo_parameters_and_reach_only_who_needs_them() {
    let template = template();
    for parameter in ["MatrixAsToken", "MatrixHsToken"] {
        assert_eq!(
            template["Parameters"][parameter]["NoEcho"].as_bool(),
            Some(true),
            "{parameter}"
        );
    }
    for (binary, resource) in functions(&template) {
        let hs_token = &resource["Properties"]["Environment"]["Variables"]["MATRIX_HS_TOKEN"];
        assert_eq!(
            !hs_token.is_null(),
            binary == "transactions",
            "{binary}: only the webhook checks the hs_token"
        );
    }
    assert!(
        template["Globals"]["Function"]["Environment"]["Variables"]["MATRIX_HS_TOKEN"].is_null()
    );
}

#[test]
fn every_route_goes_to_a_registered_http_function() {
    let registry = registry::<Fakes>();
    for spec in ROUTES {
        let function = registry
            .iter()
            .find(|f| f.name == spec.function)
            .unwrap_or_else(|| panic!("{} goes to unregistered {}", spec.key(), spec.function));
        assert_eq!(function.trigger, Trigger::Http, "{}", spec.key());
    }
}

#[test]
fn the_log_level_can_never_be_trace() {
    // At TRACE the Lambda runtime logs raw events, tokens included.
    let template = template();
    let allowed: Vec<&str> = template["Parameters"]["LogLevel"]["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !allowed.is_empty() && !allowed.contains(&"TRACE"),
        "{allowed:?}"
    );
    let level = &template["Globals"]["Function"]["LoggingConfig"]["ApplicationLogLevel"];
    let Value::Tagged(reference) = level else {
        panic!("the log level is the LogLevel parameter: {level:?}");
    };
    assert_eq!(reference.value.as_str(), Some("LogLevel"));
    for (binary, resource) in functions(&template) {
        assert!(
            resource["Properties"].get("LoggingConfig").is_none(),
            "{binary} sets its own logging"
        );
    }
}
