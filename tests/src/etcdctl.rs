//! Running the real `etcdctl` (API v3) against a server.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one `etcdctl` invocation may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// What one `etcdctl` run printed and how it exited.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// The arguments after `--endpoints`, for failure messages.
    pub args: Vec<String>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// The exit status.
    pub status: ExitStatus,
}

impl CtlOutput {
    /// Whether etcdctl exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(self.success(), "etcdctl {:?} failed: {self:#?}", self.args);
        &self.stdout
    }

    /// Asserts failure and returns etcdctl's `Error: ...` line from stderr
    /// (the client library's retry warnings before it are skipped).
    pub fn fail(&self) -> &str {
        assert!(
            !self.success(),
            "etcdctl {:?} unexpectedly succeeded: {self:#?}",
            self.args
        );
        self.stderr
            .lines()
            .rev()
            .find(|line| line.starts_with("Error: "))
            .unwrap_or_else(|| panic!("no `Error: ` line in stderr: {self:#?}"))
    }
}

/// Runs `etcdctl --endpoints=<endpoints> <args>` with `ETCDCTL_API=3`.
pub fn etcdctl(endpoints: &[String], args: &[&str]) -> CtlOutput {
    run(endpoints, args, None)
}

/// Like [`etcdctl`], writing `stdin` to its standard input (e.g. for `txn`).
pub fn etcdctl_with_stdin(endpoints: &[String], args: &[&str], stdin: &str) -> CtlOutput {
    run(endpoints, args, Some(stdin))
}

fn run(endpoints: &[String], args: &[&str], stdin: Option<&str>) -> CtlOutput {
    let mut command = Command::new(etcdctl_binary());
    command
        .env_clear()
        .env("ETCDCTL_API", "3")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=20s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .expect("write etcdctl stdin");
    }
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_with_deadline(&mut child, args);
    CtlOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        status,
    }
}

pub(crate) fn etcdctl_binary() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "/usr/bin/etcdctl".to_string())
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_with_deadline(child: &mut Child, args: &[&str]) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait for etcdctl") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("etcdctl {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
