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

/// The variables a function gets from the template itself (not Globals).
fn variables(function: &Value) -> BTreeSet<String> {
    function["Properties"]["Environment"]["Variables"]
        .as_mapping()
        .map(|vars| {
            vars.keys()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tokens_are_secrets_the_functions_get_by_arn_only() {
    let template = template();
    // No token is a parameter or an environment value: only the ARNs of the
    // secrets the template makes.
    let parameters = template["Parameters"].as_mapping().unwrap();
    for name in parameters.keys().filter_map(Value::as_str) {
        assert!(!name.to_lowercase().contains("token"), "parameter {name}");
    }
    for secret in ["MatrixAsTokenSecret", "MatrixHsTokenSecret"] {
        let resource = &template["Resources"][secret];
        assert_eq!(
            resource["Type"].as_str(),
            Some("AWS::SecretsManager::Secret")
        );
        assert!(resource["Properties"]["SecretString"].is_null(), "{secret}");
    }
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    for (binary, resource) in functions(&template) {
        let vars = variables(&resource);
        for var in &vars {
            assert!(
                var.ends_with("_SECRET_ARN") || !var.contains("TOKEN"),
                "{binary}: {var} carries a token's value"
            );
        }
        for (var, secret) in [
            ("MATRIX_AS_TOKEN_SECRET_ARN", "MatrixAsTokenSecret"),
            ("MATRIX_HS_TOKEN_SECRET_ARN", "MatrixHsTokenSecret"),
        ] {
            let value = &resource["Properties"]["Environment"]["Variables"][var];
            if let Value::Tagged(reference) = value {
                assert_eq!(reference.tag, "Ref", "{binary}: {var}");
                assert_eq!(reference.value.as_str(), Some(secret), "{binary}: {var}");
            } else {
                assert!(value.is_null(), "{binary}: {var} is {value:?}");
            }
        }
        assert_eq!(
            vars.contains("MATRIX_HS_TOKEN_SECRET_ARN"),
            binary == "transactions",
            "{binary}: only the webhook checks the hs_token"
        );
    }
    for var in globals
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Value::as_str)
    {
        assert!(!var.contains("TOKEN"), "Globals: {var}");
    }
}

/// What each function may do, exactly (the code's calls; `README`,
/// "Permissions"): table actions, the indexes it queries,
/// the secrets it reads, and what it does with which queue.
struct Grant {
    function: &'static str,
    table: &'static [&'static str],
    indexes: &'static [&'static str],
    secrets: &'static [&'static str],
    /// (queue, "send" or "consume")
    queues: &'static [(&'static str, &'static str)],
}

const fn grant(
    function: &'static str,
    table: &'static [&'static str],
    indexes: &'static [&'static str],
    secrets: &'static [&'static str],
    queues: &'static [(&'static str, &'static str)],
) -> Grant {
    Grant {
        function,
        table,
        indexes,
        secrets,
        queues,
    }
}

const GRANTS: &[Grant] = {
    const READ_WRITE: &[&str] = &["BatchGetItem", "GetItem", "PutItem", "UpdateItem"];
    const AS: &[&str] = &["MatrixAsTokenSecret"];
    const SEND_RETRY: &[(&str, &str)] = &[("RetryQueue", "send")];
    &[
        // Claims, activation (BatchWriteItem), member and room changes in
        // transactions with a condition check on the conversation; removed
        // members and settled syncs are deleted.
        grant(
            "provision",
            &[
                "BatchGetItem",
                "BatchWriteItem",
                "ConditionCheckItem",
                "DeleteItem",
                "GetItem",
                "PutItem",
                "Query",
                "UpdateItem",
            ],
            &[],
            AS,
            SEND_RETRY,
        ),
        grant(
            "send",
            &[
                "BatchGetItem",
                "ConditionCheckItem",
                "GetItem",
                "PutItem",
                "UpdateItem",
            ],
            &[],
            AS,
            SEND_RETRY,
        ),
        grant("edit", READ_WRITE, &[], AS, SEND_RETRY),
        grant("delete", READ_WRITE, &[], AS, SEND_RETRY),
        // A reaction removed is deleted (with its event lookup).
        grant(
            "react",
            &[
                "BatchGetItem",
                "DeleteItem",
                "GetItem",
                "PutItem",
                "UpdateItem",
            ],
            &[],
            AS,
            SEND_RETRY,
        ),
        grant("history", &["GetItem", "Query"], &[], &[], &[]),
        // Queued room and member changes too: the conversation's members
        // (Query), a settled sync deleted; what waits ahead of a job (the
        // outbox index).
        grant(
            "retry",
            &[
                "BatchGetItem",
                "DeleteItem",
                "GetItem",
                "PutItem",
                "Query",
                "UpdateItem",
            ],
            &["outbox"],
            AS,
            &[("RetryQueue", "consume")],
        ),
        grant(
            "sweeper",
            &["DeleteItem", "PutItem", "UpdateItem"],
            &["pending"],
            &[],
            SEND_RETRY,
        ),
        grant("media", &["GetItem", "PutItem"], &[], AS, &[]),
        grant("activity", &["GetItem", "UpdateItem"], &[], AS, &[]),
        // A Matrix user's reaction redacted is deleted (DeleteItem).
        grant(
            "transactions",
            &[
                "BatchGetItem",
                "BatchWriteItem",
                "DeleteItem",
                "GetItem",
                "PutItem",
                "Query",
                "UpdateItem",
            ],
            &[],
            &["MatrixAsTokenSecret", "MatrixHsTokenSecret"],
            &[("InboundQueue", "send")],
        ),
    ]
};

/// A policy statement's actions or resources, as a list.
fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::Sequence(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// A resource of a statement as `tag target`: `GetAtt BridgeTable.Arn`,
/// `Ref MatrixAsTokenSecret`, `Sub ${BridgeTable.Arn}/index/pending`, or
/// the literal string.
fn resource_name(value: &Value) -> String {
    match value {
        Value::Tagged(tagged) => format!(
            "{} {}",
            tagged.tag.to_string().trim_start_matches('!'),
            tagged.value.as_str().unwrap_or("?")
        ),
        Value::String(literal) => literal.clone(),
        other => panic!("unexpected resource {other:?}"),
    }
}

/// Every statement of a role's inline policies: (actions, resources).
fn statements(role: &Value) -> Vec<(BTreeSet<String>, BTreeSet<String>)> {
    let properties = &role["Properties"];
    assert!(
        properties["ManagedPolicyArns"].is_null(),
        "managed policies"
    );
    assert!(properties["PermissionsBoundary"].is_null());
    let mut out = Vec::new();
    for policy in properties["Policies"].as_sequence().unwrap() {
        for statement in list(&policy["PolicyDocument"]["Statement"]) {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"));
            assert!(statement["NotAction"].is_null() && statement["NotResource"].is_null());
            assert!(statement["Condition"].is_null());
            let actions = list(&statement["Action"])
                .iter()
                .map(|action| action.as_str().unwrap().to_owned())
                .collect();
            let resources = list(&statement["Resource"])
                .iter()
                .map(resource_name)
                .collect();
            out.push((actions, resources));
        }
    }
    out
}

/// What a role allows: action -> the resources it is allowed on.
fn allowed(role: &Value) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut allowed = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for (actions, resources) in statements(role) {
        for action in actions {
            allowed
                .entry(action)
                .or_default()
                .extend(resources.iter().cloned());
        }
    }
    allowed
}

#[test]
fn each_function_has_its_own_role_granting_exactly_what_it_uses() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let functions = functions(&template);
    assert_eq!(functions.len(), GRANTS.len());
    let mut roles_used = BTreeSet::new();
    for Grant {
        function: binary,
        table,
        indexes,
        secrets,
        queues,
    } in GRANTS
    {
        let (_, function) = functions
            .iter()
            .find(|(name, _)| name == binary)
            .unwrap_or_else(|| panic!("{binary} is not in the template"));
        // Its own role, so SAM attaches no managed policy ("*" resources):
        // not for logs, X-Ray, nor the SQS event source.
        assert!(
            function["Properties"]["Policies"].is_null(),
            "{binary}: SAM policies"
        );
        let Value::Tagged(role_ref) = &function["Properties"]["Role"] else {
            panic!("{binary} has no explicit role");
        };
        let role_name = role_ref.value.as_str().unwrap().trim_end_matches(".Arn");
        assert!(
            roles_used.insert(role_name.to_owned()),
            "{role_name} shared"
        );
        let role = &template["Resources"][role_name];
        assert_eq!(role["Type"].as_str(), Some("AWS::IAM::Role"), "{role_name}");
        let principal = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
        assert_eq!(
            principal["Principal"]["Service"].as_str(),
            Some("lambda.amazonaws.com")
        );

        let mut expected = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        let mut grant = |action: String, resource: String| {
            expected.entry(action).or_default().insert(resource);
        };
        // Its own log group, which the function names.
        let Value::Tagged(log_group) = &function["Properties"]["LoggingConfig"]["LogGroup"] else {
            panic!("{binary}: no log group of its own");
        };
        let logs = log_group.value.as_str().unwrap();
        for action in ["logs:CreateLogStream", "logs:PutLogEvents"] {
            grant(action.into(), format!("GetAtt {logs}.Arn"));
        }
        // X-Ray's two actions take no resource but "*".
        for action in ["xray:PutTelemetryRecords", "xray:PutTraceSegments"] {
            grant(action.into(), "*".into());
        }
        for action in *table {
            grant(
                format!("dynamodb:{action}"),
                "GetAtt BridgeTable.Arn".into(),
            );
        }
        for index in *indexes {
            grant(
                "dynamodb:Query".into(),
                format!("Sub ${{BridgeTable.Arn}}/index/{index}"),
            );
        }
        for secret in *secrets {
            grant(
                "secretsmanager:GetSecretValue".into(),
                format!("Ref {secret}"),
            );
        }
        for (queue, use_) in *queues {
            let actions: &[&str] = match *use_ {
                "send" => &["sqs:SendMessage"],
                // What the SQS event source mapping does with the role.
                _ => &[
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                ],
            };
            for action in actions {
                grant((*action).into(), format!("GetAtt {queue}.Arn"));
            }
        }
        assert_eq!(allowed(role), expected, "{binary}'s role");
    }
    // No other role in the template, and no policy attached elsewhere.
    for (name, resource) in resources {
        let kind = resource["Type"].as_str().unwrap_or_default();
        if kind == "AWS::IAM::Role" {
            assert!(roles_used.contains(name.as_str().unwrap()), "{name:?}");
        }
        assert!(
            !matches!(
                kind,
                "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" | "AWS::IAM::User"
            ),
            "{name:?}: {kind}"
        );
    }
}

#[test]
fn no_grant_is_wider_than_one_action_on_named_resources() {
    // Independent of GRANTS: what no role may ever have.
    let template = template();
    // Every action any function may need; anything else (a wildcard, a
    // Scan, PartiQL, a table or queue administered) fails here even if
    // GRANTS were widened with it.
    let known = [
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "secretsmanager:GetSecretValue",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    ];
    // Only what deletes items may: removed members, settled syncs and
    // reactions taken back (by the API, on retry, or by a Matrix user).
    let deleters = [
        "ProvisionRole",
        "RetryRole",
        "SweeperRole",
        "ReactRole",
        "TransactionsRole",
    ];
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::IAM::Role") {
            continue;
        }
        for (actions, resources) in statements(resource) {
            for action in &actions {
                assert!(!action.contains('*'), "{name:?}: action {action}");
                assert!(known.contains(&action.as_str()), "{name:?}: {action}");
                assert!(
                    action != "dynamodb:DeleteItem"
                        || deleters.contains(&name.as_str().unwrap_or_default()),
                    "{name:?}: {action}"
                );
            }
            for resource in &resources {
                let xray = actions.iter().all(|action| action.starts_with("xray:"));
                assert!(
                    !resource.contains('*') || (resource == "*" && xray),
                    "{name:?}: {actions:?} on {resource}"
                );
                assert!(!resource.starts_with("arn:"), "{name:?}: a literal ARN");
            }
        }
    }
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
        // Only its own log group (for a role that names it), never a level.
        let logging = &resource["Properties"]["LoggingConfig"];
        let keys: Vec<_> = logging.as_mapping().unwrap().keys().collect();
        assert_eq!(keys, ["LogGroup"], "{binary} sets its own logging");
    }
}

#[test]
fn the_dashboard_graphs_metrics_the_functions_write() {
    let template = include_str!("../template.yaml");
    let metrics = include_str!("../shared/metrics.rs");
    let graphed: BTreeSet<&str> = template
        .split("{MatrixBridge,Function} MetricName=\\\"")
        .skip(1)
        .filter_map(|rest| rest.split('\\').next())
        .collect();
    // What the issue asks the dashboard for, among the rest.
    for wanted in [
        "MessagesSent",
        "MessagesQueued",
        "MessagesFailed",
        "RetriesHandedBack",
        "InboundPublished",
        "TransactionsRepeated",
        "RoomsCreated",
        "MatrixLatency",
    ] {
        assert!(graphed.contains(wanted), "the dashboard lacks {wanted}");
    }
    for name in &graphed {
        assert!(
            metrics.contains(&format!("\"{name}\"")) || metrics.contains(&format!("{name},")),
            "the dashboard graphs {name}, which shared/metrics.rs never writes"
        );
    }
}
