//! The AWS SDK's HTTP client: `reqwest`, the stack the homeserver's client
//! uses, with the process's one TLS configuration ([`crate::tls`]).
//!
//! The SDK's own HTTPS client (left out of the build: the SDK crates are
//! used without `default-https-client`) read the platform's trust store for
//! itself, beside the one `reqwest` reads: two readings in every cold start
//! (`bench/RESULTS.md`, "Where init goes"). Through this adapter the SDK
//! sends its requests, already signed, with `reqwest`, and reads the whole
//! answer back. The functions' AWS calls (DynamoDB, SQS, Secrets Manager)
//! send and receive bodies held in memory; a streaming body is refused, not
//! buffered.

use std::fmt;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// How long to wait for a connection, as the SDK's default client does.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// The SDK configuration loader of every function, tool and test: the
/// SDK's defaults (region, credentials, endpoint from the environment), with
/// this HTTP client. The SDK is built without a client of its own.
pub fn loader() -> Result<aws_config::ConfigLoader, reqwest::Error> {
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(SharedHttpClient::new(ReqwestClient::new()?)))
}

/// An [`HttpClient`] for the SDK that sends with `reqwest`; clones share the
/// connection pool.
#[derive(Clone, Debug)]
pub struct ReqwestClient {
    http: reqwest::Client,
}

impl ReqwestClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = crate::tls::client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self { http })
    }
}

impl HttpClient for ReqwestClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector {
            http: self.http.clone(),
            read_timeout: settings.read_timeout(),
        })
    }
}

/// One SDK client's connector: the shared pool, and that client's read
/// timeout (none unless configured), applied to each whole request.
struct Connector {
    http: reqwest::Client,
    read_timeout: Option<Duration>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.http.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let mut request = to_reqwest(request)?;
            *request.timeout_mut() = read_timeout;
            let response = http.execute(request).await.map_err(connector_error)?;
            from_reqwest(response).await
        })
    }
}

fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|err| ConnectorError::user(err.into()))?;
    let (parts, body) = request.into_parts();
    let body = body
        .bytes()
        .map(bytes::Bytes::copy_from_slice)
        .ok_or_else(|| ConnectorError::user("a streaming request body is not supported".into()))?;
    reqwest::Request::try_from(http::Request::from_parts(parts, body))
        .map_err(|err| ConnectorError::user(err.into()))
}

async fn from_reqwest(mut response: reqwest::Response) -> Result<HttpResponse, ConnectorError> {
    let mut answer = http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = std::mem::take(response.headers_mut());
    }
    let body = response.bytes().await.map_err(connector_error)?;
    let answer = answer
        .body(SdkBody::from(body))
        .map_err(|err| ConnectorError::other(err.into(), None))?;
    HttpResponse::try_from(answer).map_err(|err| ConnectorError::other(err.into(), None))
}

/// What the SDK's retry strategy needs to know: a timeout and a broken
/// connection are transient (retried), anything else is not.
fn connector_error(err: reqwest::Error) -> ConnectorError {
    if err.is_timeout() {
        ConnectorError::timeout(err.into())
    } else if err.is_connect() || err.is_request() || err.is_body() {
        ConnectorError::io(err.into())
    } else {
        ConnectorError::other(err.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn dynamodb(endpoint: &str) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("id", "secret", None, None, "test"))
            .http_client(ReqwestClient::new().expect("the client builds"))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    async fn get_item(
        endpoint: &str,
    ) -> Result<
        aws_sdk_dynamodb::operation::get_item::GetItemOutput,
        aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError>,
    > {
        dynamodb(endpoint)
            .get_item()
            .table_name("bridge")
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("a".into()))
            .send()
            .await
    }

    /// Serves one request with `answer`; returns the request as received.
    async fn serve_once(listener: TcpListener, answer: &'static str) -> String {
        let (mut socket, _) = listener.accept().await.expect("a connection");
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.expect("readable");
            received.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&received).to_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if received.len() >= end + 4 + length || n == 0 {
                    break;
                }
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: r1\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        socket
            .write_all(response.as_bytes())
            .await
            .expect("writable");
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test]
    async fn the_sdk_sends_a_signed_request_and_reads_the_answer_through_reqwest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let server = tokio::spawn(serve_once(listener, r#"{"Item":{"pk":{"S":"a"}}}"#));
        let item = get_item(&endpoint).await.expect("the answer is read");
        assert_eq!(
            item.item().and_then(|item| item.get("pk")),
            Some(&aws_sdk_dynamodb::types::AttributeValue::S("a".into()))
        );
        assert_eq!(
            aws_sdk_dynamodb::operation::RequestId::request_id(&item),
            Some("r1"),
            "headers are passed up"
        );
        let request = server.await.expect("served").to_lowercase();
        assert!(request.starts_with("post / http/1.1"), "{request}");
        assert!(request.contains("x-amz-target: dynamodb_20120810.getitem"));
        assert!(request.contains("authorization: aws4-hmac-sha256 credential=id/"));
        assert!(
            request.contains(r#""tablename":"bridge""#),
            "the body is sent"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transient_io_failure_the_sdk_retries() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        drop(listener);
        let err = get_item(&endpoint).await.expect_err("nothing listens");
        let aws_sdk_dynamodb::error::SdkError::DispatchFailure(failure) = err else {
            panic!("a dispatch failure, not {err:?}");
        };
        assert!(failure.is_io(), "{failure:?}");
        assert!(!failure.is_user(), "{failure:?}");
    }
}
