//! Synapse's configuration for the local stack: `homeserver.yaml` rendered
//! from Synapse's generated config and the checked-in overlay
//! (`tools/bridge-dev/synapse/homeserver.overlay.yaml`), and the logging
//! config. The appservice registration is [`crate::registration`]'s.

use std::path::Path;

use serde_norway::{Mapping, Value};

use bridge::runtime::BoxError;

/// Our settings, merged over what Synapse generates.
pub const OVERLAY: &str = include_str!("../../synapse/homeserver.overlay.yaml");

/// Synapse's logging config (`log.config` in its data directory).
pub const LOG_CONFIG: &str = include_str!("../../synapse/log.config.yaml");

const HOMESERVER_HEADER: &str = "# Rendered by `bridge-dev stack up` on every up from homeserver.generated.yaml\n\
# (Synapse's --generate-config) and tools/bridge-dev/synapse/homeserver.overlay.yaml:\n\
# edit the overlay, not this file.\n";

/// What the overlay's placeholders stand for.
pub struct HomeserverSettings<'a> {
    pub port: u16,
    pub data_dir: &'a Path,
    pub registration: &'a Path,
    pub registration_shared_secret: &'a str,
}

/// `homeserver.yaml`: `overlay`, its placeholders filled in, merged over
/// `generated`.
pub fn render_homeserver(
    generated: &str,
    overlay: &str,
    settings: &HomeserverSettings<'_>,
) -> Result<String, BoxError> {
    let mut config: Value = serde_norway::from_str(generated)
        .map_err(|err| format!("Synapse's generated config: {err}"))?;
    if !config.is_mapping() {
        return Err("Synapse's generated config is not a mapping".into());
    }
    let overlay: Value =
        serde_norway::from_str(overlay).map_err(|err| format!("the homeserver overlay: {err}"))?;
    let variables = [
        ("port", Value::from(settings.port)),
        ("data_dir", Value::from(utf8(settings.data_dir)?)),
        ("registration", Value::from(utf8(settings.registration)?)),
        (
            "registration_shared_secret",
            Value::from(settings.registration_shared_secret),
        ),
    ];
    let overlay = substitute(overlay, &variables)?;
    merge(&mut config, overlay);
    Ok(format!(
        "{HOMESERVER_HEADER}{}",
        serde_norway::to_string(&config)?
    ))
}

fn utf8(path: &Path) -> Result<&str, BoxError> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()).into())
}

/// `value` with every `${name}` replaced: a string that is exactly one
/// placeholder becomes the variable's value (with its type), a placeholder
/// inside a longer string is replaced by the variable's text. An unknown
/// placeholder is an error.
pub fn substitute(value: Value, variables: &[(&str, Value)]) -> Result<Value, BoxError> {
    Ok(match value {
        Value::String(text) => substitute_string(&text, variables)?,
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|item| substitute(item, variables))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(mapping) => {
            let mut out = Mapping::with_capacity(mapping.len());
            for (key, value) in mapping {
                out.insert(key, substitute(value, variables)?);
            }
            Value::Mapping(out)
        }
        other => other,
    })
}

fn substitute_string(text: &str, variables: &[(&str, Value)]) -> Result<Value, BoxError> {
    let lookup = |name: &str| {
        variables
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
            .ok_or_else(|| format!("unknown placeholder ${{{name}}} in {text:?}"))
    };
    if let Some(name) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}'))
        && !name.contains(['$', '{', '}'])
    {
        return Ok(lookup(name)?.clone());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {text:?}"))?;
        match lookup(&after[..end])? {
            Value::String(s) => out.push_str(s),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::Bool(b) => out.push_str(&b.to_string()),
            other => return Err(format!("${{{}}} is not text: {other:?}", &after[..end]).into()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// Merges `overlay` into `base`: mappings key by key (recursively), anything
/// else replaced.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Synapse 1.163's `--generate-config` output.
    const GENERATED: &str = r#"
# Configuration file for Synapse.
server_name: "localhost"
pid_file: /elsewhere/homeserver.pid
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: ['::1', '127.0.0.1']
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: /data/homeserver.db
log_config: "/data/localhost.log.config"
media_store_path: /data/media_store
registration_shared_secret: "generated-registration-secret"
report_stats: false
macaroon_secret_key: "generated-macaroon"
form_secret: "generated-form"
signing_key_path: "/data/localhost.signing.key"
trusted_key_servers:
  - server_name: "matrix.org"
"#;

    fn settings() -> HomeserverSettings<'static> {
        HomeserverSettings {
            port: 28008,
            data_dir: Path::new("/repo/.local/synapse-data"),
            registration: Path::new("/repo/.local/synapse/registration.yaml"),
            registration_shared_secret: "our-secret",
        }
    }

    fn rendered() -> Value {
        let text = render_homeserver(GENERATED, OVERLAY, &settings()).unwrap();
        assert!(text.starts_with("# Rendered by `bridge-dev stack up`"));
        serde_norway::from_str(&text).unwrap()
    }

    #[test]
    fn the_overlay_keeps_the_generated_secrets_and_applies_ours() {
        let config = rendered();
        // Synapse's own: the server's identity and secrets, its database.
        assert_eq!(config["server_name"], "localhost");
        assert_eq!(config["macaroon_secret_key"], "generated-macaroon");
        assert_eq!(config["form_secret"], "generated-form");
        assert_eq!(config["signing_key_path"], "/data/localhost.signing.key");
        assert_eq!(
            config["database"]["args"]["database"],
            "/data/homeserver.db"
        );
        // Ours.
        assert_eq!(config["registration_shared_secret"], "our-secret");
        assert_eq!(
            config["pid_file"],
            "/repo/.local/synapse-data/homeserver.pid"
        );
        assert_eq!(config["log_config"], "/repo/.local/synapse-data/log.config");
        assert_eq!(config["public_baseurl"], "http://127.0.0.1:28008/");
        assert_eq!(
            config["app_service_config_files"][0],
            "/repo/.local/synapse/registration.yaml"
        );
        let listeners = config["listeners"].as_sequence().unwrap();
        assert_eq!(listeners.len(), 1, "the generated listener is replaced");
        assert_eq!(listeners[0]["port"], Value::from(28008));
        assert_eq!(listeners[0]["bind_addresses"][0], "127.0.0.1");
        assert_eq!(config["trusted_key_servers"], Value::Sequence(Vec::new()));
        assert_eq!(config["enable_registration"], Value::Bool(false));
        // The anchors are expanded for Synapse.
        assert_eq!(config["rc_message"]["per_second"], Value::from(1000));
        assert_eq!(
            config["rc_login"]["failed_attempts"]["burst_count"],
            Value::from(1000)
        );
    }

    #[test]
    fn the_rendered_config_does_not_depend_on_what_was_rendered_before() {
        let once = render_homeserver(GENERATED, OVERLAY, &settings()).unwrap();
        let again = render_homeserver(GENERATED, OVERLAY, &settings()).unwrap();
        assert_eq!(once, again);
        let moved = HomeserverSettings {
            port: 18008,
            ..settings()
        };
        assert!(
            render_homeserver(GENERATED, OVERLAY, &moved)
                .unwrap()
                .contains("http://127.0.0.1:18008/")
        );
    }

    #[test]
    fn placeholders_fill_in_with_their_type_or_as_text() {
        let variables = [("port", Value::from(8)), ("dir", Value::from("/d"))];
        let overlay: Value =
            serde_norway::from_str("a: '${port}'\nb: '${dir}/x'\nc: ['p${port}${dir}']\nd: 3")
                .unwrap();
        let out = substitute(overlay, &variables).unwrap();
        assert_eq!(out["a"], Value::from(8));
        assert_eq!(out["b"], "/d/x");
        assert_eq!(out["c"][0], "p8/d");
        assert_eq!(out["d"], Value::from(3));
        for bad in ["a: '${nope}'", "a: 'x${nope}'", "a: 'x${port'"] {
            let overlay: Value = serde_norway::from_str(bad).unwrap();
            assert!(substitute(overlay, &variables).is_err(), "{bad}");
        }
    }

    #[test]
    fn mappings_merge_and_everything_else_is_replaced() {
        let mut base: Value =
            serde_norway::from_str("m: {a: 1, b: {c: 2, d: 3}}\ns: [1, 2]\nx: 1").unwrap();
        let overlay: Value = serde_norway::from_str("m: {b: {c: 9}, e: 5}\ns: [7]\ny: 2").unwrap();
        merge(&mut base, overlay);
        let expected: Value =
            serde_norway::from_str("m: {a: 1, b: {c: 9, d: 3}, e: 5}\ns: [7]\nx: 1\ny: 2").unwrap();
        assert_eq!(base, expected);
    }

    #[test]
    fn the_log_config_is_a_logging_dict_config() {
        let config: Value = serde_norway::from_str(LOG_CONFIG).unwrap();
        assert_eq!(config["version"], Value::from(1));
        assert_eq!(config["root"]["handlers"][0], "console");
    }
}
