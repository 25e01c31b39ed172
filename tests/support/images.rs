//! A web server on loopback for avatar fetches in tests: a few fixed
//! answers (images, a text file, redirects to private addresses), counting
//! the requests it gets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A web server on loopback with a few fixed answers, counting requests.
pub struct ImageServer {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

/// A PNG header, all the media checks read, padded to `size` bytes.
pub fn png(size: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0]);
    bytes.resize(size.max(bytes.len()), 0);
    bytes
}

impl ImageServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (head, body) = match path.as_str() {
                    "/a.png" | "/b.png" => {
                        ("200 OK\r\nContent-Type: image/png".to_owned(), png(64))
                    }
                    "/big.png" => ("200 OK\r\nContent-Type: image/png".to_owned(), png(4096)),
                    "/text" => (
                        "200 OK\r\nContent-Type: text/plain".to_owned(),
                        b"hello".to_vec(),
                    ),
                    "/to-a" => ("302 Found\r\nLocation: /a.png".to_owned(), Vec::new()),
                    "/to-metadata" => (
                        "302 Found\r\nLocation: http://169.254.169.254/latest/meta-data".to_owned(),
                        Vec::new(),
                    ),
                    "/to-private" => (
                        "302 Found\r\nLocation: https://10.0.0.1/a.png".to_owned(),
                        Vec::new(),
                    ),
                    _ => ("404 Not Found".to_owned(), Vec::new()),
                };
                let response = format!(
                    "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            }
        });
        Self { addr, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
