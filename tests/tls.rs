//! The functions' HTTPS path, end to end on loopback: the AWS SDK (sending
//! through `bridge::aws_http`) and the homeserver's client reach a TLS
//! server whose CA is trusted only through `SSL_CERT_FILE`, as an operator
//! trusts a homeserver behind a private CA (README, "Configuration").
//!
//! The trust store is read once per process (`bridge::tls`), so the
//! clients that trust the CA run in a child process of this test binary,
//! started with the setting; this process, with the system's store only,
//! is refused by the same server.

#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use bridge::matrix::AppserviceClient;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const TEST: &str = "an_operator_trusts_a_private_ca_through_ssl_cert_file";
/// Set in the child: the directory with the CA and the server's key pair.
const CHILD: &str = "BRIDGE_TLS_TEST_DIR";

#[test]
fn an_operator_trusts_a_private_ca_through_ssl_cert_file() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    if let Some(dir) = std::env::var_os(CHILD) {
        return runtime.block_on(trusted(Path::new(&dir)));
    }
    let dir = std::env::temp_dir().join(format!("bridge-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    make_certificates(&dir);
    runtime.block_on(refused(&dir));
    let status = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", TEST, "--nocapture", "--include-ignored"])
        .env(CHILD, &dir)
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .status()
        .expect("the child runs");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        status.success(),
        "the clients trusting the CA failed: {status}"
    );
}

/// In the child: both clients reach the server.
async fn trusted(dir: &Path) {
    let (item, versions) = call_both(serve(dir).await).await;
    let item = item.expect("the SDK trusts the CA");
    assert_eq!(
        item.item().and_then(|item| item.get("pk")),
        Some(&AttributeValue::S("a".into()))
    );
    let versions = versions.expect("the homeserver's client trusts the CA");
    assert_eq!(versions.status(), 200);
}

/// In this process, with the system's trust store only: refused.
async fn refused(dir: &Path) {
    let (item, versions) = call_both(serve(dir).await).await;
    let err = item.expect_err("the system's store does not hold the test CA");
    assert!(
        matches!(err, aws_sdk_dynamodb::error::SdkError::DispatchFailure(_)),
        "{err:?}"
    );
    let err = versions.expect_err("the system's store does not hold the test CA");
    assert!(err.is_connect(), "{err:?}");
}

/// A `GetItem` through the SDK, and `/versions` through the homeserver's
/// client, both to the server at `address` by the name its certificate has.
async fn call_both(address: SocketAddr) -> (GetItemResult, reqwest::Result<reqwest::Response>) {
    let item = dynamodb(address)
        .await
        .get_item()
        .table_name("bridge")
        .key("pk", AttributeValue::S("a".into()))
        .send()
        .await;
    let versions = AppserviceClient::http_client()
        .expect("the homeserver's client builds")
        .get(format!(
            "https://localhost:{}/_matrix/client/versions",
            address.port()
        ))
        .send()
        .await;
    (item, versions)
}

type GetItemResult = Result<
    aws_sdk_dynamodb::operation::get_item::GetItemOutput,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError>,
>;

async fn dynamodb(address: SocketAddr) -> aws_sdk_dynamodb::Client {
    let sdk = bridge::aws_http::loader()
        .expect("the SDK's HTTP client builds")
        .endpoint_url(format!("https://localhost:{}", address.port()))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("id", "secret", None, None, "test"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

/// A test CA (`ca.pem`) and a certificate for `localhost` it signed.
fn make_certificates(dir: &Path) {
    let ca_key = KeyPair::generate().expect("a key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("the CA signs itself");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("a key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("parameters")
        .signed_by(&key, &issuer)
        .expect("the CA signs");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("written");
    std::fs::write(dir.join("server.der"), cert.der()).expect("written");
    std::fs::write(dir.join("server.key"), key.serialize_der()).expect("written");
}

/// A TLS server on loopback answering every request with a DynamoDB item
/// (which also passes for a `/versions` answer's status).
async fn serve(dir: &Path) -> SocketAddr {
    let cert = CertificateDer::from(std::fs::read(dir.join("server.der")).expect("read"));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        std::fs::read(dir.join("server.key")).expect("read"),
    ));
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("the server's key pair");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake ends here: the client saw it.
                let Ok(mut stream) = acceptor.accept(socket).await else {
                    return;
                };
                let mut request = [0u8; 8192];
                let _ = stream.read(&mut request).await;
                let body = r#"{"Item":{"pk":{"S":"a"}}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}
