//! `cargo xtask bench`: a load generator for any etcd v3 endpoint (cairn or etcd),
//! speaking the API through `cairn-proto`'s generated clients.

mod check_perf;
mod cli_duration;
mod compare;
mod large;
mod report;
mod server;
mod workload;

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use workload::{KeySpace, ListMode, Load, Stop, WatchSpec};

/// `cargo xtask bench`'s command line.
#[derive(Args)]
#[command(
    about = "Load generator for etcd v3 endpoints: QPS and latency (avg/p50/p90/p99/max), \
             human-readable plus one JSON line per run"
)]
pub struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Puts of --val-size values at random keys of --key-space.
    Put {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[arg(long, default_value_t = 256)]
        val_size: usize,
    },
    /// Single-key Ranges at random keys, after putting every key of --key-space once.
    Range {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
        /// l (linearizable) or s (serializable).
        #[arg(long, default_value = "l", value_parser = ["l", "s", "linearizable", "serializable"])]
        consistency: String,
        /// Skip putting the keys first (they are already there).
        #[arg(long)]
        no_prefill: bool,
        #[arg(long, default_value_t = 256)]
        val_size: usize,
    },
    /// Compare-and-swap Txns: mod_revision(key) == last seen, then put; else read it.
    Txn {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[arg(long, default_value_t = 256)]
        val_size: usize,
    },
    /// --watchers watchers of one key over --streams streams, one writer putting
    /// --puts values stamped with their send time.
    Watch {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        #[arg(long, default_value_t = 10)]
        streams: usize,
        #[arg(long, default_value_t = 10_000)]
        puts: u64,
        #[arg(long, default_value_t = 256)]
        val_size: usize,
        /// Put over the first watch stream's connection instead of the writer's own.
        #[arg(long)]
        writer_shares_conn: bool,
        /// Watch the prefix bench-watch/ and put to 1,000 keys under it in turn.
        #[arg(long)]
        prefix: bool,
    },
    /// Builds the release cairn, then runs the workloads against fresh cairn and etcd
    /// clusters (1 and/or 3 members, on free loopback ports) in alternation and prints
    /// a markdown table of the figures with cairn/etcd ratios.
    Compare(compare::CompareArgs),
    /// Put latency while a large compaction runs, against the same puts without one:
    /// --history puts first (the revisions to compact), then the load twice, the
    /// second time with a Compact of everything sent as it starts.
    Compaction {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[arg(long, default_value_t = 256)]
        val_size: usize,
        /// Revisions of history written before (and compacted by) the second run.
        #[arg(long, default_value_t = 1_000_000)]
        history: u64,
    },
    /// Lists of one prefix, as the Kubernetes apiserver reads its resources: --keys
    /// keys of --val-size bytes under `list/` first, then each operation lists them all
    /// (whole, in pages of --page keys at one revision, count only, keys only or one
    /// RangeStream) and checks it saw every key.
    List {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long, default_value_t = 1024)]
        val_size: usize,
        #[arg(long, default_value = "whole", value_parser = ["whole", "paged", "count", "keys-only", "stream"])]
        mode: String,
        /// Keys per page (paged mode); the apiserver asks for 500.
        #[arg(long, default_value_t = 500)]
        page: i64,
        /// Skip putting the keys first (they are already there).
        #[arg(long)]
        no_prefill: bool,
    },
    /// A large store on one fresh member (10M keys of 1 KiB by default): load time,
    /// RSS and backend size as it grows, put and range QPS at full size, restart time.
    Large(large::LargeArgs),
    /// Lease cycles: grant, one keep-alive on the client's stream, revoke.
    Lease {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 60)]
        ttl: i64,
    },
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// Comma-separated endpoints (host:port or http://host:port).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// gRPC channels (HTTP/2 connections), spread over the endpoints.
    #[arg(long, default_value_t = 1)]
    conns: usize,
}

#[derive(Args, Clone)]
struct LoadArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrent closed-loop clients, spread over the channels.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Operations in all.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Run this long instead of --total operations (e.g. 30s, 2m, 500ms).
    #[arg(long, value_parser = cli_duration::parse_duration)]
    duration: Option<Duration>,
}

impl LoadArgs {
    fn load(&self) -> Load {
        Load {
            endpoints: self.target.endpoints.clone(),
            conns: self.target.conns,
            clients: self.clients,
            stop: match self.duration {
                Some(d) => Stop::Duration(d),
                None => Stop::Total(self.total),
            },
        }
    }
}

#[derive(Args, Clone)]
struct KeyArgs {
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Key length in bytes (zero-padded numbers).
    #[arg(long, default_value_t = 8)]
    key_size: usize,
}

impl KeyArgs {
    fn keys(&self) -> KeySpace {
        KeySpace {
            prefix: "",
            width: self.key_size,
            space: self.key_space,
        }
    }
}

/// Entry point of `cargo xtask bench ...`.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    match &cli.workload {
        Workload::Compare(args) => compare::build(args.skip_build)?,
        Workload::Large(args) => compare::build(args.skip_build())?,
        _ => {}
    }
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(async {
        // Dropping the run on a signal drops its clusters, which stops the servers.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing a SIGTERM handler")?;
        tokio::select! {
            result = run(cli.workload) => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

async fn run(workload: Workload) -> anyhow::Result<()> {
    let (target, reports) = match workload {
        Workload::Compare(args) => return compare::run(args).await,
        Workload::Large(args) => return large::run(args).await,
        Workload::Put {
            load,
            keys,
            val_size,
        } => {
            let report = workload::put(&load.load(), keys.keys(), val_size).await?;
            (load.target, vec![report])
        }
        Workload::Range {
            load,
            keys,
            consistency,
            no_prefill,
            val_size,
        } => {
            if !no_prefill {
                let filled =
                    workload::prefill(&load.target.endpoints, keys.keys(), val_size).await?;
                eprintln!(
                    "prefilled {} keys in {:.2}s",
                    filled.ops,
                    filled.elapsed.as_secs_f64()
                );
            }
            let serializable = consistency.starts_with('s');
            let report = workload::range(&load.load(), keys.keys(), serializable).await?;
            (load.target, vec![report])
        }
        Workload::Txn {
            load,
            keys,
            val_size,
        } => {
            let report = workload::txn(&load.load(), keys.keys(), val_size).await?;
            (load.target, vec![report])
        }
        Workload::Watch {
            target,
            watchers,
            streams,
            puts,
            val_size,
            writer_shares_conn,
            prefix,
        } => {
            let spec = WatchSpec {
                watchers,
                streams,
                puts,
                val_size,
                idle_timeout: Duration::from_secs(10),
                writer_shares_conn,
                prefix,
            };
            let report = workload::watch(&target.endpoints, target.conns, spec).await?;
            (target, vec![report])
        }
        Workload::List {
            load,
            keys,
            val_size,
            mode,
            page,
            no_prefill,
        } => {
            let space = KeySpace {
                prefix: "list/",
                width: 8,
                space: keys,
            };
            if !no_prefill {
                let filled = workload::prefill(&load.target.endpoints, space, val_size).await?;
                eprintln!(
                    "prefilled {} keys in {:.2}s",
                    filled.ops,
                    filled.elapsed.as_secs_f64()
                );
            }
            let mode = match mode.as_str() {
                "paged" => ListMode::Paged { page },
                "count" => ListMode::Count,
                "keys-only" => ListMode::KeysOnly,
                "stream" => ListMode::Stream,
                _ => ListMode::Whole,
            };
            let report = workload::list(&load.load(), space, mode).await?;
            (load.target, vec![report])
        }
        Workload::Lease { load, ttl } => {
            let reports = workload::lease(&load.load(), ttl).await?;
            (load.target, reports)
        }
        Workload::Compaction {
            load,
            keys,
            val_size,
            history,
        } => {
            let reports =
                workload::compaction(&load.load(), keys.keys(), val_size, history).await?;
            (load.target, reports)
        }
    };
    let label = target.endpoints.join(",");
    for report in &reports {
        report.print(&label);
    }
    if reports.iter().all(|r| r.ops == 0) {
        bail!("no operation succeeded");
    }
    Ok(())
}
