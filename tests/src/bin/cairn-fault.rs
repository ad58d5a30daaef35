//! `cairn-fault`: runs the fault scenario of `cairn_tests::fault` many times, with
//! different seeds and fault mixes, and prints a table (`cargo xtask fault` runs it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_tests::fault::{Keep, Mix, Report, Scenario};

const USAGE: &str = "usage: cairn-fault [options]

Runs a 3-member cluster behind proxies with concurrent clients and one watcher while a
nemesis injects faults, then checks linearizability, lost acknowledged writes, double
applies, the watcher's revisions and that every member has the same history.
Defaults are issue #10's shape: 10 clients with 2 s timeouts, put/CAS/linearizable get
on 5 keys, --snapshot-count 2000, 60 s runs of follower blackholes of 2-4.5 s.

options:
  --runs N              runs (default 1); run i uses seed X+i and mix i mod #mixes
  --duration S          seconds of faults per run (default 60)
  --seed X              first seed (default: from the clock)
  --mix M               a fault mix, repeatable: kind[:target][*weight],... with kinds
                        kill pause blackhole blackhole-in blackhole-out isolate and
                        targets leader follower either mostly-leader any; or the
                        presets issue (blackhole:follower) and all (every kind in turn)
  --members N           members (default 3)
  --clients N           clients (default 10)
  --pinned              clients stay on their member after a failure (default: they
                        move to the next member)
  --keys N              keys (default 5)
  --timeout S           client operation timeout in seconds (default 2)
  --snapshot-count N    the members' --snapshot-count (default 2000)
  --catchup-entries N   the members' --experimental-snapshot-catchup-entries
  --fault LO-HI         fault length range in seconds (default 2-4.5)
  --gap LO-HI           pause between faults in seconds (default 0.2-1)
  --retry-puts          a put without an answer in time is re-sent once, same value, to
                        the next member (a retrying client; values stop being unique)
  --tcp-backoff         blackholed bytes arrive at the sender's next TCP retransmission
                        after the heal (0.2, 0.6, 1.4, 3.0, 6.2 s after the first loss)
                        instead of at once
  --hold-new            connections opened during a cut are held until it heals
                        instead of closed
  --check-budget S      linearizability checker budget in seconds (default 60)
  --keep DIR            where runs with problems keep their evidence (default
                        $TMPDIR/cairn-fault)
  --keep-all            keep every run's evidence
  --stop-on-problem     stop after the first run with a problem
  --verbose             print the nemesis's actions as they happen

The server binary is CAIRN_BIN (default <target>/debug/cairn); the members inherit
RUST_LOG (e.g. RUST_LOG=info,cairn_raft_node=debug).";

struct Args {
    runs: usize,
    seed: u64,
    mixes: Vec<Mix>,
    scenario: Scenario,
    keep_dir: PathBuf,
    keep_all: bool,
    stop_on_problem: bool,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds: {s:?}"))
}

fn range(s: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi) = (seconds(lo)?, seconds(hi)?);
    if lo > hi {
        return Err(format!("empty range {s:?}"));
    }
    Ok((lo, hi))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn parse(args: &[String]) -> Result<Args, String> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut a = Args {
        runs: 1,
        seed: clock,
        mixes: Vec::new(),
        scenario: Scenario::issue_10(0),
        keep_dir: std::env::temp_dir().join("cairn-fault"),
        keep_all: false,
        stop_on_problem: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let s = &mut a.scenario;
        match flag.as_str() {
            "--runs" => a.runs = number(&value()?)?,
            "--duration" => s.duration = seconds(&value()?)?,
            "--seed" => a.seed = number(&value()?)?,
            "--mix" => a.mixes.push(value()?.parse()?),
            "--members" => s.members = number(&value()?)?,
            "--clients" => s.clients = number(&value()?)?,
            "--pinned" => s.pinned = true,
            "--tcp-backoff" => s.tcp_backoff = true,
            "--retry-puts" => s.retry_puts = true,
            "--hold-new" => s.hold_new_connections = true,
            "--keys" => s.keys = number(&value()?)?,
            "--timeout" => s.op_timeout = seconds(&value()?)?,
            "--snapshot-count" => s.snapshot_count = number(&value()?)?,
            "--catchup-entries" => s.catchup_entries = Some(number(&value()?)?),
            "--fault" => s.fault_length = range(&value()?)?,
            "--gap" => s.gap = range(&value()?)?,
            "--check-budget" => s.check_budget = seconds(&value()?)?,
            "--keep" => a.keep_dir = PathBuf::from(value()?),
            "--keep-all" => a.keep_all = true,
            "--stop-on-problem" => a.stop_on_problem = true,
            "--verbose" => s.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if a.mixes.is_empty() {
        a.mixes.push(Mix::issue_10());
    }
    if a.scenario.keys == 0 || a.scenario.members == 0 {
        return Err("--keys and --members must be positive".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cairn-fault: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{} runs of {:?}, {} members, {} clients ({:?} timeout), {} keys, --snapshot-count {}",
        a.runs,
        a.scenario.duration,
        a.scenario.members,
        a.scenario.clients,
        a.scenario.op_timeout,
        a.scenario.keys,
        a.scenario.snapshot_count
    );
    for (i, mix) in a.mixes.iter().enumerate() {
        println!("mix {i}: {mix}");
    }
    println!(
        "faults: k kill, p pause, b blackhole, bi/bo one-way in/out, be existing connections \
         only, i isolate\n"
    );
    println!("{} mix", Report::header());
    let mut reports: Vec<(usize, Result<Report, String>)> = Vec::new();
    for run in 0..a.runs {
        let mut scenario = a.scenario.clone();
        scenario.seed = a.seed.wrapping_add(run as u64);
        scenario.mix = a.mixes[run % a.mixes.len()].clone();
        scenario.keep = if a.keep_all {
            Keep::Always(a.keep_dir.clone())
        } else {
            Keep::OnProblem(a.keep_dir.clone())
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario.run()))
            .map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into())
            });
        match &outcome {
            Ok(report) => println!("{} {}", report.row(run), run % a.mixes.len()),
            Err(why) => println!("{run:>3} {:>20} harness failure: {why}", scenario.seed),
        }
        let problem = outcome.as_ref().map_or(true, |r| !r.problems().is_empty());
        reports.push((run, outcome));
        if problem && a.stop_on_problem {
            break;
        }
    }
    let mut failed = false;
    for (run, outcome) in &reports {
        match outcome {
            Ok(report) if report.problems().is_empty() => {}
            Ok(report) => {
                failed = true;
                println!("\n== run {run} (seed {}): problems", report.seed);
                for p in report.problems() {
                    println!("  {p}");
                }
                println!("  nemesis:");
                for line in &report.nemesis {
                    println!("    {line}");
                }
            }
            Err(_) => failed = true,
        }
        if let Ok(Report {
            kept: Some(dir), ..
        }) = outcome
        {
            println!("  evidence of run {run}: {}", dir.display());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
