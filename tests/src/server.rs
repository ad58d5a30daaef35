//! One server process (cairn or the real etcd) on free loopback ports.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcdctl::{etcdctl, etcdctl_with_stdin, CtlOutput};
use crate::net::{free_port, http_get};

/// How long a server may take to become healthy or to exit on SIGTERM.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Lines of the server log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Which implementation the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// The real etcd (`CAIRN_TEST_SERVER=etcd`): the reference behaviour.
    Etcd,
    /// cairn, the default.
    Cairn,
}

/// The server under test, chosen by `CAIRN_TEST_SERVER` (`etcd` or `cairn`,
/// default `cairn`).
pub fn server_kind() -> ServerKind {
    match std::env::var("CAIRN_TEST_SERVER").as_deref() {
        Ok("etcd") => ServerKind::Etcd,
        Ok("cairn") | Ok("") | Err(_) => ServerKind::Cairn,
        Ok(other) => panic!("CAIRN_TEST_SERVER={other:?}: expected `etcd` or `cairn`"),
    }
}

/// The server version the server under test reports (`endpoint status`,
/// `Status` RPC, `/version`).
pub fn expected_version() -> &'static str {
    match server_kind() {
        ServerKind::Etcd => "3.4.23",
        ServerKind::Cairn => "3.7.0",
    }
}

fn server_binary(kind: ServerKind) -> PathBuf {
    let path = match kind {
        ServerKind::Etcd => {
            PathBuf::from(std::env::var_os("ETCD_BIN").unwrap_or_else(|| "/usr/bin/etcd".into()))
        }
        ServerKind::Cairn => match std::env::var_os("CAIRN_BIN") {
            Some(path) => PathBuf::from(path),
            None => default_cairn_binary(),
        },
    };
    assert!(
        path.is_file(),
        "server binary {} not found: run `cargo build --workspace --all-targets` first \
         (or set CAIRN_BIN, or CAIRN_TEST_SERVER=etcd to test the real etcd)",
        path.display()
    );
    path
}

/// `<target>/debug/cairn`, from this test executable at `<target>/debug/deps/<test>`.
fn default_cairn_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    dir.join(format!("cairn{}", std::env::consts::EXE_SUFFIX))
}

/// How to start a [`Server`]. The flags are etcd's.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    name: String,
    initial_cluster_token: Option<String>,
    advertise_peer_url: Option<String>,
    initial_cluster: Option<String>,
    initial_cluster_state: Option<String>,
    ports: Option<(u16, u16)>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    also_listen: Vec<String>,
    advertise_also_only: bool,
    discovery: Option<String>,
    discovery_v3: Option<(String, String)>,
    peer_https: bool,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            name: "default".to_string(),
            initial_cluster_token: None,
            advertise_peer_url: None,
            initial_cluster: None,
            initial_cluster_state: None,
            ports: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            data_dir: None,
            also_listen: Vec::new(),
            advertise_also_only: false,
            discovery: None,
            discovery_v3: None,
            peer_https: false,
        }
    }
}

impl ServerOpts {
    /// Member name `default`, default token, no extra flags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another client URL to listen on (and advertise) besides the harness's plain one,
    /// e.g. an `https://` URL (the harness keeps checking health on the plain one).
    pub fn also_listen(mut self, url: &str) -> Self {
        self.also_listen.push(url.to_string());
        self
    }

    /// Advertise only the [`also_listen`](Self::also_listen) URLs (e.g. TLS only): other
    /// members reach this one there; the harness still uses its plain URL.
    pub fn advertise_also_only(mut self) -> Self {
        self.advertise_also_only = true;
        self
    }

    /// Bootstrap through the discovery service at `url` (`--discovery`, instead of
    /// `--initial-cluster`).
    pub fn discovery(mut self, url: &str) -> Self {
        self.discovery = Some(url.to_string());
        self
    }

    /// Bootstrap through etcd 3.6's v3 discovery (`--discovery-endpoints`,
    /// `--discovery-token`, instead of `--initial-cluster`).
    pub fn discovery_v3(mut self, endpoints: &str, token: &str) -> Self {
        self.discovery_v3 = Some((endpoints.to_string(), token.to_string()));
        self
    }

    /// The peer port speaks TLS (`https://` peer URLs; add the peer TLS flags).
    pub fn peer_https(mut self) -> Self {
        self.peer_https = true;
        self
    }

    /// `--name` (also the name in `--initial-cluster`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// `--initial-cluster-token`.
    pub fn initial_cluster_token(mut self, token: &str) -> Self {
        self.initial_cluster_token = Some(token.to_string());
        self
    }

    /// The peer URL advertised in `--initial-advertise-peer-urls` and
    /// `--initial-cluster` (member and cluster IDs are derived from it), while
    /// the server still listens on its own free peer port.
    pub fn advertise_peer_url(mut self, url: &str) -> Self {
        self.advertise_peer_url = Some(url.to_string());
        self
    }

    /// `--initial-cluster` (by default this member alone).
    pub fn initial_cluster(mut self, spec: &str) -> Self {
        self.initial_cluster = Some(spec.to_string());
        self
    }

    /// `--initial-cluster-state` (`new` by default).
    pub fn initial_cluster_state(mut self, state: &str) -> Self {
        self.initial_cluster_state = Some(state.to_string());
        self
    }

    /// The client and peer ports (free ones are picked by default).
    pub fn ports(mut self, client: u16, peer: u16) -> Self {
        self.ports = Some((client, peer));
        self
    }

    /// One more command-line argument, e.g. `--max-txn-ops`, then `16`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    /// An environment variable of the process (e.g. cairn's `FAILPOINTS`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The `--data-dir` (by default `data` in the server's own temp dir), e.g. on a small
    /// file system the test mounted.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }
}

/// A running server process with its own data dir and ports. Dropping it
/// kills the process; if the test is panicking, the log tail is printed and
/// the directory kept for inspection.
pub struct Server {
    kind: ServerKind,
    binary: PathBuf,
    opts: ServerOpts,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts a fresh server (new data dir, new ports) and waits until it is
    /// healthy.
    pub fn start(opts: ServerOpts) -> Server {
        let mut server = Server::launch(opts);
        server.wait_ready();
        server
    }

    /// Starts a fresh server without waiting for it to be healthy (a member of a cluster
    /// is healthy only once a quorum runs): call [`Server::wait_ready`] later.
    pub fn launch(opts: ServerOpts) -> Server {
        let kind = server_kind();
        let binary = server_binary(kind);
        let dir = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("create temp dir");
        let (client_port, peer_port) = opts.ports.unwrap_or_else(|| (free_port(), free_port()));
        let mut server = Server {
            kind,
            binary,
            opts,
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            client_port,
            peer_port,
            child: None,
        };
        server.spawn();
        server
    }

    /// The member name.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// Whether the process runs (it may still be stopped with SIGSTOP).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP` / `libc::SIGCONT`) to the process by its pid.
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            signal(child, sig);
        }
    }

    /// Starts the process again on the same data dir and ports without waiting for it
    /// to be healthy. No-op if it runs.
    pub fn respawn(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Which implementation this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// `127.0.0.1:<client port>`.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_addr())
    }

    /// The client URLs, as `etcdctl --endpoints` and `Client::connect` take them.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.client_url()]
    }

    /// The advertised peer URL (the one member IDs are derived from).
    pub fn peer_url(&self) -> String {
        self.opts
            .advertise_peer_url
            .clone()
            .unwrap_or_else(|| self.listen_peer_url())
    }

    fn listen_peer_url(&self) -> String {
        let scheme = if self.opts.peer_https {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.peer_port)
    }

    /// The `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.opts
            .data_dir
            .clone()
            .unwrap_or_else(|| self.root.join("data"))
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.opts.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.opts.env.push((key.to_string(), value.to_string()));
        }
    }

    /// Waits for the process to exit on its own (a crash, a fatal error) and reaps it;
    /// panics if it still runs after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                panic!("server still running {within:?} later (log below)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The resident memory of the process in bytes (Linux `VmRSS`), while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(&format!("/proc/{}/status", self.pid()?))
    }

    /// The server's resident memory while `work` runs, sampled every 20 ms: `work`'s
    /// result, the RSS before, and the peak.
    pub fn rss_during<T>(&self, work: impl FnOnce() -> T) -> (T, u64, u64) {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let before = self.rss_bytes().expect("the server's RSS");
        let peak = Arc::new(AtomicU64::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let status = format!("/proc/{}/status", self.pid().expect("running"));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if let Some(bytes) = rss_of(&status) {
                        peak.fetch_max(bytes, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let out = work();
        done.store(true, Ordering::SeqCst);
        sampler.join().expect("RSS sampler");
        (out, before, peak.load(Ordering::SeqCst))
    }

    /// The file that receives the server's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connects an `etcd-client` with connect and request timeouts.
    pub async fn client(&self) -> etcd_client::Client {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        etcd_client::Client::connect(self.endpoints(), Some(options))
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.client_url()))
    }

    /// `etcdctl --endpoints=<this server> <args>`.
    pub fn etcdctl(&self, args: &[&str]) -> CtlOutput {
        etcdctl(&self.endpoints(), args)
    }

    /// `etcdctl` with `stdin` as its standard input.
    pub fn etcdctl_with_stdin(&self, args: &[&str], stdin: &str) -> CtlOutput {
        etcdctl_with_stdin(&self.endpoints(), args, stdin)
    }

    /// SIGKILL by pid, then reap. No-op if not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            child.wait().expect("reap killed server");
        }
    }

    /// SIGTERM by pid and wait for the exit; panics if it does not exit in time.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if child.try_wait().expect("wait for server").is_some() {
                return;
            }
            if Instant::now() > deadline {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
                panic!("server did not exit within {READY_DEADLINE:?} of SIGTERM (log below)");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same data dir and ports (stopping it
    /// with SIGTERM first if it still runs) and waits until it is healthy.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
        self.wait_ready();
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path().display()));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The client URLs to listen on and advertise, the harness's plain one first.
    fn client_urls_flag(&self) -> String {
        std::iter::once(self.client_url())
            .chain(self.opts.also_listen.iter().cloned())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn command_line(&self) -> Vec<String> {
        let peer = self.peer_url();
        let mut args = vec![
            "--name".to_string(),
            self.opts.name.clone(),
            "--data-dir".to_string(),
            path_arg(&self.data_dir()),
            "--listen-client-urls".to_string(),
            self.client_urls_flag(),
            "--advertise-client-urls".to_string(),
            if self.opts.advertise_also_only {
                self.opts.also_listen.join(",")
            } else {
                self.client_urls_flag()
            },
            "--listen-peer-urls".to_string(),
            self.listen_peer_url(),
            "--initial-advertise-peer-urls".to_string(),
            peer.clone(),
        ];
        match (&self.opts.discovery, &self.opts.discovery_v3) {
            (Some(url), _) => args.extend(["--discovery".to_string(), url.clone()]),
            (None, Some((endpoints, token))) => args.extend([
                "--discovery-endpoints".to_string(),
                endpoints.clone(),
                "--discovery-token".to_string(),
                token.clone(),
            ]),
            (None, None) => args.extend([
                "--initial-cluster".to_string(),
                self.opts
                    .initial_cluster
                    .clone()
                    .unwrap_or_else(|| format!("{}={peer}", self.opts.name)),
            ]),
        }
        if let Some(state) = &self.opts.initial_cluster_state {
            args.push("--initial-cluster-state".to_string());
            args.push(state.clone());
        }
        if let Some(token) = &self.opts.initial_cluster_token {
            args.push("--initial-cluster-token".to_string());
            args.push(token.clone());
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let args = self.command_line();
        let mut command = Command::new(&self.binary);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        // Settings must come from the flags alone.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        command.env_remove("FAILPOINTS");
        command.env_remove("CAIRN_FAILPOINTS_HTTP");
        command.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        banner(&self.log_path(), &self.binary, &args);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Waits until `/health` says healthy (panics after a deadline or if the process exits).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let addr = self.client_addr();
        loop {
            let child = self.child.as_mut().expect("server spawned");
            if let Some(status) = child.try_wait().expect("wait for server") {
                self.child = None;
                panic!("server exited during start-up with {status} (log below)");
            }
            let last = match http_get(&addr, "/health") {
                Ok(resp) if resp.status == 200 && resp.body.contains(r#""health":"true""#) => {
                    return
                }
                Ok(resp) => format!("HTTP {}: {}", resp.status, resp.body),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "server not healthy within {READY_DEADLINE:?} (last /health: {last}; log below)"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let kept = self.dir.take().map(tempfile::TempDir::keep);
            eprintln!(
                "---- {:?} server log {} (last {LOG_TAIL_LINES} lines; dir kept: {kept:?}) ----\n{}\n---- end of server log ----",
                self.kind,
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES),
            );
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child,
    // so it cannot name an unrelated process.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_string()
}

fn banner(log: &Path, binary: &Path, args: &[String]) {
    use std::io::Write;
    if let Ok(mut file) = OpenOptions::new().append(true).open(log) {
        let _ = writeln!(
            file,
            "==== harness: starting {} {}",
            binary.display(),
            args.join(" ")
        );
    }
}

/// `VmRSS` in bytes from a `/proc/<pid>/status` file.
fn rss_of(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
