//! A TCP proxy in front of the emulator (moto) that, on demand, refuses
//! connections for a while: it stops listening (a connect is refused) and
//! cuts the connections it carries, then listens again on the same port.
//! moto itself keeps running, so no state is lost: this is the emulator
//! "briefly refusing connections", as DynamoDB and SQS unreachable from a
//! function look.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How long connecting to the emulator may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct Counts {
    windows: AtomicU64,
    cut: AtomicU64,
    carried: AtomicU64,
}

/// A running refusing proxy. Dropping it stops it.
pub struct Refuser {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Duration>,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Refuser {
    /// Listens on `listen` (port 0: any free port) and carries connections
    /// to `upstream` (`host:port`).
    pub async fn start(listen: SocketAddr, upstream: String) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(run(listener, addr, upstream, receiver, counts.clone()));
        Ok(Self {
            addr,
            commands,
            counts,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses connections for `window`, from now (after any window
    /// already asked for).
    pub fn refuse_for(&self, window: Duration) {
        let _ = self.commands.send(window);
    }

    /// Windows begun, connections cut, connections carried.
    pub fn counts(&self) -> (u64, u64, u64) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (
            load(&self.counts.windows),
            load(&self.counts.cut),
            load(&self.counts.carried),
        )
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: String,
    mut commands: mpsc::UnboundedReceiver<Duration>,
    counts: Arc<Counts>,
) {
    let mut listener = listener;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    counts.carried.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(carry(client, upstream.clone()));
                }
            }
            command = commands.recv() => {
                let Some(window) = command else { return };
                counts.windows.fetch_add(1, Ordering::Relaxed);
                drop(listener);
                counts.cut.fetch_add(connections.len() as u64, Ordering::Relaxed);
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                tokio::time::sleep(window).await;
                listener = loop {
                    match TcpListener::bind(addr).await {
                        Ok(listener) => break listener,
                        // The old socket may linger a moment.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn carry(mut client: TcpStream, upstream: String) {
    let Ok(Ok(mut server)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&upstream)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// Refuses for `window` every `every`, for good (the command line's
/// `--refuse-every`); the first window begins after `every`.
pub async fn refuse_periodically(refuser: &Refuser, every: Duration, window: Duration) {
    loop {
        tokio::time::sleep(every).await;
        refuser.refuse_for(window);
        tokio::time::sleep(window).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server; its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> io::Result<()> {
        stream.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await?;
        assert_eq!(&answer, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn it_refuses_for_a_window_then_carries_again() {
        let refuser = Refuser::start("127.0.0.1:0".parse().unwrap(), echo().await.to_string())
            .await
            .unwrap();
        let mut open = TcpStream::connect(refuser.addr()).await.unwrap();
        round_trip(&mut open).await.unwrap();

        refuser.refuse_for(Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = TcpStream::connect(refuser.addr()).await;
        assert_eq!(
            refused.err().map(|err| err.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
        assert!(
            round_trip(&mut open).await.is_err(),
            "the open connection was cut"
        );

        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut again = TcpStream::connect(refuser.addr()).await.unwrap();
        round_trip(&mut again).await.unwrap();
        let (windows, cut, carried) = refuser.counts();
        assert_eq!((windows, cut, carried), (1, 1, 2));
    }
}
