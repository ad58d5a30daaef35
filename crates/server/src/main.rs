//! The `cairn` binary: an etcd-compatible member.

use anyhow::Context as _;
use cairn_server::config::Config;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

fn init_logging(cfg: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},slog=warn", cfg.log_level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// etcd's buckets for disk latency histograms: 1 ms doubling to about 8 s.
fn disk_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.001 * 2f64.powi(i)).collect()
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() -> anyhow::Result<()> {
    let cfg = Config::load().context("reading the configuration")?;
    init_logging(&cfg);
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("etcd_disk_wal_fsync_duration_seconds".into()),
            &disk_buckets(),
        )
        .context("metric buckets")?
        .set_buckets_for_metric(
            Matcher::Full("etcd_debugging_lease_ttl_total".into()),
            &cairn_server::lease::ttl_buckets(),
        )
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(cairn_server::run(cfg, Some(metrics), stop_signal()))
        .context("cairn stopped")?;
    tracing::info!("stopped");
    Ok(())
}
