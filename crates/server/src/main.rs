//! The `cairn` binary: an etcd-compatible member.

use anyhow::Context as _;
use cairn_server::config::Config;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: under load glibc's allocator took about 14% of the
/// server's CPU (many small, short-lived buffers across threads) and its per-thread
/// arenas hold on to freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// `cairn snapshot restore`: etcdutl's command of that name.
#[derive(Debug, clap::Parser)]
#[command(name = "cairn snapshot", about = "Manages cairn snapshots")]
struct SnapshotCommand {
    #[command(subcommand)]
    action: SnapshotAction,
}

#[derive(Debug, clap::Subcommand)]
enum SnapshotAction {
    /// Builds a new data dir from a snapshot (`etcdctl snapshot save`); start the member
    /// on it with the same --name and --initial-* flags.
    Restore {
        /// The snapshot file.
        file: std::path::PathBuf,
        /// The data dir to create (default: ${name}.etcd).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Human-readable name for this member.
        #[arg(long, default_value = "default")]
        name: String,
        /// The cluster the restored members form.
        #[arg(long)]
        initial_cluster: Option<String>,
        /// The new cluster's token.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
    },
}

fn snapshot_command() -> anyhow::Result<()> {
    let SnapshotCommand {
        action:
            SnapshotAction::Restore {
                file,
                data_dir,
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
            },
    } = <SnapshotCommand as clap::Parser>::parse_from(std::env::args().skip(1));
    let cfg = Config {
        name,
        data_dir,
        initial_cluster,
        initial_cluster_token,
        initial_advertise_peer_urls,
        ..Config::default()
    };
    // The flags are not stored: the member derives its ids from them at its first start,
    // so a mistake is worth catching now.
    cfg.initial_members()
        .context("checking the --initial-cluster flags")?;
    let data_dir = cfg.data_dir();
    cairn_server::restore_snapshot(&file, &data_dir)
        .with_context(|| format!("restoring {}", file.display()))?;
    println!(
        "restored snapshot {} into {}",
        file.display(),
        data_dir.display()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("snapshot") {
        return snapshot_command();
    }
    // Fault tests configure crash windows and disk errors through FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cfg = Config::load().context("reading the configuration")?;
    init_logging(&cfg);
    let metrics = cairn_server::metrics::prometheus_builder()
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
