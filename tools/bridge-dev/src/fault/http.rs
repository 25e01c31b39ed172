//! Just enough HTTP/1.1 for the fault proxy: a message head (start line and
//! headers), its body by `Content-Length`, chunked or to the end of the
//! connection, and a message written back whole with a `Content-Length`.
//! The proxy handles the bytes itself so that it can close or reset a
//! connection at exactly the point a fault says.

use std::io;

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest head read.
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest body read (the bridge uploads at most a few MiB).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long connecting to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an upstream may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers a proxy does not pass on (hop-by-hop, or recomputed).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
];

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A request or response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The request line or the status line.
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn word(&self, at: usize) -> &str {
        self.start.split_whitespace().nth(at).unwrap_or_default()
    }

    /// A request's method.
    pub fn method(&self) -> &str {
        self.word(0)
    }

    /// A request's target (path and query).
    pub fn target(&self) -> &str {
        self.word(1)
    }

    /// A response's status.
    pub fn status(&self) -> Option<u16> {
        self.word(1).parse().ok()
    }

    fn version(&self, request: bool) -> &str {
        if request { self.word(2) } else { self.word(0) }
    }

    /// Whether a request asks to close the connection after its answer.
    pub fn wants_close(&self) -> bool {
        let connection = self.header("connection").unwrap_or_default();
        let has = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        has("close") || (self.version(true) == "HTTP/1.0" && !has("keep-alive"))
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|te| {
            te.split(',')
                .next_back()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| invalid(format!("Content-Length {value:?}"))),
        }
    }

    /// How a request's body is framed.
    pub fn request_framing(&self) -> io::Result<Framing> {
        if self.chunked() {
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length()? {
            Some(length) => Framing::Length(length),
            None => Framing::Length(0),
        })
    }

    /// How a response to a `method` request is framed.
    pub fn response_framing(&self, method: &str) -> io::Result<Framing> {
        let status = self
            .status()
            .ok_or_else(|| invalid(format!("status line {:?}", self.start)))?;
        if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            return Ok(Framing::Length(0));
        }
        if self.chunked() {
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length()? {
            Some(length) => Framing::Length(length),
            None => Framing::UntilEof,
        })
    }

    /// The headers a proxy passes on: without hop-by-hop ones.
    pub fn end_to_end(&self) -> impl Iterator<Item = &(String, String)> {
        self.headers
            .iter()
            .filter(|(name, _)| !HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop)))
    }
}

/// How a body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    UntilEof,
}

/// Reads one line (up to `limit` bytes), without its line ending; `None`
/// at the end of the stream.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(limit as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(if line.len() > limit {
            invalid("line too long")
        } else {
            io::ErrorKind::UnexpectedEof.into()
        });
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("a head line is not UTF-8"))
}

/// Reads a head; `None` when the stream ends before it starts (a client
/// that closed a kept-alive connection).
pub async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Head>> {
    let mut budget = MAX_HEAD;
    let mut start = None;
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, budget).await? else {
            return match start {
                None => Ok(None),
                Some(_) => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        };
        budget = budget.saturating_sub(line.len() + 2);
        if budget == 0 {
            return Err(invalid("head too long"));
        }
        match &start {
            // Empty lines before a request line are allowed (RFC 9112 2.2).
            None if line.is_empty() => continue,
            None => start = Some(line),
            Some(_) if line.is_empty() => break,
            Some(_) => {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("header line {line:?}")))?;
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    Ok(start.map(|start| Head { start, headers }))
}

/// Reads a body framed as `framing`.
pub async fn read_body<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    framing: Framing,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        Framing::Length(length) => {
            if length > MAX_BODY {
                return Err(invalid("body too large"));
            }
            body.resize(length, 0);
            reader.read_exact(&mut body).await?;
        }
        Framing::UntilEof => {
            (&mut *reader)
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body)
                .await?;
            if body.len() > MAX_BODY {
                return Err(invalid("body too large"));
            }
        }
        Framing::Chunked => loop {
            let line = read_line(reader, 1024)
                .await?
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(reader, MAX_HEAD)
                    .await?
                    .ok_or(io::ErrorKind::UnexpectedEof)?
                    .is_empty()
                {}
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("body too large"));
            }
            let at = body.len();
            body.resize(at + size, 0);
            reader.read_exact(&mut body[at..]).await?;
            if !read_line(reader, 2)
                .await?
                .ok_or(io::ErrorKind::UnexpectedEof)?
                .is_empty()
            {
                return Err(invalid("a chunk does not end with CRLF"));
            }
        },
    }
    Ok(body)
}

/// A whole message: `start`, `headers`, a `Content-Length`, `Connection:
/// close` if `close`, and `body`.
pub fn render<'a>(
    start: &str,
    headers: impl IntoIterator<Item = &'a (String, String)>,
    close: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{start}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n", body.len()));
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A response of the proxy's own: `status` with a JSON `body`, plus `extra` headers.
pub fn json_response(
    status: u16,
    extra: &[(String, String)],
    body: &serde_json::Value,
    close: bool,
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend_from_slice(extra);
    render(
        &format!("HTTP/1.1 {status} {reason}"),
        &headers,
        close,
        body.to_string().as_bytes(),
    )
}

/// Forwards a request to `upstream` (`host:port`) on a connection of its
/// own (`Connection: close`) and reads the whole answer. `host`: the
/// `Host` header to send (else the request's own).
pub async fn exchange(
    upstream: &str,
    head: &Head,
    body: &[u8],
    host: Option<&str>,
) -> io::Result<(Head, Vec<u8>)> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    let mut headers: Vec<(String, String)> = head
        .end_to_end()
        .filter(|(name, _)| host.is_none() || !name.eq_ignore_ascii_case("host"))
        .cloned()
        .collect();
    if let Some(host) = host {
        headers.insert(0, ("host".into(), host.to_owned()));
    }
    let request = render(&head.start, &headers, true, body);
    let exchange = async {
        stream.write_all(&request).await?;
        let mut reader = BufReader::new(&mut stream);
        let response = read_head(&mut reader)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let framing = response.response_framing(head.method())?;
        let body = read_body(&mut reader, framing).await?;
        Ok::<_, io::Error>((response, body))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8], method: Option<&str>) -> (Head, Vec<u8>) {
        let mut reader = BufReader::new(bytes);
        let head = read_head(&mut reader).await.unwrap().unwrap();
        let framing = match method {
            None => head.request_framing().unwrap(),
            Some(method) => head.response_framing(method).unwrap(),
        };
        let body = read_body(&mut reader, framing).await.unwrap();
        (head, body)
    }

    #[tokio::test]
    async fn requests_with_and_without_bodies() {
        let raw = b"\r\nPUT /_matrix/client/v3/rooms/x/send/m.room.message/t?user_id=%40a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        let mut reader = BufReader::new(&raw[..]);
        let head = read_head(&mut reader).await.unwrap().unwrap();
        assert_eq!(head.method(), "PUT");
        assert!(
            head.target()
                .starts_with("/_matrix/client/v3/rooms/x/send/")
        );
        assert_eq!(head.header("content-length"), Some("5"));
        assert!(!head.wants_close());
        let body = read_body(&mut reader, head.request_framing().unwrap())
            .await
            .unwrap();
        assert_eq!(body, b"hello");
        let next = read_head(&mut reader).await.unwrap().unwrap();
        assert_eq!(
            (next.method(), next.request_framing().unwrap()),
            ("GET", Framing::Length(0))
        );
        assert!(
            read_head(&mut reader).await.unwrap().is_none(),
            "the end of the stream"
        );
    }

    #[tokio::test]
    async fn responses_by_length_chunks_or_to_the_end() {
        let (head, body) = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            Some("GET"),
        )
        .await;
        assert_eq!((head.status(), body.as_slice()), (Some(200), &b"{}"[..]));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: 1\r\n\r\n";
        assert_eq!(parse(chunked, Some("GET")).await.1, b"Wikipedia");
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", Some("GET"))
                .await
                .1,
            b"until the end"
        );
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n", Some("PUT"))
                .await
                .1,
            b""
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
                Some("HEAD")
            )
            .await
            .1,
            b""
        );
    }

    #[tokio::test]
    async fn broken_messages_are_errors() {
        for raw in [
            &b"GET / HTTP/1.1\r\nno colon\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: cut",
            b"GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut reader = BufReader::new(raw);
            let result = match read_head(&mut reader).await {
                Ok(Some(head)) => match head.request_framing() {
                    Ok(framing) => read_body(&mut reader, framing).await.map(drop),
                    Err(err) => Err(err),
                },
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            };
            assert!(result.is_err(), "{}", String::from_utf8_lossy(raw));
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(
            read_head(&mut BufReader::new(long.as_bytes()))
                .await
                .is_err()
        );
    }

    #[test]
    fn close_is_asked_for_explicitly_or_by_http_1_0() {
        let head = |start: &str, connection: Option<&str>| Head {
            start: start.into(),
            headers: connection
                .map(|c| vec![("Connection".to_owned(), c.to_owned())])
                .unwrap_or_default(),
        };
        assert!(head("GET / HTTP/1.1", Some("Close")).wants_close());
        assert!(!head("GET / HTTP/1.1", None).wants_close());
        assert!(head("GET / HTTP/1.0", None).wants_close());
        assert!(!head("GET / HTTP/1.0", Some("keep-alive")).wants_close());
    }

    #[test]
    fn rendered_messages_carry_their_length_and_no_hop_by_hop_headers() {
        let head = Head {
            start: "HTTP/1.1 200 OK".into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Transfer-Encoding".into(), "chunked".into()),
                ("Connection".into(), "keep-alive".into()),
            ],
        };
        let bytes = render(&head.start, head.end_to_end(), true, b"{}");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        );
        let own = json_response(
            429,
            &[("retry-after".into(), "2".into())],
            &serde_json::json!({"a": 1}),
            false,
        );
        assert!(String::from_utf8(own).unwrap().starts_with(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 2\r\n"
        ));
    }
}
