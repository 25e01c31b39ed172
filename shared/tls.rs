//! The process's one TLS configuration, which every HTTPS client of a
//! function shares: the homeserver's, the media fetcher's and the AWS SDK's
//! ([`crate::aws_http`]).
//!
//! Reading the platform's trust store is the largest part of a cold start's
//! own work: each client that reads it reads the bundle file and every file
//! of the certificate directory, and decodes them all (3.9 ms a reading, a
//! sixth of `send`'s init CPU, on this machine with 146 certificates in
//! `/etc/ssl/certs`; `bench/RESULTS.md`, "Where init goes"). Here it is read once, when the first client is
//! built, and that verifier serves every client after it.

use std::sync::{Arc, LazyLock};

use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt;

/// Built once, on first use: aws-lc, TLS 1.2 and 1.3, the platform's
/// verifier (the system's roots, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
static CONFIG: LazyLock<Result<ClientConfig, rustls::Error>> = LazyLock::new(|| {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth())
});

/// A `reqwest` client builder with the shared TLS configuration. Should it
/// not build (no trust store at all), the builder is left to `reqwest`'s
/// own, whose `build` then reports the same error.
pub fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match CONFIG.as_ref() {
        Ok(config) => builder.tls_backend_preconfigured(config.clone()),
        Err(_) => builder,
    }
}
