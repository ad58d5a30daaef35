//! `cargo xtask bench large`: one member with a large store (10M keys of 1 KiB, about
//! 10 GiB of values, by default): load time and rate, RSS and backend size as the store
//! grows (100k, 1M, then every further million keys), put and range QPS at full size,
//! and restart-to-serving after a SIGKILL. A command to run by hand, not part of CI.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_proto::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
use clap::Args;

use super::report::mib;
use super::server::{Cluster, Kind};
use super::workload::{self, KeySpace, Load, Stop};

#[derive(Args, Clone, Debug)]
pub struct LargeArgs {
    /// Keys to load (each written once).
    #[arg(long, default_value_t = 10_000_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    val_size: usize,
    /// The server to load: cairn or etcd.
    #[arg(long, default_value = "cairn", value_parser = ["cairn", "etcd"])]
    server: String,
    /// `--quota-backend-bytes` of the member (64 GiB; etcd documents 8 GiB as its
    /// ceiling).
    #[arg(long, default_value_t = 64 << 30)]
    quota_backend_bytes: u64,
    /// How long each put and range run at full size lasts (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = super::cli_duration::parse_duration)]
    measure: Duration,
    /// Use the existing release binary instead of running the release build first.
    #[arg(long)]
    skip_build: bool,
    /// The cairn binary (built by `cargo build --release --locked --bin cairn`).
    #[arg(long, default_value = "/var/tmp/cairn-target/release/cairn")]
    cairn_bin: PathBuf,
    /// The etcd binary (Debian: apt-get install etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
}

impl LargeArgs {
    pub fn skip_build(&self) -> bool {
        self.skip_build || self.server == "etcd"
    }
}

/// The store's size as the member reports it (Maintenance.Status `db_size`).
async fn db_size(endpoint: &str) -> anyhow::Result<i64> {
    let channel = workload::connect(&[endpoint.to_string()], 1)
        .await?
        .remove(0);
    let status = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .context("Maintenance.Status")?
        .into_inner();
    Ok(status.db_size)
}

/// Where the load stops to report: 100k, 1M, then every further million, and the end.
fn milestones(keys: u64) -> Vec<u64> {
    let mut marks: Vec<u64> = [100_000u64]
        .into_iter()
        .chain((1..).map(|m| m * 1_000_000).take_while(|&m| m < keys))
        .filter(|&m| m < keys)
        .collect();
    marks.push(keys);
    marks
}

pub async fn run(args: LargeArgs) -> anyhow::Result<()> {
    let (kind, bin) = match args.server.as_str() {
        "etcd" => (Kind::Etcd, &args.etcd_bin),
        _ => (Kind::Cairn, &args.cairn_bin),
    };
    let quota = args.quota_backend_bytes.to_string();
    let mut cluster = Cluster::start_with(
        kind,
        bin,
        1,
        vec!["--quota-backend-bytes".into(), quota.clone()],
    )?;
    cluster.wait_ready(Duration::from_secs(10)).await?;
    let endpoints = cluster.endpoints();
    let endpoint = endpoints[0].clone();
    eprintln!(
        "== {kind}: {} keys of {} B into {} (--quota-backend-bytes {quota})",
        args.keys,
        args.val_size,
        cluster.data_dir().display()
    );
    let keys = KeySpace {
        prefix: "large/",
        width: 9,
        space: args.keys,
    };
    let mut rows = vec![
        "| keys loaded | load time (cumulative) | rate of the step | RSS | backend size |"
            .to_string(),
        "|---:|---:|---:|---:|---:|".to_string(),
    ];
    let started = Instant::now();
    let mut from = 0;
    for mark in milestones(args.keys) {
        let step = workload::prefill_part(&endpoints, keys, from..mark, args.val_size).await?;
        from = mark;
        let size = db_size(&endpoint).await.unwrap_or(-1);
        let row = format!(
            "| {mark} | {:.0} s | {:.0}/s | {:.0} MiB | {:.0} MiB |",
            started.elapsed().as_secs_f64(),
            step.qps(),
            mib(cluster.rss()),
            size as f64 / (1024.0 * 1024.0)
        );
        eprintln!("{row}");
        rows.push(row);
    }
    let load_secs = started.elapsed().as_secs_f64();

    let load = |clients: usize, conns: usize| Load {
        endpoints: endpoints.clone(),
        conns,
        clients,
        stop: Stop::Duration(args.measure),
    };
    let mut runs = vec![
        "| at full size | QPS | p50 | p99 | server CPU per op | peak RSS |".to_string(),
        "|---|---:|---:|---:|---:|---:|".to_string(),
    ];
    for (name, which) in [
        ("put, 256 clients / 16 conns", 0),
        ("range linearizable, 256 clients", 1),
        ("range serializable, 256 clients", 2),
    ] {
        cluster.reset_peak_rss();
        let cpu = cluster.cpu_time();
        let report = match which {
            0 => workload::put(&load(256, 16), keys, args.val_size).await?,
            1 => workload::range(&load(256, 16), keys, false).await?,
            _ => workload::range(&load(256, 16), keys, true).await?,
        };
        let cpu = cluster.cpu_time().saturating_sub(cpu);
        report.print(&format!("{kind} {name}"));
        let row = format!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.0} µs | {:.0} MiB |",
            report.qps(),
            report.latency.quantile_us(0.5) as f64 / 1000.0,
            report.latency.quantile_us(0.99) as f64 / 1000.0,
            cpu.as_secs_f64() * 1e6 / report.ops.max(1) as f64,
            mib(cluster.peak_rss())
        );
        eprintln!("{row}");
        runs.push(row);
    }

    let size = db_size(&endpoint).await.unwrap_or(-1);
    let rss = cluster.rss();
    cluster.kill();
    let restarted = Instant::now();
    cluster.restart()?;
    let serving = cluster.wait_ready(Duration::from_secs(1800)).await;
    let restart = restarted.elapsed();
    let after = cluster.rss();
    let restart_line = match serving {
        Ok(_) => format!(
            "SIGKILL, restart: serving a linearizable Range after {:.1} s; RSS then {:.0} MiB (before the kill {:.0} MiB)",
            restart.as_secs_f64(),
            mib(after),
            mib(rss)
        ),
        Err(err) => format!("SIGKILL, restart: not serving after {:.0} s: {err:#}", restart.as_secs_f64()),
    };

    println!();
    println!(
        "{kind}: {} keys x {} B loaded in {load_secs:.0} s ({:.0} keys/s), backend {:.2} GiB",
        args.keys,
        args.val_size,
        args.keys as f64 / load_secs.max(f64::EPSILON),
        size as f64 / (1u64 << 30) as f64
    );
    println!();
    for row in rows.iter().chain([String::new()].iter()).chain(runs.iter()) {
        println!("{row}");
    }
    println!();
    println!("{restart_line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::milestones;

    #[test]
    fn stops_at_100k_each_million_and_the_end() {
        assert_eq!(milestones(50_000), vec![50_000]);
        assert_eq!(milestones(1_000_000), vec![100_000, 1_000_000]);
        assert_eq!(
            milestones(2_500_000),
            vec![100_000, 1_000_000, 2_000_000, 2_500_000]
        );
    }
}
