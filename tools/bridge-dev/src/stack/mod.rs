//! `bridge-dev stack`: the local stack's supervisor. moto (DynamoDB and SQS),
//! Synapse, the front door (`bridge-dev gateway`) and the retry poller
//! (`bridge-dev retry --follow`), all on loopback, all state in `.local/`.
//!
//! - `up`: starts whatever is not running (and restarts a part whose stamp,
//!   what it was started with, changed), creates the table and queues,
//!   writes `.local/stack.env`, and returns when every part answers;
//! - `down [--purge]`: stops everything (TERM, then KILL after 20 s);
//!   `--purge` also wipes Synapse's data and `stack.env`; `reset` is the same;
//! - `status`: one line per part; exit 0 if all run, else 3;
//! - `dev`: up, `scripts/demo`, wait for Ctrl-C, down (`make dev`).
//!
//! Ports come from `MOTO_PORT`, `SYNAPSE_PORT` and `GATEWAY_PORT`;
//! `BRIDGE_SKIP_RETRY_POLLER=1` makes `up` leave the retry poller stopped
//! (the tests drive the retry handler themselves). The tools themselves
//! (Synapse, moto) are installed by `scripts/install-tools`, which `up` runs.

pub mod env;
pub mod parts;
pub mod synapse;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bridge::runtime::BoxError;
use rustix::process::Signal;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use crate::{registration, setup};
use env::Secrets;
use parts::{Action, Part, RunDir};

pub const USAGE: &str = "usage: bridge-dev stack up | down [--purge] | reset | status | dev";

/// moto's server as the stack runs it: requests one at a time and
/// three of moto's defects fixed (the file says which and why).
pub const MOTO_SERVER: &str = include_str!("../../moto/moto_server.py");
/// How long `down` waits for a part to stop on TERM before killing it.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long a second caller waits for the first to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(250);

/// Where the stack keeps things, under the repository's `.local/`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub local: PathBuf,
    pub run: PathBuf,
    pub logs: PathBuf,
    pub stack_env: PathBuf,
    pub secrets_env: PathBuf,
    pub synapse_venv: PathBuf,
    pub synapse_data: PathBuf,
    pub tools_venv: PathBuf,
    pub registration: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        let local = root.join(".local");
        let synapse_venv = local.join("synapse");
        Self {
            run: local.join("run"),
            logs: local.join("logs"),
            stack_env: local.join("stack.env"),
            secrets_env: local.join("secrets.env"),
            synapse_data: local.join("synapse-data"),
            tools_venv: local.join("tools"),
            registration: synapse_venv.join("registration.yaml"),
            synapse_venv,
            local,
            root,
        }
    }

    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.pid"))
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

/// The stack's ports on 127.0.0.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub moto: u16,
    pub synapse: u16,
    pub gateway: u16,
}

impl Ports {
    /// `MOTO_PORT` (15000), `SYNAPSE_PORT` (18008), `GATEWAY_PORT` (18080).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, BoxError> {
        let port = |name: &str, default: u16| -> Result<u16, BoxError> {
            match get(name).filter(|value| !value.trim().is_empty()) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| format!("{name} must be a port number, not {value:?}").into()),
            }
        };
        Ok(Self {
            moto: port("MOTO_PORT", 15000)?,
            synapse: port("SYNAPSE_PORT", 18008)?,
            gateway: port("GATEWAY_PORT", 18080)?,
        })
    }

    pub fn moto_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto)
    }

    pub fn synapse_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.synapse)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway)
    }

    /// Where `part` answers (`-` for the poller, which does not).
    pub fn url(&self, part: Part) -> String {
        match part {
            Part::Moto => self.moto_url(),
            Part::Synapse => self.synapse_url(),
            Part::Gateway => self.gateway_url(),
            Part::Retry => "-".into(),
        }
    }

    /// The port `part` listens on, and the variable that moves it.
    pub fn port(&self, part: Part) -> Option<(u16, &'static str)> {
        match part {
            Part::Moto => Some((self.moto, "MOTO_PORT")),
            Part::Synapse => Some((self.synapse, "SYNAPSE_PORT")),
            Part::Gateway => Some((self.gateway, "GATEWAY_PORT")),
            Part::Retry => None,
        }
    }
}

/// The repository: `BRIDGE_DEV_ROOT` (set by `scripts/stack`), else the
/// nearest directory above the current one that holds `template.yaml` and
/// `tools/bridge-dev/`.
pub fn find_root() -> Result<PathBuf, BoxError> {
    if let Some(root) = std::env::var_os("BRIDGE_DEV_ROOT").filter(|root| !root.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .find(|dir| {
            dir.join("template.yaml").is_file() && dir.join("tools/bridge-dev/Cargo.toml").is_file()
        })
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            "not in the repository: run scripts/stack, or bridge-dev stack from the repository"
                .into()
        })
}

fn say(message: impl std::fmt::Display) {
    eprintln!("stack: {message}");
}

/// Runs `bridge-dev stack ARGS`.
pub fn main(runtime: &tokio::runtime::Runtime, args: &[String]) -> Result<ExitCode, BoxError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let usage = || {
        eprintln!("{USAGE}");
        Ok(ExitCode::from(2))
    };
    let command = match args.as_slice() {
        [command] => *command,
        ["down", "--purge"] => "reset",
        _ => return usage(),
    };
    if matches!(command, "-h" | "--help" | "help") {
        std::io::stdout()
            .lock()
            .write_all(format!("{USAGE}\n").as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let layout = Layout::new(find_root()?);
    let ports = Ports::from_env(|name| std::env::var(name).ok())?;
    let mut stack = Stack::new(layout, ports, runtime);
    match command {
        "up" => {
            let poller = std::env::var("BRIDGE_SKIP_RETRY_POLLER").as_deref() != Ok("1");
            stack.up(poller)?;
        }
        "down" => stack.down(false)?,
        "reset" => stack.down(true)?,
        "status" => {
            return Ok(if stack.status()? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
        "dev" => stack.dev()?,
        _ => return usage(),
    }
    Ok(ExitCode::SUCCESS)
}

/// The supervisor: starts, watches and stops the parts.
pub struct Stack<'a> {
    layout: Layout,
    ports: Ports,
    run: RunDir,
    runtime: &'a tokio::runtime::Runtime,
    /// The parts this process started, to reap them when they end.
    children: Vec<Child>,
}

/// Held while `up` or `down` works; a second caller waits for it.
struct Lock(#[allow(dead_code)] fs::File);

impl<'a> Stack<'a> {
    pub fn new(layout: Layout, ports: Ports, runtime: &'a tokio::runtime::Runtime) -> Self {
        Self {
            run: RunDir::new(&layout.run),
            layout,
            ports,
            runtime,
            children: Vec::new(),
        }
    }

    fn lock(&self) -> Result<Lock, BoxError> {
        let path = self.layout.run.join("stack.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock(file)),
                Err(fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err("another `bridge-dev stack` is still running".into());
                    }
                    if !told {
                        say("waiting for another `bridge-dev stack` to finish");
                        told = true;
                    }
                    std::thread::sleep(POLL);
                }
                Err(fs::TryLockError::Error(err)) => return Err(err.into()),
            }
        }
    }

    fn prepare_dirs(&self) -> Result<(), BoxError> {
        if self
            .layout
            .root
            .to_string_lossy()
            .contains(char::is_whitespace)
        {
            return Err(
                "the repository path contains whitespace; stack.env cannot represent it".into(),
            );
        }
        for dir in [
            &self.layout.local,
            &self.layout.run,
            &self.layout.logs,
            &self.layout.synapse_data,
        ] {
            fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    // --- up ---------------------------------------------------------------

    /// Starts whatever is not running and returns when everything answers.
    /// `poller`: run the retry poller (else stop it).
    pub fn up(&mut self, poller: bool) -> Result<(), BoxError> {
        self.prepare_dirs()?;
        let _lock = self.lock()?;
        self.install_tools()?;
        let secrets = env::ensure_secrets(&self.layout.secrets_env)?;

        // The slow parts first, together.
        self.start_moto()?;
        self.start_synapse(&secrets)?;
        self.wait_ready(Part::Moto, Duration::from_secs(60))?;
        self.wait_ready(Part::Synapse, Duration::from_secs(90))?;

        let queue_urls = self.setup()?;
        let pairs = env::stack_env(&self.layout, &self.ports, &secrets, &queue_urls);
        env::write_private(&self.layout.stack_env, env::render(&pairs).as_bytes())?;

        let stamp = self.bridge_dev_stamp()?;
        self.start_bridge_dev(Part::Gateway, &pairs, &stamp)?;
        if poller {
            self.run.set_poller_off(false)?;
            self.start_bridge_dev(Part::Retry, &pairs, &stamp)?;
        } else {
            if self.run.running(Part::Retry).is_some() {
                say("BRIDGE_SKIP_RETRY_POLLER=1: stopping the retry poller");
            }
            self.stop(Part::Retry);
            self.run.set_poller_off(true)?;
        }
        self.wait_ready(Part::Gateway, Duration::from_secs(60))?;
        if poller && self.run.running(Part::Retry).is_none() {
            return Err(self.failure(Part::Retry, "exited during startup"));
        }
        say(format!(
            "ready: Synapse {}, moto {}, gateway {}{}",
            self.ports.synapse_url(),
            self.ports.moto_url(),
            self.ports.gateway_url(),
            if poller { ", retry poller" } else { "" }
        ));
        say("environment in .local/stack.env, logs in .local/logs/");
        Ok(())
    }

    fn install_tools(&self) -> Result<(), BoxError> {
        let script = self.layout.root.join("scripts/install-tools");
        let status = Command::new(&script)
            .current_dir(&self.layout.root)
            .stdin(Stdio::null())
            .status()
            .map_err(|err| format!("{}: {err}", script.display()))?;
        if !status.success() {
            return Err(format!("scripts/install-tools failed ({status})").into());
        }
        Ok(())
    }

    fn start_moto(&mut self) -> Result<(), BoxError> {
        let port = self.ports.moto.to_string();
        let server = self.layout.local.join("moto_server.py");
        fs::write(&server, MOTO_SERVER)?;
        let mut command = Command::new(self.layout.tools_venv.join("bin/python"));
        command
            .arg(&server)
            .args(["-H", "127.0.0.1", "-p", &port])
            .env("MOTO_PORT", &port)
            .current_dir(&self.layout.local);
        // Restart a running moto whose port or server changed.
        let server_hash = Sha256::digest(MOTO_SERVER.as_bytes());
        self.ensure(
            Part::Moto,
            &format!("port={port} server={server_hash:x}"),
            command,
        )
    }

    fn start_synapse(&mut self, secrets: &Secrets) -> Result<(), BoxError> {
        let layout = &self.layout;
        // The functions' own settings, as the stack gives them the gateway.
        let settings: std::collections::HashMap<String, String> =
            env::stack_env(layout, &self.ports, secrets, &[])
                .into_iter()
                .collect();
        let registration =
            registration::render(&bridge::config::RegistrationConfig::from_env(&settings)?)?;
        if let Some(dir) = layout.registration.parent() {
            fs::create_dir_all(dir)?;
        }
        env::write_private(&layout.registration, registration.as_bytes())?;

        let data = &layout.synapse_data;
        let generated = data.join("homeserver.generated.yaml");
        if !generated.exists() {
            self.generate_synapse_config(&generated)?;
        }
        fs::set_permissions(&generated, fs::Permissions::from_mode(0o600))?;
        fs::write(data.join("log.config"), synapse::LOG_CONFIG)?;
        let homeserver = synapse::render_homeserver(
            &fs::read_to_string(&generated)?,
            synapse::OVERLAY,
            &synapse::HomeserverSettings {
                port: self.ports.synapse,
                data_dir: data,
                registration: &layout.registration,
                registration_shared_secret: secrets.registration_shared_secret.expose(),
            },
        )?;
        let config = data.join("homeserver.yaml");
        env::write_private(&config, homeserver.as_bytes())?;

        // Restart a running Synapse whose config or registration changed.
        let stamp = format!(
            "{:x}",
            Sha256::new()
                .chain_update(homeserver.as_bytes())
                .chain_update(registration.as_bytes())
                .finalize()
        );
        let mut command = Command::new(layout.synapse_venv.join("bin/python"));
        command
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .current_dir(data);
        self.ensure(Part::Synapse, &stamp, command)
    }

    /// Synapse's own config (`--generate-config`): it names the signing key
    /// and holds the macaroon and form secrets; kept across ups.
    fn generate_synapse_config(&self, generated: &Path) -> Result<(), BoxError> {
        say("generating the Synapse config in .local/synapse-data");
        let data = &self.layout.synapse_data;
        let tmp = data.join("homeserver.generated.yaml.tmp");
        let log_path = self.layout.log("synapse");
        let log = append(&log_path)?;
        let status = Command::new(self.layout.synapse_venv.join("bin/python"))
            .args([
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                env::SERVER_NAME,
            ])
            .arg("--config-path")
            .arg(&tmp)
            .arg("--data-directory")
            .arg(data)
            .args(["--generate-config", "--report-stats=no"])
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()?;
        if !status.success() {
            eprintln!("{}", parts::tail(&log_path, 20));
            return Err("synapse --generate-config failed".into());
        }
        fs::rename(&tmp, generated)?;
        Ok(())
    }

    /// Creates the table and queues (idempotent; moto keeps them in memory,
    /// so every up does it) and returns the queue URLs for `stack.env`.
    fn setup(&self) -> Result<Vec<(String, String)>, BoxError> {
        let log_path = self.layout.log("setup");
        let mut log = append(&log_path)?;
        writeln!(log, "\n===== {}: table and queue setup =====", now())?;
        let created = self.runtime.block_on(async {
            let sdk = bridge::aws_http::loader()?
                .endpoint_url(self.ports.moto_url())
                .region(aws_config::Region::new(env::REGION))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    env::AWS_ACCESS_KEY,
                    env::AWS_ACCESS_KEY,
                    None,
                    None,
                    "bridge-dev-stack",
                ))
                .load()
                .await;
            setup::run(&sdk, env::TABLE, setup::QUEUES).await
        });
        match created {
            Ok(created) => {
                for line in created.lines() {
                    writeln!(log, "{line}")?;
                }
                Ok(created.queue_urls)
            }
            Err(err) => {
                let err = chain(err.as_ref());
                writeln!(log, "error: {err}")?;
                Err(
                    format!("the table and queue setup failed (see .local/logs/setup.log): {err}")
                        .into(),
                )
            }
        }
    }

    /// The binary the gateway and the poller run: this very one, through
    /// `/proc/self/exe` where there is one (the file at its path may have been
    /// rebuilt since it started), with its path as `argv[0]`.
    fn exe(&self) -> Result<(PathBuf, PathBuf), BoxError> {
        let path = std::env::current_exe()?;
        // Linux names a binary replaced since it started "... (deleted)".
        let path = match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
            Some(p) => PathBuf::from(p),
            None => path,
        };
        let this = Path::new("/proc/self/exe");
        Ok(if this.exists() {
            (this.to_path_buf(), path)
        } else {
            (path.clone(), path)
        })
    }

    /// The gateway and the poller restart when the binary or `stack.env` changed.
    fn bridge_dev_stamp(&self) -> Result<String, BoxError> {
        let meta = fs::metadata(self.exe()?.0)?;
        let mtime = meta.modified()?.duration_since(UNIX_EPOCH)?.as_secs();
        let env = fs::read(&self.layout.stack_env)?;
        Ok(format!("{mtime} {} {:x}", meta.len(), Sha256::digest(env)))
    }

    fn start_bridge_dev(
        &mut self,
        part: Part,
        pairs: &[(String, String)],
        stamp: &str,
    ) -> Result<(), BoxError> {
        let (exe, path) = self.exe()?;
        let mut command = Command::new(exe);
        // The command line must show the marker `running` looks for.
        if path.to_string_lossy().contains(part.marker()) {
            command.arg0(path);
        } else {
            command.arg0(part.marker());
        }
        match part {
            Part::Retry => command.args(["retry", "--follow"]),
            _ => command.arg("gateway"),
        };
        // Exactly stack.env on top of the caller's environment.
        command
            .envs(pairs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.layout.root);
        self.ensure(part, stamp, command)
    }

    /// Starts `part` with `command` unless it runs with `stamp`; restarts
    /// it if it runs with another.
    fn ensure(&mut self, part: Part, stamp: &str, command: Command) -> Result<(), BoxError> {
        let running = self.run.running(part).is_some();
        match parts::plan(running, self.run.stamp(part).as_deref(), stamp) {
            Action::Keep => return Ok(()),
            Action::Restart => {
                say(format!("{}'s settings or binary changed", part.name()));
                self.stop(part);
            }
            Action::Start => {}
        }
        // A part just stopped may hold its port for a moment longer.
        if let Some((port, variable)) = self.ports.port(part)
            && parts::port_busy_for(port, Duration::from_secs(5))
        {
            return Err(format!(
                "port {port} ({}) is in use by another process; set {variable}",
                part.name()
            )
            .into());
        }
        self.spawn(part, command, stamp)
    }

    /// Starts `command` in the background, in its own process group (a
    /// Ctrl-C meant for the caller does not reach it), output appended to
    /// `.local/logs/NAME.log`; records its pid, url and stamp.
    fn spawn(&mut self, part: Part, mut command: Command, stamp: &str) -> Result<(), BoxError> {
        let name = part.name();
        let mut log = append(&self.layout.log(name))?;
        writeln!(log, "\n===== {}: starting {name} =====", now())?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|err| {
                format!(
                    "could not start {name} ({:?}): {err}",
                    command.get_program()
                )
            })?;
        let pid = child.id();
        self.children.push(child);
        self.run.record(part, pid, &self.ports.url(part), stamp)?;
        say(format!(
            "started {name} (pid {pid}), log .local/logs/{name}.log"
        ));
        Ok(())
    }

    /// Waits until `part` answers; fails with the tail of its log if it
    /// exits or time runs out.
    fn wait_ready(&mut self, part: Part, timeout: Duration) -> Result<(), BoxError> {
        let url = format!(
            "{}{}",
            self.ports.url(part),
            part.health_path().unwrap_or("/")
        );
        let started = Instant::now();
        while !parts::http_ok(&url) {
            self.reap();
            match self.run.running(part) {
                None => return Err(self.failure(part, "exited during startup")),
                Some(pid) if started.elapsed() >= timeout => {
                    return Err(self.failure(
                        part,
                        &format!(
                            "(pid {pid}) not ready after {}s at {url}",
                            timeout.as_secs()
                        ),
                    ));
                }
                Some(_) => std::thread::sleep(POLL),
            }
        }
        Ok(())
    }

    fn failure(&self, part: Part, what: &str) -> BoxError {
        let name = part.name();
        say(format!(
            "{name} {what}; last lines of .local/logs/{name}.log:"
        ));
        eprintln!("{}", parts::tail(&self.layout.log(name), 40));
        format!("{name} {what}").into()
    }

    /// Reaps the parts this process started that have ended.
    fn reap(&mut self) {
        self.children
            .retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
    }

    // --- down -------------------------------------------------------------

    /// TERM, up to 20 s, then KILL.
    fn stop(&mut self, part: Part) {
        if let Some(pid) = self.run.running(part) {
            say(format!("stopping {} (pid {pid})", part.name()));
            parts::signal(pid, Signal::TERM);
            if !self.wait_gone(pid, part, STOP_GRACE) {
                say(format!("{} did not stop on TERM, killing it", part.name()));
                parts::signal(pid, Signal::KILL);
                self.wait_gone(pid, part, Duration::from_secs(5));
            }
        }
        self.run.forget(part);
    }

    fn wait_gone(&mut self, pid: u32, part: Part, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            self.reap();
            if !parts::alive(pid, part.marker()) {
                return true;
            }
            if started.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops everything; `purge` also removes Synapse's data and `stack.env`.
    pub fn down(&mut self, purge: bool) -> Result<(), BoxError> {
        fs::create_dir_all(&self.layout.run)?;
        let _lock = self.lock()?;
        for part in Part::ALL.into_iter().rev() {
            self.stop(part);
        }
        self.run.set_poller_off(false)?;
        if purge {
            say("removing .local/synapse-data and .local/stack.env");
            remove(fs::remove_dir_all(&self.layout.synapse_data))?;
            remove(fs::remove_file(&self.layout.stack_env))?;
        }
        say("stopped");
        Ok(())
    }

    // --- status -----------------------------------------------------------

    /// Prints one line per part; true if all run (a poller left off on
    /// purpose counts as fine).
    pub fn status(&self) -> Result<bool, BoxError> {
        fs::create_dir_all(&self.layout.run)?;
        let mut all = true;
        let mut lines = String::new();
        for part in Part::ALL {
            let line = match self.run.running(part) {
                Some(pid) => {
                    let url = self.run.url(part);
                    let note = match (part.health_path(), &url) {
                        (Some(path), Some(url)) if !parts::http_ok(&format!("{url}{path}")) => {
                            " (not answering)"
                        }
                        (None, _) => " (feeds the retry queue to the retry function)",
                        _ => "",
                    };
                    parts::status_line(part, Some(pid), url.as_deref(), note)
                }
                None if part == Part::Retry && self.run.poller_off() => format!(
                    "{:<8} off      (BRIDGE_SKIP_RETRY_POLLER=1 at the last up)",
                    part.name()
                ),
                None => {
                    all = false;
                    parts::status_line(part, None, None, "")
                }
            };
            lines.push_str(&line);
            lines.push('\n');
        }
        // A reader that stopped early (`| head -1`) is no error.
        match std::io::stdout().lock().write_all(lines.as_bytes()) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
            _ => Ok(all),
        }
    }

    // --- dev --------------------------------------------------------------

    /// `make dev`: up (with the retry poller), the demo, then wait for
    /// Ctrl-C (or TERM) and stop everything.
    pub fn dev(&mut self) -> Result<(), BoxError> {
        // From here on Ctrl-C is ours: it ends the wait below, not this process.
        let (mut interrupt, mut terminate) = {
            let _runtime = self.runtime.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )
        };
        self.up(true)?;
        self.demo()?;
        let ports = self.ports;
        eprintln!(
            "
Local stack is up (Ctrl-C stops it):
  bridge API (gateway)  {gateway}        (healthz: {gateway}/healthz)
  Synapse               {synapse}        (server name {server})
  moto (DynamoDB, SQS)  {moto}        (dashboard: {moto}/moto-api/)
  environment           .local/stack.env  (set -a; . .local/stack.env; set +a)
  a JWT for the API     scripts/dev-token alice [--admin]
  retry poller          delivers messages accepted while Synapse was down (.local/logs/retry.log)
  logs                  .local/logs/{{gateway,retry,synapse,moto,setup}}.log
  status                scripts/stack status
",
            gateway = ports.gateway_url(),
            synapse = ports.synapse_url(),
            moto = ports.moto_url(),
            server = env::SERVER_NAME,
        );
        let runtime = self.runtime;
        runtime.block_on(async {
            let mut warned: HashSet<Part> = HashSet::new();
            loop {
                tokio::select! {
                    _ = interrupt.recv() => break,
                    _ = terminate.recv() => break,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                self.reap();
                for part in Part::ALL {
                    if part == Part::Retry && self.run.poller_off() {
                        continue;
                    }
                    if self.run.running(part).is_some() {
                        warned.remove(&part);
                    } else if warned.insert(part) {
                        say(format!(
                            "{name} is not running any more (see .local/logs/{name}.log); \
                             scripts/stack up restarts it",
                            name = part.name()
                        ));
                    }
                }
            }
        });
        eprintln!();
        self.down(false)
    }

    fn demo(&self) -> Result<(), BoxError> {
        let demo = self.layout.root.join("scripts/demo");
        if !demo.is_file() {
            say("no scripts/demo: skipping the demo");
            return Ok(());
        }
        say("running scripts/demo");
        let pairs = env::parse(&fs::read_to_string(&self.layout.stack_env)?);
        match Command::new(&demo)
            .envs(pairs)
            .current_dir(&self.layout.root)
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => say(format!(
                "scripts/demo failed ({status}); the stack stays up"
            )),
            Err(err) => say(format!("scripts/demo: {err}; the stack stays up")),
        }
        Ok(())
    }
}

/// An error and its causes, as one sentence.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn append(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().create(true).append(true).open(path)
}

/// A removal's outcome, where nothing to remove is fine.
fn remove(removed: std::io::Result<()>) -> Result<(), BoxError> {
    match removed {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
        _ => Ok(()),
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_default_and_move() {
        let none = Ports::from_env(|_| None).unwrap();
        assert_eq!(
            none,
            Ports {
                moto: 15000,
                synapse: 18008,
                gateway: 18080
            }
        );
        let moved = Ports::from_env(|name| match name {
            "MOTO_PORT" => Some("25000".into()),
            "SYNAPSE_PORT" => Some(" 28008 ".into()),
            "GATEWAY_PORT" => Some(String::new()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            (moved.moto, moved.synapse, moved.gateway),
            (25000, 28008, 18080)
        );
        assert_eq!(moved.url(Part::Synapse), "http://127.0.0.1:28008");
        assert_eq!(moved.port(Part::Moto), Some((25000, "MOTO_PORT")));
        assert_eq!(moved.port(Part::Retry), None);
        for bad in ["x", "0", "70000"] {
            let err = Ports::from_env(|name| (name == "MOTO_PORT").then(|| bad.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(err.contains("MOTO_PORT"), "{err}");
        }
    }

    #[test]
    fn the_layout_is_todays() {
        let layout = Layout::new(PathBuf::from("/r"));
        assert_eq!(layout.stack_env, Path::new("/r/.local/stack.env"));
        assert_eq!(layout.secrets_env, Path::new("/r/.local/secrets.env"));
        assert_eq!(
            layout.registration,
            Path::new("/r/.local/synapse/registration.yaml")
        );
        assert_eq!(layout.synapse_data, Path::new("/r/.local/synapse-data"));
        assert_eq!(
            layout.pid_file("synapse"),
            Path::new("/r/.local/run/synapse.pid")
        );
        assert_eq!(
            layout.log("gateway"),
            Path::new("/r/.local/logs/gateway.log")
        );
    }
}
