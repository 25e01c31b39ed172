//! Fault injection for the delivery guarantees (`bridge-dev fault-proxy`, and
//! the fault suite in `tests/faults/`, which runs the same proxies in
//! process):
//!
//! - [`proxy::FaultProxy`]: an HTTP reverse proxy between the functions'
//!   appservice client and Synapse that delays, stalls, drops (before and
//!   after forwarding), resets and answers 5xx, 504 and 429 on a seeded,
//!   reproducible [`schedule::Schedule`];
//! - [`refuser::Refuser`]: a TCP proxy in front of the emulator that refuses
//!   connections for a window.
//!
//! ```text
//! bridge-dev fault-proxy [--listen 127.0.0.1:18009] [--upstream http://127.0.0.1:18008]
//!                        [--seed N] [--schedule default] [--refuse-body TEXT] [--upstream-down 502|close]
//! bridge-dev fault-proxy --tcp [--listen 127.0.0.1:15001] --upstream 127.0.0.1:15000
//!                        [--refuse-every SECS --refuse-for SECS]
//!                        [--dynamodb-one-at-a-time] [--dynamodb-conflict-ms MS]
//! ```
//!
//! Point `MATRIX_HOMESERVER_URL` of the functions (the front door, the retry
//! poller) at the HTTP proxy, or `AWS_ENDPOINT_URL` at the TCP one. It logs a
//! line per request to stderr and prints its counts when stopped (Ctrl-C or
//! TERM); `GET /_fault/stats` answers them meanwhile.

pub mod http;
pub mod proxy;
pub mod refuser;
pub mod schedule;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bridge::runtime::BoxError;
use tokio::signal::unix::{SignalKind, signal};

use proxy::{DownAnswer, FaultProxy, ProxyConfig};
use refuser::{Carry, Refuser};
use schedule::{Profile, Schedule};

pub const USAGE: &str = "usage: bridge-dev fault-proxy [--listen ADDR] [--upstream URL] [--seed N] [--schedule SPEC]
                              [--refuse-body TEXT] [--upstream-down 502|close]
       bridge-dev fault-proxy --tcp [--listen ADDR] --upstream HOST:PORT [--refuse-every SECS --refuse-for SECS]
                              [--dynamodb-one-at-a-time] [--dynamodb-conflict-ms MS]
SPEC: a preset (none, mild, default, harsh), then name=value overrides, e.g.
      default,stall=0,drop_after=5,delay_ms=20-800 (chances in percent, parameters in ms);
      faults: delay stall drop_before drop_after reset server_error gateway_timeout rate_limit";

/// `host:port` of an `http://host:port[/...]` URL (or of `host:port`).
pub fn authority(url: &str) -> Result<String, BoxError> {
    if url.starts_with("https://") {
        return Err(format!("{url}: the fault proxy speaks plain HTTP only").into());
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || !authority.contains(':') {
        return Err(format!("{url}: expected http://host:port").into());
    }
    Ok(authority.to_owned())
}

/// The command line's options.
#[derive(Debug, PartialEq)]
struct Options {
    tcp: bool,
    listen: Option<SocketAddr>,
    upstream: Option<String>,
    seed: Option<u64>,
    profile: Profile,
    refuse_body: Option<String>,
    upstream_down: DownAnswer,
    refuse_every: Option<Duration>,
    refuse_for: Option<Duration>,
    serialize_dynamodb: bool,
    conflict_window: Option<Duration>,
}

fn parse(args: &[String]) -> Result<Options, BoxError> {
    let mut options = Options {
        tcp: false,
        listen: None,
        upstream: None,
        seed: None,
        profile: Profile::parse("default")?,
        refuse_body: None,
        upstream_down: DownAnswer::BadGateway,
        refuse_every: None,
        refuse_for: None,
        serialize_dynamodb: false,
        conflict_window: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--tcp" {
            options.tcp = true;
            continue;
        }
        if arg == "--dynamodb-one-at-a-time" {
            options.serialize_dynamodb = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        let seconds = |value: &str| -> Result<Duration, BoxError> {
            Ok(Duration::from_secs_f64(value.parse::<f64>().map_err(
                |_| format!("{arg}: {value:?} is not a number of seconds"),
            )?))
        };
        match arg.as_str() {
            "--listen" => options.listen = Some(value.parse()?),
            "--upstream" => options.upstream = Some(value.clone()),
            "--seed" => options.seed = Some(value.parse()?),
            "--schedule" => options.profile = Profile::parse(value)?,
            "--refuse-body" => options.refuse_body = Some(value.clone()),
            "--upstream-down" => {
                options.upstream_down = match value.as_str() {
                    "502" => DownAnswer::BadGateway,
                    "close" => DownAnswer::Close,
                    _ => return Err(format!("--upstream-down: 502 or close, not {value:?}").into()),
                }
            }
            "--refuse-every" => options.refuse_every = Some(seconds(value)?),
            "--refuse-for" => options.refuse_for = Some(seconds(value)?),
            "--dynamodb-conflict-ms" => {
                options.conflict_window = Some(Duration::from_millis(value.parse()?))
            }
            _ => return Err(format!("unknown option {arg}\n{USAGE}").into()),
        }
    }
    Ok(options)
}

/// A seed from the clock, for a run without `--seed` (printed, so it can
/// be replayed).
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Runs `bridge-dev fault-proxy ARGS` until Ctrl-C or TERM.
pub fn main(runtime: &tokio::runtime::Runtime, args: &[String]) -> Result<ExitCode, BoxError> {
    if args
        .iter()
        .any(|arg| matches!(arg.as_str(), "-h" | "--help"))
    {
        std::io::Write::write_all(&mut std::io::stdout(), format!("{USAGE}\n").as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = parse(args)?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let stopped = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        if options.tcp {
            let listen = options
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 15001)));
            let upstream = authority(
                options
                    .upstream
                    .as_deref()
                    .ok_or("--tcp needs --upstream HOST:PORT")?,
            )?;
            let carry = match (options.serialize_dynamodb, options.conflict_window) {
                (_, Some(window)) => Carry::DynamoDb {
                    conflict_window: Some(window),
                },
                (true, None) => Carry::DynamoDb {
                    conflict_window: None,
                },
                (false, None) => Carry::Bytes,
            };
            let refuser = Refuser::start(listen, upstream.clone(), carry).await?;
            eprintln!("fault-proxy: tcp {} -> {upstream}", refuser.addr());
            let periodic = async {
                match (options.refuse_every, options.refuse_for) {
                    (Some(every), Some(window)) => {
                        refuser::refuse_periodically(&refuser, every, window).await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped => {}
                _ = periodic => {}
            }
            let (windows, cut, carried) = refuser.counts();
            eprintln!(
                "fault-proxy: {carried} connections carried, {windows} refusal windows, {cut} cut"
            );
        } else {
            let listen = options
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 18009)));
            let upstream = match options.upstream {
                Some(url) => url,
                None => std::env::var("MATRIX_HOMESERVER_URL")
                    .map_err(|_| "--upstream (or MATRIX_HOMESERVER_URL) names the homeserver")?,
            };
            let seed = options.seed.unwrap_or_else(clock_seed);
            let proxy = FaultProxy::start(
                listen,
                ProxyConfig {
                    upstream: authority(&upstream)?,
                    schedule: Schedule::seeded(seed, options.profile),
                    refuse_marker: options.refuse_body,
                    upstream_down: options.upstream_down,
                    log: Some(Box::new(std::io::stderr())),
                },
            )
            .await?;
            stopped.await;
            eprintln!("fault-proxy: seed {seed}: {}", proxy.stats());
        }
        Ok::<_, BoxError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse() {
        let options = parse(&args(
            "--listen 127.0.0.1:1 --upstream http://127.0.0.1:2 --seed 7 --schedule mild,reset=3 --upstream-down close --refuse-body #x",
        ))
        .unwrap();
        assert_eq!(options.seed, Some(7));
        assert_eq!(options.listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(options.profile, Profile::parse("mild,reset=3").unwrap());
        assert_eq!(options.upstream_down, DownAnswer::Close);
        assert_eq!(options.refuse_body.as_deref(), Some("#x"));
        let tcp = parse(&args(
            "--tcp --upstream 127.0.0.1:3 --refuse-every 30 --refuse-for 2.5",
        ))
        .unwrap();
        assert!(tcp.tcp);
        assert_eq!(tcp.refuse_for, Some(Duration::from_millis(2500)));
        for bad in [
            "--seed",
            "--seed x",
            "--nope 1",
            "--upstream-down 503",
            "--schedule bogus=1",
            "--refuse-for x",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstreams_are_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:18008").unwrap(),
            "127.0.0.1:18008"
        );
        assert_eq!(
            authority("http://127.0.0.1:18008/x").unwrap(),
            "127.0.0.1:18008"
        );
        assert_eq!(authority("127.0.0.1:15000").unwrap(), "127.0.0.1:15000");
        assert!(authority("https://matrix.org:443").is_err());
        assert!(authority("http://nohost").is_err());
    }
}
