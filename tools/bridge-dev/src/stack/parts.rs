//! The stack's parts as processes: each part NAME has `.local/run/NAME.pid`
//! (its pid), `NAME.url` (where it answers) and `NAME.stamp` (what it was
//! started with; another stamp means a restart).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A part of the local stack, in start order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// moto: DynamoDB and SQS.
    Moto,
    Synapse,
    /// `bridge-dev gateway`: the front door and the functions behind it.
    Gateway,
    /// `bridge-dev retry --follow`: the retry queue fed to the retry function.
    Retry,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Moto, Part::Synapse, Part::Gateway, Part::Retry];

    pub fn name(self) -> &'static str {
        match self {
            Part::Moto => "moto",
            Part::Synapse => "synapse",
            Part::Gateway => "gateway",
            Part::Retry => "retry",
        }
    }

    /// What the part's command line contains (guards against a reused pid).
    pub fn marker(self) -> &'static str {
        match self {
            Part::Moto => "moto_server",
            Part::Synapse => "synapse.app.homeserver",
            Part::Gateway | Part::Retry => "bridge-dev",
        }
    }

    /// The path under its URL that answers 2xx once it is ready.
    pub fn health_path(self) -> Option<&'static str> {
        match self {
            Part::Moto => Some("/moto-api/"),
            Part::Synapse => Some("/_matrix/client/versions"),
            Part::Gateway => Some("/healthz"),
            Part::Retry => None,
        }
    }
}

/// What `up` does with a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Running with the wanted stamp.
    Keep,
    Start,
    /// Running with another stamp (its config changed).
    Restart,
}

/// What to do with a part that is running (or not), started with
/// `recorded` when `wanted` is what it should run with now.
pub fn plan(running: bool, recorded: Option<&str>, wanted: &str) -> Action {
    match (running, recorded) {
        (false, _) => Action::Start,
        (true, Some(stamp)) if stamp == wanted => Action::Keep,
        (true, _) => Action::Restart,
    }
}

/// `.local/run/`: the parts' pid, url and stamp files.
#[derive(Clone, Debug)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self, part: Part, extension: &str) -> PathBuf {
        self.dir.join(format!("{}.{extension}", part.name()))
    }

    /// The pid of the running part. A pid file whose process is gone (or is
    /// another program now) is removed, with the stamp.
    pub fn running(&self, part: Part) -> Option<u32> {
        self.running_as(part, part.marker())
    }

    fn running_as(&self, part: Part, marker: &str) -> Option<u32> {
        let text = fs::read_to_string(self.file(part, "pid")).ok()?;
        match text.trim().parse::<u32>() {
            Ok(pid) if alive(pid, marker) => Some(pid),
            _ => {
                self.forget(part);
                None
            }
        }
    }

    pub fn stamp(&self, part: Part) -> Option<String> {
        read_line(&self.file(part, "stamp"))
    }

    pub fn url(&self, part: Part) -> Option<String> {
        read_line(&self.file(part, "url"))
    }

    /// Records a started part.
    pub fn record(&self, part: Part, pid: u32, url: &str, stamp: &str) -> std::io::Result<()> {
        fs::write(self.file(part, "pid"), format!("{pid}\n"))?;
        fs::write(self.file(part, "url"), format!("{url}\n"))?;
        fs::write(self.file(part, "stamp"), format!("{stamp}\n"))
    }

    /// Forgets a part (after it stopped).
    pub fn forget(&self, part: Part) {
        for extension in ["pid", "stamp", "url"] {
            let _ = fs::remove_file(self.file(part, extension));
        }
    }

    /// Whether the last `up` left the retry poller off on purpose.
    pub fn poller_off(&self) -> bool {
        self.file(Part::Retry, "off").exists()
    }

    pub fn set_poller_off(&self, off: bool) -> std::io::Result<()> {
        let marker = self.file(Part::Retry, "off");
        if off {
            fs::write(marker, "BRIDGE_SKIP_RETRY_POLLER=1 at the last up\n")
        } else {
            match fs::remove_file(marker) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            }
        }
    }
}

fn read_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// The process exists, is not a zombie and its command line contains
/// `marker`.
pub fn alive(pid: u32, marker: &str) -> bool {
    let Some(raw) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::test_kill_process(raw).is_err() {
        return false;
    }
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if let Ok(stat) = fs::read_to_string(proc.join("stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state == Some("Z") || state == Some("X") {
            return false;
        }
    }
    match fs::read(proc.join("cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(marker),
        // No /proc: trust the pid.
        Err(_) => true,
    }
}

/// Sends `signal` to `pid`; false when there is no such process.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|pid| rustix::process::kill_process(pid, signal).is_ok())
}

/// `url` (`http://host:port/path`) answers with a 2xx status within 2 s.
/// Plain HTTP/1.1 over a socket: no proxy settings apply on loopback.
pub fn http_ok(url: &str) -> bool {
    http_status(url).is_some_and(|status| (200..300).contains(&status))
}

fn http_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority.to_socket_addrs().ok()?.next()?;
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).ok()?;
    let mut words = status_line.split_whitespace();
    words
        .next()
        .filter(|version| version.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// Something listens on `127.0.0.1:port`.
pub fn port_busy(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Whether `port` is still taken after waiting up to `patience` for it to
/// be given up.
pub fn port_busy_for(port: u16, patience: Duration) -> bool {
    let deadline = std::time::Instant::now() + patience;
    while port_busy(port) {
        if std::time::Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A line of `stack status`.
pub fn status_line(part: Part, pid: Option<u32>, url: Option<&str>, note: &str) -> String {
    match pid {
        Some(pid) => format!(
            "{:<8} running  pid {:<7} {}{}",
            part.name(),
            pid,
            url.unwrap_or("-"),
            note
        ),
        None => format!("{:<8} stopped{}", part.name(), note),
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn plan_keeps_starts_and_restarts() {
        assert_eq!(plan(false, None, "a"), Action::Start);
        assert_eq!(plan(false, Some("a"), "a"), Action::Start);
        assert_eq!(plan(true, Some("a"), "a"), Action::Keep);
        assert_eq!(plan(true, Some("b"), "a"), Action::Restart);
        assert_eq!(plan(true, None, "a"), Action::Restart);
    }

    fn own_marker() -> String {
        // A piece of this test binary's command line.
        let exe = std::env::args().next().unwrap();
        Path::new(&exe)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_live_process_with_its_marker_is_alive() {
        let me = std::process::id();
        assert!(alive(me, &own_marker()));
        assert!(!alive(me, "synapse.app.homeserver"), "a reused pid");
        assert!(!alive(u32::MAX, ""));
        assert!(!alive(0, ""));
    }

    #[test]
    fn pid_files_of_running_parts_are_kept_and_stale_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        assert_eq!(run.running(Part::Moto), None);

        let me = std::process::id();
        run.record(Part::Gateway, me, "http://127.0.0.1:1", "stamp-1")
            .unwrap();
        // This test binary is no `bridge-dev`: a pid reused by another program.
        assert_eq!(run.running(Part::Gateway), None);
        assert!(!run.file(Part::Gateway, "pid").exists());
        assert!(!run.file(Part::Gateway, "stamp").exists());

        fs::write(run.file(Part::Synapse, "pid"), "not a pid\n").unwrap();
        assert_eq!(run.running(Part::Synapse), None);
        assert!(!run.file(Part::Synapse, "pid").exists());

        run.record(Part::Moto, u32::MAX - 1, "http://127.0.0.1:2", "port=2")
            .unwrap();
        assert_eq!(run.running(Part::Moto), None, "a process that is gone");

        // A live process: kept, with its url and stamp.
        run.record(Part::Retry, me, "-", "stamp-2").unwrap();
        let pid_file = run.file(Part::Retry, "pid");
        assert_eq!(fs::read_to_string(&pid_file).unwrap(), format!("{me}\n"));
        assert_eq!(run.running_as(Part::Retry, &own_marker()), Some(me));
        assert_eq!(run.stamp(Part::Retry).as_deref(), Some("stamp-2"));
        assert_eq!(run.url(Part::Retry).as_deref(), Some("-"));
        run.forget(Part::Retry);
        assert_eq!(run.stamp(Part::Retry), None);
        assert!(!pid_file.exists());
    }

    #[test]
    fn the_poller_off_marker_comes_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        assert!(!run.poller_off());
        run.set_poller_off(true).unwrap();
        assert!(run.poller_off());
        run.set_poller_off(false).unwrap();
        run.set_poller_off(false).unwrap();
        assert!(!run.poller_off());
    }

    /// A one-shot HTTP server answering `status_line`; its URL.
    fn answer_once(status_line: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while reader.read_line(&mut request).is_ok_and(|n| n > 2) {
                    request.clear();
                }
                let _ = write!(stream, "{status_line}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        format!("http://127.0.0.1:{port}/healthz")
    }

    #[test]
    fn readiness_is_a_2xx_answer() {
        assert!(http_ok(&answer_once("HTTP/1.1 200 OK")));
        assert!(!http_ok(&answer_once("HTTP/1.1 503 Service Unavailable")));
        assert!(!http_ok(&answer_once("garbage")));
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        assert!(port_busy(port));
        drop(closed);
        assert!(!http_ok(&format!("http://127.0.0.1:{port}/")));
        assert!(!port_busy(port));
        assert!(!http_ok("https://127.0.0.1:1/"));
    }

    #[test]
    fn status_lines_line_up() {
        assert_eq!(
            status_line(Part::Moto, Some(42), Some("http://127.0.0.1:15000"), ""),
            "moto     running  pid 42      http://127.0.0.1:15000"
        );
        assert_eq!(
            status_line(
                Part::Gateway,
                Some(1234567),
                Some("http://127.0.0.1:18080"),
                " (not answering)"
            ),
            "gateway  running  pid 1234567 http://127.0.0.1:18080 (not answering)"
        );
        assert_eq!(
            status_line(Part::Synapse, None, None, ""),
            "synapse  stopped"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        fs::write(&log, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&log, 2), "3\n4");
        assert_eq!(tail(&log, 10), "1\n2\n3\n4");
        assert_eq!(tail(&dir.path().join("none"), 3), "");
    }
}
