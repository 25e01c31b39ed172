//! The stack's two `KEY=value` files: `.local/secrets.env` (generated once,
//! mode 600) and `.local/stack.env` (rewritten on every up; tests, scripts and
//! the bridge's processes read it).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use bridge::config::Secret;

use super::{Layout, Ports};

/// The stack's fixed settings.
pub const SERVER_NAME: &str = "localhost";
pub const PUPPET_PREFIX: &str = "app_";
pub const BOT_LOCALPART: &str = "bridgebot";
pub const TABLE: &str = "bridge";
pub const REGION: &str = "us-east-1";
/// moto accepts any credentials; these are its documented test ones.
pub const AWS_ACCESS_KEY: &str = "testing";
pub const JWT_ISSUER: &str = "https://bridge.local";
pub const JWT_AUDIENCE: &str = "matrix-bridge";

/// The `KEY=value` lines of `text`, in order; blank lines and `#` comments
/// are skipped, values are taken as they are (nothing is unquoted).
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.to_owned()))
        .collect()
}

/// The stack's secrets (never printed: [`Secret`] hides them from `Debug`).
#[derive(Debug)]
pub struct Secrets {
    pub as_token: Secret,
    pub hs_token: Secret,
    pub jwt_secret: Secret,
    pub registration_shared_secret: Secret,
}

/// The keys of `.local/secrets.env`.
pub const SECRET_KEYS: [&str; 4] = [
    "MATRIX_AS_TOKEN",
    "MATRIX_HS_TOKEN",
    "BRIDGE_DEV_JWT_SECRET",
    "MATRIX_REGISTRATION_SHARED_SECRET",
];

/// Reads the secrets from `path`, generating (and appending) any that is
/// missing; the file is created, or kept, with mode 600.
pub fn ensure_secrets(path: &Path) -> io::Result<Secrets> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let mut known = parse(&text);
    let mut added = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        added.push('\n');
    }
    for key in SECRET_KEYS {
        if !known.iter().any(|(k, v)| k == key && !v.trim().is_empty()) {
            let value = new_secret()?;
            added.push_str(&format!("{key}={value}\n"));
            known.push((key.to_owned(), value));
        }
    }
    if added.trim().is_empty() {
        added.clear();
    }
    file.write_all(added.as_bytes())?;
    let get = |key: &str| {
        known
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| Secret::new(v.trim()))
            .unwrap_or_else(|| Secret::new(""))
    };
    Ok(Secrets {
        as_token: get("MATRIX_AS_TOKEN"),
        hs_token: get("MATRIX_HS_TOKEN"),
        jwt_secret: get("BRIDGE_DEV_JWT_SECRET"),
        registration_shared_secret: get("MATRIX_REGISTRATION_SHARED_SECRET"),
    })
}

/// 32 random bytes, URL-safe base64 (as Python's `secrets.token_urlsafe(32)`).
pub fn new_secret() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The contents of `.local/stack.env`, as `(key, value)` pairs in order:
/// the stack's settings, then `queue_urls` (from the table and queue setup).
pub fn stack_env(
    layout: &Layout,
    ports: &Ports,
    secrets: &Secrets,
    queue_urls: &[(String, String)],
) -> Vec<(String, String)> {
    let gateway = ports.gateway_url();
    let path = |p: &Path| p.display().to_string();
    let mut pairs: Vec<(&str, String)> = vec![
        ("BRIDGE_ROOT", path(&layout.root)),
        ("BRIDGE_API_URL", gateway.clone()),
        ("BRIDGE_WEBHOOK_URL", gateway),
        (
            "BRIDGE_GATEWAY_LISTEN",
            format!("127.0.0.1:{}", ports.gateway),
        ),
        ("MATRIX_HOMESERVER_URL", ports.synapse_url()),
        ("MATRIX_SERVER_NAME", SERVER_NAME.into()),
        (
            "MATRIX_REGISTRATION_SHARED_SECRET",
            secrets.registration_shared_secret.expose().into(),
        ),
        ("MATRIX_AS_TOKEN", secrets.as_token.expose().into()),
        ("MATRIX_HS_TOKEN", secrets.hs_token.expose().into()),
        ("BRIDGE_APPSERVICE_REGISTRATION", path(&layout.registration)),
        ("BRIDGE_PUPPET_PREFIX", PUPPET_PREFIX.into()),
        ("BRIDGE_BOT_LOCALPART", BOT_LOCALPART.into()),
        ("SYNAPSE_PID_FILE", path(&layout.pid_file("synapse"))),
        ("AWS_ENDPOINT_URL", ports.moto_url()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", AWS_ACCESS_KEY.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("BRIDGE_TABLE", TABLE.into()),
        ("BRIDGE_DEV_JWT_SECRET", secrets.jwt_secret.expose().into()),
        ("BRIDGE_JWT_ISSUER", JWT_ISSUER.into()),
        ("BRIDGE_JWT_AUDIENCE", JWT_AUDIENCE.into()),
    ];
    pairs.extend(
        queue_urls
            .iter()
            .map(|(key, url)| (key.as_str(), url.clone())),
    );
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

/// `KEY=value` lines, nothing quoted: a shell can `. .local/stack.env` it.
pub fn render(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect()
}

/// Writes `contents` to `path` atomically (a temporary file renamed over
/// it), readable by the owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_made_once_private_and_completed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.env");
        let first = ensure_secrets(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let again = ensure_secrets(&path).unwrap();
        assert_eq!(first.as_token, again.as_token);
        assert_eq!(
            first.registration_shared_secret,
            again.registration_shared_secret
        );
        let all = [
            &first.as_token,
            &first.hs_token,
            &first.jwt_secret,
            &first.registration_shared_secret,
        ];
        for (i, secret) in all.iter().enumerate() {
            assert_eq!(secret.expose().len(), 43);
            assert!(
                secret
                    .expose()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
            assert!(all[i + 1..].iter().all(|other| other != secret), "distinct");
        }
        assert!(!format!("{first:?}").contains(first.as_token.expose()));

        // An older file with a key missing, readable by others, no newline at the end.
        fs::write(&path, "MATRIX_AS_TOKEN=kept\nMATRIX_HS_TOKEN=kept-too").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let completed = ensure_secrets(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(completed.as_token.expose(), "kept");
        assert_eq!(completed.hs_token.expose(), "kept-too");
        let keys: Vec<String> = parse(&fs::read_to_string(&path).unwrap())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, SECRET_KEYS);
    }

    #[test]
    fn stack_env_has_todays_keys_in_order() {
        let layout = Layout::new(PathBuf::from("/work/repo"));
        let ports = Ports {
            moto: 25000,
            synapse: 28008,
            gateway: 28080,
        };
        let secrets = Secrets {
            as_token: Secret::new("as"),
            hs_token: Secret::new("hs"),
            jwt_secret: Secret::new("jwt"),
            registration_shared_secret: Secret::new("reg"),
        };
        let queues = vec![
            (
                "BRIDGE_RETRY_QUEUE_URL".to_owned(),
                "http://q/retry".to_owned(),
            ),
            ("BRIDGE_RETRY_DLQ_URL".to_owned(), "http://q/dlq".to_owned()),
        ];
        let text = render(&stack_env(&layout, &ports, &secrets, &queues));
        let expected = "\
BRIDGE_ROOT=/work/repo
BRIDGE_API_URL=http://127.0.0.1:28080
BRIDGE_WEBHOOK_URL=http://127.0.0.1:28080
BRIDGE_GATEWAY_LISTEN=127.0.0.1:28080
MATRIX_HOMESERVER_URL=http://127.0.0.1:28008
MATRIX_SERVER_NAME=localhost
MATRIX_REGISTRATION_SHARED_SECRET=reg
MATRIX_AS_TOKEN=as
MATRIX_HS_TOKEN=hs
BRIDGE_APPSERVICE_REGISTRATION=/work/repo/.local/synapse/registration.yaml
BRIDGE_PUPPET_PREFIX=app_
BRIDGE_BOT_LOCALPART=bridgebot
SYNAPSE_PID_FILE=/work/repo/.local/run/synapse.pid
AWS_ENDPOINT_URL=http://127.0.0.1:25000
AWS_REGION=us-east-1
AWS_DEFAULT_REGION=us-east-1
AWS_ACCESS_KEY_ID=testing
AWS_SECRET_ACCESS_KEY=testing
AWS_EC2_METADATA_DISABLED=true
BRIDGE_TABLE=bridge
BRIDGE_DEV_JWT_SECRET=jwt
BRIDGE_JWT_ISSUER=https://bridge.local
BRIDGE_JWT_AUDIENCE=matrix-bridge
BRIDGE_RETRY_QUEUE_URL=http://q/retry
BRIDGE_RETRY_DLQ_URL=http://q/dlq
";
        assert_eq!(text, expected);
        assert_eq!(parse(&text).len(), 25);
    }

    #[test]
    fn stack_env_names_the_queues_setup_makes() {
        let keys: Vec<&str> = crate::setup::QUEUES.iter().map(|q| q.env_key).collect();
        assert_eq!(
            keys,
            [
                "BRIDGE_RETRY_QUEUE_URL",
                "BRIDGE_RETRY_DLQ_URL",
                "BRIDGE_INBOUND_QUEUE_URL"
            ]
        );
    }

    #[test]
    fn private_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.env");
        write_private(&path, b"A=1\n").unwrap();
        write_private(&path, b"B=2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "B=2\n");
        assert_eq!(mode(&path), 0o600);
        assert!(!dir.path().join("stack.env.tmp").exists());
    }

    #[test]
    fn parse_skips_comments_and_keeps_values_whole() {
        let pairs = parse("# c\n\nA=1\nB=x=y\nnot a pair\n");
        assert_eq!(
            pairs,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "x=y".to_owned())
            ]
        );
    }
}
