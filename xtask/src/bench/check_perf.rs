//! `etcdctl check perf`: etcd's own pass/fail performance gate, run against any
//! endpoint as one more row of `bench compare`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;

use super::report::{Latency, Report};

/// What one `etcdctl check perf` run said.
pub struct Verdict {
    /// Its last line was `PASS` (throughput, slowest request and spread all passed).
    pub pass: bool,
    /// `ops` is the writes it made (throughput x its minute); no latency figures.
    pub report: Report,
}

/// The throughput in a `... Throughput is 150 writes/s` or `... Throughput too low:
/// 150 writes/s` line.
fn throughput(output: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let rest = &line[line.find("Throughput")?..];
        let number = rest
            .split_whitespace()
            .find_map(|word| word.parse::<f64>().ok())?;
        Some(number)
    })
}

/// Runs `etcdctl check perf --load=<load>` (Debian's `etcd-client` package; it takes
/// a minute) against `endpoints` and reads its verdict.
pub async fn run(endpoints: &[String], load: &str) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    let output = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["check", "perf", &format!("--load={load}")])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running etcdctl check perf (apt-get install -y etcd-client)")?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let verdict_lines: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .map(|l| l.rsplit('\r').next().unwrap_or(l).trim())
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .collect();
    let Some(writes_per_sec) = throughput(&stdout) else {
        bail!(
            "etcdctl check perf --load={load} ({}) printed no throughput: {}",
            output.status,
            stderr.trim()
        );
    };
    let pass = output.status.success() && verdict_lines.last() == Some(&"PASS");
    for line in &verdict_lines {
        eprintln!("   check perf --load={load}: {line}");
    }
    let measured = Duration::from_secs(60).min(elapsed);
    let mut report = Report {
        workload: format!("check-perf-{load}"),
        conns: 0,
        clients: 0,
        ops: (writes_per_sec * measured.as_secs_f64()).round() as u64,
        errors: 0,
        first_error: None,
        elapsed: measured,
        latency: Latency::default(),
        extra: Default::default(),
    };
    report.extra.insert("pass".into(), json!(pass));
    report
        .extra
        .insert("verdict".into(), json!(verdict_lines.join("; ")));
    Ok(Verdict { pass, report })
}

#[cfg(test)]
mod tests {
    use super::throughput;

    #[test]
    fn reads_the_throughput_line() {
        let out = "60 / 60 100.00% 1m0s\nPASS: Throughput is 150 writes/s\nPASS: Slowest request took 0.24s\nPASS\n";
        assert_eq!(throughput(out), Some(150.0));
        let low = "FAIL: Throughput too low: 7302 writes/s\nFAIL\n";
        assert_eq!(throughput(low), Some(7302.0));
        assert_eq!(throughput("no verdict"), None);
    }
}
