//! `cargo xtask bench compare`: the same workloads against a fresh release cairn and
//! a fresh etcd, in alternation, with the servers' CPU and memory, as one markdown
//! table of cairn/etcd ratios.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;

use super::check_perf;
use super::report::{mib, Report};
use super::server::{Cluster, Kind};
use super::workload::{self, KeySpace, ListMode, Load, Stop, WatchSpec};

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// Cluster sizes to compare: 1, 3 or both.
    #[arg(long, default_value = "both", value_parser = ["1", "3", "both"])]
    members: String,
    /// Runs of every workload on each server, alternating; the table shows the median.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Multiplies every workload's operation count (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Keys of 256 bytes loaded for the memory and restart figures.
    #[arg(long, default_value_t = 100_000)]
    load_keys: u64,
    /// Only the workloads whose names start with one of these (comma-separated):
    /// put256, put1, rangel, ranges, txn, watch, lease, watch-fanout, list-whole,
    /// list-paged, list-keys-only, list-count, list-stream, check-perf-l,
    /// check-perf-xl, compaction. Empty: all of them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// `--quota-backend-bytes` of every member of both servers (8 GiB, etcd's documented
    /// ceiling): the runs put several GiB of history (check perf, the 1M-revision
    /// compaction workload), which etcd's default 2 GiB quota stops with NOSPACE.
    #[arg(long, default_value_t = 8 << 30)]
    quota_backend_bytes: u64,
    /// Use the existing release binary instead of running the release build first.
    #[arg(long)]
    pub skip_build: bool,
    /// The cairn binary (built by `cargo build --release --locked --bin cairn`).
    #[arg(long, default_value = "/var/tmp/cairn-target/release/cairn")]
    cairn_bin: PathBuf,
    /// The etcd binary (Debian: apt-get install etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
}

/// Builds the release cairn in the one shape that reuses the shared warm cache.
pub fn build(skip: bool) -> anyhow::Result<()> {
    if skip {
        return Ok(());
    }
    let root = crate::paths::workspace_root()?;
    eprintln!("== cargo build --release --locked --bin cairn");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--locked", "--bin", "cairn"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release --locked --bin cairn failed ({status}); --skip-build uses the last binary");
    }
    Ok(())
}

/// A figure's direction: which way is better.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// One row of the table.
struct Figure {
    key: &'static str,
    label: String,
    unit: &'static str,
    better: Better,
}

/// The workloads, in the order they run.
#[derive(Clone, Copy, Debug)]
enum Job {
    Put {
        clients: usize,
        conns: usize,
    },
    RangeLinearizable,
    RangeSerializable,
    Txn,
    Watch,
    Lease,
    /// 1,000 watchers of a prefix over 100 streams, 10 KiB values.
    WatchFanout,
    /// Full lists of the `list/` prefix (100k keys of 1 KiB, put before the first).
    List(ListMode),
    /// `etcdctl check perf --load=<load>`: etcd's own pass/fail gate.
    CheckPerf(&'static str),
    /// Put latency with and without a Compact of 1M revisions under way.
    Compaction,
}

impl Job {
    /// The name `--only` selects and the table's figure keys start with.
    fn name(self) -> &'static str {
        match self {
            Job::Put { clients: 1, .. } => "put1",
            Job::Put { .. } => "put256",
            Job::RangeLinearizable => "rangel",
            Job::RangeSerializable => "ranges",
            Job::Txn => "txn",
            Job::Watch => "watch",
            Job::Lease => "lease",
            Job::WatchFanout => "watch-fanout",
            Job::List(mode) => mode.name(),
            Job::CheckPerf("l") => "check-perf-l",
            Job::CheckPerf(_) => "check-perf-xl",
            Job::Compaction => "compaction",
        }
    }

    /// The workloads of one cluster size, in the order they run.
    fn all() -> Vec<Job> {
        vec![
            Job::Put {
                clients: 256,
                conns: 16,
            },
            Job::Put {
                clients: 1,
                conns: 1,
            },
            Job::RangeLinearizable,
            Job::RangeSerializable,
            Job::Txn,
            Job::Watch,
            Job::Lease,
            Job::WatchFanout,
            Job::List(ListMode::Whole),
            Job::List(ListMode::Paged { page: 500 }),
            Job::List(ListMode::KeysOnly),
            Job::List(ListMode::Count),
            Job::List(ListMode::Stream),
            Job::CheckPerf("l"),
            Job::CheckPerf("xl"),
            Job::Compaction,
        ]
    }

    /// Whether it runs in every round (a check perf run takes a fixed minute and
    /// gives a verdict: once is enough).
    fn every_round(self) -> bool {
        !matches!(self, Job::CheckPerf(_))
    }
}

struct Plan {
    put_total: u64,
    put1_total: u64,
    range_total: u64,
    range_keys: u64,
    txn_total: u64,
    watch_puts: u64,
    lease_total: u64,
    load_keys: u64,
    fanout_puts: u64,
    list_keys: u64,
    compaction_history: u64,
    /// `--scale`, for the counts derived on demand.
    scale: f64,
}

/// `n` operations times `scale`, at least one.
fn scaled(n: f64, scale: f64) -> u64 {
    ((n * scale).round() as u64).max(1)
}

impl Plan {
    fn new(args: &CompareArgs) -> Plan {
        let scaled = |n: f64| scaled(n, args.scale);
        Plan {
            put_total: scaled(30_000.0),
            put1_total: scaled(2_000.0),
            range_total: scaled(30_000.0),
            range_keys: 10_000,
            txn_total: scaled(15_000.0),
            watch_puts: scaled(10_000.0),
            lease_total: scaled(5_000.0),
            load_keys: args.load_keys,
            fanout_puts: scaled(300.0),
            list_keys: scaled(100_000.0),
            compaction_history: scaled(1_000_000.0),
            scale: args.scale,
        }
    }

    /// Full lists per run of `mode`.
    fn list_runs(&self, mode: ListMode) -> u64 {
        let runs = match mode {
            ListMode::Whole | ListMode::Paged { .. } | ListMode::Stream => 10.0,
            ListMode::KeysOnly => 20.0,
            ListMode::Count => 200.0,
        };
        scaled(runs, self.scale)
    }

    fn figures(&self) -> Vec<Figure> {
        use Better::*;
        let f = |key, label: &str, unit, better| Figure {
            key,
            label: label.to_string(),
            unit,
            better,
        };
        vec![
            f("put256.qps", "put QPS, 256 clients / 16 conns", "", Higher),
            f("put256.p99", "put p99 latency, 256 clients", "ms", Lower),
            f("put1.p50", "put p50 latency, 1 client", "ms", Lower),
            f(
                "rangel.qps",
                "range linearizable QPS, 256 clients",
                "",
                Higher,
            ),
            f(
                "ranges.qps",
                "range serializable QPS, 256 clients",
                "",
                Higher,
            ),
            f("txn.qps", "txn CAS QPS, 64 clients", "", Higher),
            f(
                "watch.qps",
                &format!(
                    "watch events/s delivered, 100 watchers x {} puts",
                    self.watch_puts
                ),
                "",
                Higher,
            ),
            f("watch.p99", "watch p99 put-to-event latency", "ms", Lower),
            f(
                "lease.qps",
                "lease grant+keepalive+revoke cycles/s, 16 clients",
                "",
                Higher,
            ),
            f(
                "put256.cpu",
                "server CPU per op: put 256 clients",
                "µs",
                Lower,
            ),
            f("put1.cpu", "server CPU per op: put 1 client", "µs", Lower),
            f(
                "rangel.cpu",
                "server CPU per op: range linearizable",
                "µs",
                Lower,
            ),
            f(
                "ranges.cpu",
                "server CPU per op: range serializable",
                "µs",
                Lower,
            ),
            f("txn.cpu", "server CPU per op: txn CAS", "µs", Lower),
            f(
                "watch.cpu",
                "server CPU per delivered watch event",
                "µs",
                Lower,
            ),
            f("lease.cpu", "server CPU per lease cycle", "µs", Lower),
            f(
                "watch-fanout.qps",
                &format!(
                    "watch fan-out events/s: 1,000 prefix watchers / 100 streams x {} puts of 10 KiB",
                    self.fanout_puts
                ),
                "",
                Higher,
            ),
            f("watch-fanout.p99", "watch fan-out p99 put-to-event latency", "ms", Lower),
            f("watch-fanout.cpu", "server CPU per fan-out event", "µs", Lower),
            f("watch-fanout.rss", "peak RSS during the fan-out", "MiB", Lower),
            f(
                "list-whole.avg",
                &format!("list {}k x 1 KiB: one Range, time per list", self.list_keys / 1000),
                "ms",
                Lower,
            ),
            f("list-paged.avg", "list: pages of 500 at one revision, time per list", "ms", Lower),
            f("list-keys-only.avg", "list: keys only, time per list", "ms", Lower),
            f("list-count.avg", "list: count only, time per count", "ms", Lower),
            f("list-stream.avg", "list: RangeStream (etcd 3.7), time per list", "ms", Lower),
            f("list-whole.cpu", "server CPU per whole list", "µs", Lower),
            f("list-whole.rss", "peak RSS while listing whole", "MiB", Lower),
            f("list-paged.rss", "peak RSS while listing in pages", "MiB", Lower),
            f("list-stream.rss", "peak RSS while streaming lists", "MiB", Lower),
            f(
                "compaction.quiet_p99",
                "put p99, 64 clients, no compaction",
                "ms",
                Lower,
            ),
            f(
                "compaction.p99",
                &format!(
                    "put p99 while {}k revisions compact",
                    self.compaction_history / 1000
                ),
                "ms",
                Lower,
            ),
            f(
                "compaction.p99_ratio",
                "put p99 during / without compaction",
                "x",
                Lower,
            ),
            f("check-perf-l.qps", "etcdctl check perf --load=l: writes/s", "", Higher),
            f("check-perf-l.pass", "etcdctl check perf --load=l", "pass", Higher),
            f("check-perf-xl.qps", "etcdctl check perf --load=xl: writes/s", "", Higher),
            f("check-perf-xl.pass", "etcdctl check perf --load=xl", "pass", Higher),
            f("put256.rss", "peak RSS during the put run", "MiB", Lower),
            f(
                "load.rss",
                &format!("RSS with {}k keys of 256 B loaded", self.load_keys / 1000),
                "MiB",
                Lower,
            ),
            f(
                "restart.secs",
                &format!("restart-to-serving with {}k keys", self.load_keys / 1000),
                "s",
                Lower,
            ),
        ]
    }
}

/// Every value measured: (members, figure key, server) -> one value per round.
#[derive(Default)]
struct Results {
    values: BTreeMap<(usize, String, Kind), Vec<f64>>,
    /// Why a server has no figures at a cluster size.
    unavailable: BTreeMap<(usize, Kind), String>,
}

impl Results {
    fn add(&mut self, members: usize, key: String, kind: Kind, value: f64) {
        self.values
            .entry((members, key, kind))
            .or_default()
            .push(value);
    }

    fn median(&self, members: usize, key: &str, kind: Kind) -> Option<f64> {
        let values = self.values.get(&(members, key.to_string(), kind))?;
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        Some(if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        })
    }
}

/// Installs the Debian `etcd-server` package (and the other packages the build needs)
/// through `scripts/install-deps.sh` when the etcd binary is missing.
fn install_etcd(etcd: &std::path::Path) -> anyhow::Result<()> {
    if etcd.exists() {
        return Ok(());
    }
    eprintln!("== {} not found: installing etcd-server", etcd.display());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("install-deps.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    install_etcd(&args.etcd_bin)?;
    for (kind, bin) in [(Kind::Cairn, &args.cairn_bin), (Kind::Etcd, &args.etcd_bin)] {
        if !bin.exists() {
            bail!(
                "{kind} binary {} not found{}",
                bin.display(),
                if kind == Kind::Etcd {
                    " (apt-get install -y etcd-server)"
                } else {
                    ""
                }
            );
        }
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this load generator is an unoptimised build (`cargo xtask` runs the dev \
             profile); the server CPU figures are unaffected, read-heavy QPS may be client-bound"
        );
    }
    let sizes: Vec<usize> = match args.members.as_str() {
        "1" => vec![1],
        "3" => vec![3],
        _ => vec![1, 3],
    };
    let plan = Plan::new(&args);
    let mut results = Results::default();
    let started = Instant::now();
    for &size in &sizes {
        run_workloads(&args, &plan, size, &mut results).await?;
        run_load_and_restart(&args, &plan, size, &mut results).await?;
    }
    eprintln!("== done in {:.0}s", started.elapsed().as_secs_f64());
    println!();
    println!("{}", table(&plan, &sizes, &results));
    Ok(())
}

fn bin(args: &CompareArgs, kind: Kind) -> &PathBuf {
    match kind {
        Kind::Cairn => &args.cairn_bin,
        Kind::Etcd => &args.etcd_bin,
    }
}

/// Starts a fresh cluster of `kind` and waits up to 10 s for it to serve.
async fn fresh_cluster(
    args: &CompareArgs,
    kind: Kind,
    size: usize,
    results: &mut Results,
) -> anyhow::Result<Option<Cluster>> {
    let quota = vec![
        "--quota-backend-bytes".to_string(),
        args.quota_backend_bytes.to_string(),
    ];
    let mut cluster = Cluster::start_with(kind, bin(args, kind), size, quota)?;
    match cluster.wait_ready(Duration::from_secs(10)).await {
        Ok(took) => {
            eprintln!(
                "== {kind} x{size} serving after {:.2}s on {}",
                took.as_secs_f64(),
                cluster.endpoints().join(",")
            );
            Ok(Some(cluster))
        }
        Err(err) => {
            eprintln!("== {kind} x{size}: cluster failed to start: {err:#}");
            results
                .unavailable
                .insert((size, kind), "n/a (cluster failed to start)".into());
            Ok(None)
        }
    }
}

async fn run_workloads(
    args: &CompareArgs,
    plan: &Plan,
    size: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut clusters: Vec<Cluster> = vec![];
    for kind in [Kind::Cairn, Kind::Etcd] {
        if let Some(cluster) = fresh_cluster(args, kind, size, results).await? {
            clusters.push(cluster);
        }
    }
    let range_keys = KeySpace {
        prefix: "r",
        width: 7,
        space: plan.range_keys,
    };
    for cluster in &clusters {
        if let Err(err) = workload::prefill(&cluster.endpoints(), range_keys, 256).await {
            eprintln!("== {} x{size}: prefill failed: {err:#}", cluster.kind);
            results
                .unavailable
                .insert((size, cluster.kind), "n/a (prefill failed)".into());
        }
    }
    let jobs: Vec<Job> = Job::all()
        .into_iter()
        .filter(|job| {
            args.only.is_empty() || args.only.iter().any(|o| job.name().starts_with(o.as_str()))
        })
        .collect();
    let list_keys = list_space(plan);
    let mut list_filled = false;
    for job in jobs {
        if matches!(job, Job::List(_)) && !list_filled {
            list_filled = true;
            for cluster in &clusters {
                match workload::prefill(&cluster.endpoints(), list_keys, 1024).await {
                    Ok(filled) => eprintln!(
                        "== {} x{size}: put {} keys of 1 KiB under list/ in {:.1}s",
                        cluster.kind,
                        filled.ops,
                        filled.elapsed.as_secs_f64()
                    ),
                    Err(err) => {
                        eprintln!("== {} x{size}: list prefill failed: {err:#}", cluster.kind)
                    }
                }
            }
        }
        let rounds = if job.every_round() { args.rounds } else { 1 };
        for round in 0..rounds {
            for cluster in &mut clusters {
                if results.unavailable.contains_key(&(size, cluster.kind)) {
                    continue;
                }
                let label = format!("{} x{size} round {}", cluster.kind, round + 1);
                if let Err(err) = run_job(plan, job, cluster, size, &label, results).await {
                    eprintln!("== {label}: {job:?} failed: {err:#}");
                }
                if let Some(exited) = cluster.exited_member() {
                    eprintln!("== {label}: server died: {exited}");
                    results.unavailable.insert(
                        (size, cluster.kind),
                        "n/a (server exited during the run)".into(),
                    );
                }
            }
        }
    }
    Ok(())
}

/// The `list/` prefix the list workloads read: 100k keys (scaled) of 1 KiB.
fn list_space(plan: &Plan) -> KeySpace {
    KeySpace {
        prefix: "list/",
        width: 8,
        space: plan.list_keys,
    }
}

async fn run_job(
    plan: &Plan,
    job: Job,
    cluster: &mut Cluster,
    size: usize,
    label: &str,
    results: &mut Results,
) -> anyhow::Result<()> {
    let endpoints = cluster.endpoints();
    let load = |clients: usize, conns: usize, total: u64| Load {
        endpoints: endpoints.clone(),
        conns,
        clients,
        stop: Stop::Total(total),
    };
    let put_keys = KeySpace {
        prefix: "",
        width: 8,
        space: 100_000,
    };
    let range_keys = KeySpace {
        prefix: "r",
        width: 7,
        space: plan.range_keys,
    };
    let txn_keys = KeySpace {
        prefix: "t",
        width: 7,
        space: 10_000,
    };
    cluster.reset_peak_rss();
    let cpu_before = cluster.cpu_time();
    let prefix = job.name();
    let mut extra_figures: Vec<(&str, f64)> = Vec::new();
    let report: Report = match job {
        Job::Put { clients: 1, .. } => {
            workload::put(&load(1, 1, plan.put1_total), put_keys, 256).await?
        }
        Job::Put { clients, conns } => {
            workload::put(&load(clients, conns, plan.put_total), put_keys, 256).await?
        }
        Job::RangeLinearizable => {
            workload::range(&load(256, 16, plan.range_total), range_keys, false).await?
        }
        Job::RangeSerializable => {
            workload::range(&load(256, 16, plan.range_total), range_keys, true).await?
        }
        Job::Txn => workload::txn(&load(64, 8, plan.txn_total), txn_keys, 256).await?,
        Job::Watch => {
            let spec = WatchSpec {
                watchers: 100,
                streams: 10,
                puts: plan.watch_puts,
                val_size: 256,
                idle_timeout: Duration::from_secs(10),
                writer_shares_conn: false,
                prefix: false,
            };
            workload::watch(&endpoints, 4, spec).await?
        }
        Job::Lease => {
            let reports = workload::lease(&load(16, 4, plan.lease_total), 60).await?;
            reports.into_iter().next().context("no lease report")?
        }
        Job::WatchFanout => {
            let spec = WatchSpec {
                watchers: 1000,
                streams: 100,
                puts: plan.fanout_puts,
                val_size: 10 * 1024,
                idle_timeout: Duration::from_secs(10),
                writer_shares_conn: false,
                prefix: true,
            };
            workload::watch(&endpoints, 10, spec).await?
        }
        Job::List(mode) => {
            workload::list(&load(1, 1, plan.list_runs(mode)), list_space(plan), mode).await?
        }
        Job::CheckPerf(level) => {
            let verdict = check_perf::run(&endpoints, level).await?;
            extra_figures.push(("pass", if verdict.pass { 1.0 } else { 0.0 }));
            verdict.report
        }
        Job::Compaction => {
            let keys = KeySpace {
                prefix: "c",
                width: 7,
                space: 1000,
            };
            let measured = Load {
                endpoints: endpoints.clone(),
                conns: 8,
                clients: 64,
                stop: Stop::Duration(Duration::from_secs(10)),
            };
            let reports =
                workload::compaction(&measured, keys, 256, plan.compaction_history).await?;
            let [quiet, busy] = <[Report; 2]>::try_from(reports)
                .map_err(|_| anyhow::anyhow!("the compaction workload gave no pair of runs"))?;
            quiet.print(&format!("{label} without compaction"));
            let quiet_p99 = quiet.latency.quantile_us(0.99) as f64;
            let busy_p99 = busy.latency.quantile_us(0.99) as f64;
            extra_figures.push(("quiet_p99", quiet_p99 / 1000.0));
            extra_figures.push(("p99_ratio", busy_p99 / quiet_p99.max(1.0)));
            busy
        }
    };
    let cpu = cluster.cpu_time().saturating_sub(cpu_before);
    report.print(label);
    if report.ops == 0 {
        bail!("no operation succeeded");
    }
    let kind = cluster.kind;
    let cpu_per_op = cpu.as_secs_f64() * 1e6 / report.ops as f64;
    println!(
        "{:<20} server CPU {:.2}s = {cpu_per_op:.1} µs/op over {} member(s)",
        "",
        cpu.as_secs_f64(),
        cluster.size()
    );
    let ms = |us: u64| us as f64 / 1000.0;
    // Every figure of the run is kept; the table shows those `Plan::figures` names.
    let mut add =
        |suffix: &str, value: f64| results.add(size, format!("{prefix}.{suffix}"), kind, value);
    add("qps", report.qps());
    add("p99", ms(report.latency.quantile_us(0.99)));
    add("p50", ms(report.latency.quantile_us(0.50)));
    add("cpu", cpu_per_op);
    add("avg", report.latency.mean_us() / 1000.0);
    add("rss", mib(cluster.peak_rss()));
    for (suffix, value) in extra_figures {
        add(suffix, value);
    }
    Ok(())
}

/// Loads `plan.load_keys` keys into fresh clusters, reads their RSS, kills them
/// and times the restart until every member serves a linearizable Range.
async fn run_load_and_restart(
    args: &CompareArgs,
    plan: &Plan,
    size: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let keys = KeySpace {
        prefix: "m",
        width: 7,
        space: plan.load_keys,
    };
    for kind in [Kind::Cairn, Kind::Etcd] {
        if results.unavailable.contains_key(&(size, kind)) {
            continue;
        }
        let Some(mut cluster) = fresh_cluster(args, kind, size, results).await? else {
            continue;
        };
        let loaded = match workload::prefill(&cluster.endpoints(), keys, 256).await {
            Ok(loaded) => loaded,
            Err(err) => {
                eprintln!(
                    "== {kind} x{size}: loading {} keys failed: {err:#}",
                    keys.space
                );
                continue;
            }
        };
        let rss = cluster.rss();
        eprintln!(
            "== {kind} x{size}: loaded {} keys in {:.1}s ({:.0}/s), RSS {:.0} MiB",
            loaded.ops,
            loaded.elapsed.as_secs_f64(),
            loaded.qps(),
            mib(rss)
        );
        results.add(size, "load.rss".into(), kind, mib(rss));
        cluster.kill();
        let restarted = Instant::now();
        cluster.restart()?;
        match cluster.wait_ready(Duration::from_secs(120)).await {
            Ok(_) => {
                let secs = restarted.elapsed().as_secs_f64();
                eprintln!("== {kind} x{size}: serving {secs:.2}s after the restart");
                results.add(size, "restart.secs".into(), kind, secs);
            }
            Err(err) => eprintln!("== {kind} x{size}: did not serve after restart: {err:#}"),
        }
    }
    Ok(())
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "ms" => format!("{value:.2} ms"),
        "s" => format!("{value:.2} s"),
        "µs" => format!("{value:.0} µs"),
        "MiB" => format!("{value:.0} MiB"),
        "x" => format!("{value:.2}x"),
        "pass" if value >= 1.0 => "PASS".into(),
        "pass" => "FAIL".into(),
        _ => format!("{value:.0}"),
    }
}

fn table(plan: &Plan, sizes: &[usize], results: &Results) -> String {
    let mut out = String::new();
    let mut header = String::from("| figure | better |");
    let mut rule = String::from("|---|---|");
    for size in sizes {
        header += &format!(" cairn x{size} | etcd x{size} | cairn/etcd x{size} |");
        rule += "---:|---:|---:|";
    }
    out += &header;
    out.push('\n');
    out += &rule;
    out.push('\n');
    for figure in plan.figures() {
        let arrow = match figure.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        };
        let mut row = format!("| {} | {arrow} |", figure.label);
        for &size in sizes {
            let cell = |kind: Kind| -> (String, Option<f64>) {
                if let Some(why) = results.unavailable.get(&(size, kind)) {
                    if results.median(size, figure.key, kind).is_none() {
                        return (why.clone(), None);
                    }
                }
                match results.median(size, figure.key, kind) {
                    Some(v) => (format_value(v, figure.unit), Some(v)),
                    None => ("n/a".into(), None),
                }
            };
            let (cairn, c) = cell(Kind::Cairn);
            let (etcd, e) = cell(Kind::Etcd);
            let ratio = match (c, e) {
                (Some(c), Some(e)) if e > 0.0 && figure.unit != "pass" => {
                    format!("{:.2}", c / e)
                }
                _ => "–".into(),
            };
            row += &format!(" {cairn} | {etcd} | {ratio} |");
        }
        out += &row;
        out.push('\n');
    }
    out
}
