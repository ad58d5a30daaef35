//! The `cairn` binary: an etcd-compatible member.

use anyhow::Context as _;
use cairn_server::config::Config;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: under load glibc's allocator took about 14% of the
/// server's CPU (many small, short-lived buffers across threads) and its per-thread
/// arenas hold on to freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(cfg: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},slog=warn", cfg.log_level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let output = cfg
        .log_outputs
        .split(',')
        .next()
        .unwrap_or("default")
        .trim();
    let writer = match output {
        "" | "default" | "stderr" => BoxMakeWriter::new(std::io::stderr),
        "stdout" => BoxMakeWriter::new(std::io::stdout),
        path => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening --log-outputs {path}"))?;
            BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
    };
    let builder = builder.with_writer(writer);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
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

/// The `cairn` command line: a member started with etcd's flags, or a subcommand.
#[derive(Debug, clap::Parser)]
#[command(
    name = "cairn",
    version,
    about = "cairn: a distributed, reliable key-value store that speaks etcd's protocols",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// etcd's flags, for running a member.
    #[command(flatten)]
    member: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Manages snapshots (etcdutl's `snapshot` commands).
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
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

fn snapshot_command(action: SnapshotAction) -> anyhow::Result<()> {
    let SnapshotAction::Restore {
        file,
        data_dir,
        name,
        initial_cluster,
        initial_cluster_token,
        initial_advertise_peer_urls,
    } = action;
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

/// The flag an unknown-argument error is about, as etcd names it (`-name`, Go's flag
/// package); None for other errors.
fn unknown_flag(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let name = arg.trim_start_matches('-');
    let name = name.split('=').next().unwrap_or(name);
    Some(format!("-{name}"))
}

fn main() -> anyhow::Result<()> {
    let cli = match <Cli as clap::Parser>::try_parse() {
        Ok(cli) => cli,
        Err(e) => match unknown_flag(&e) {
            // etcd's answer (and exit code) for a flag it does not define.
            Some(flag) => {
                eprintln!("flag provided but not defined: {flag}");
                eprintln!("Usage: cairn [flags]  (cairn --help lists them)");
                std::process::exit(2);
            }
            None => e.exit(),
        },
    };
    if let Some(Command::Snapshot { action }) = cli.command {
        return snapshot_command(action);
    }
    // Fault tests configure crash windows and disk errors through FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cfg = cli
        .member
        .with_config_file()
        .context("reading the configuration")?;
    init_logging(&cfg)?;
    let metrics = cairn_server::metrics::prometheus_builder()
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(cairn_server::run(cfg, Some(metrics), stop_signal()));
    // Everything that matters has stopped (the raft node, the backend synced); a
    // blocking task still running (a snapshot being streamed to a client, say) must not
    // hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    outcome.context("cairn stopped")?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser as _};

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn without_a_subcommand_the_flags_are_etcds() {
        let cli = Cli::try_parse_from([
            "cairn",
            "--name",
            "n1",
            "--listen-client-urls",
            "http://127.0.0.1:3379",
            "--initial-election-tick-advance=false",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.member.name, "n1");
        assert_eq!(cli.member.listen_client_urls, "http://127.0.0.1:3379");
        assert!(!cli.member.initial_election_tick_advance);
        assert_eq!(cli.member.max_txn_ops, 128);
    }

    #[test]
    fn snapshot_restore_takes_its_own_flags() {
        let cli = Cli::try_parse_from([
            "cairn",
            "snapshot",
            "restore",
            "backup.db",
            "--data-dir",
            "/tmp/d",
            "--name",
            "m2",
        ])
        .unwrap();
        let Some(Command::Snapshot {
            action:
                SnapshotAction::Restore {
                    file,
                    data_dir,
                    name,
                    initial_cluster_token,
                    ..
                },
        }) = cli.command
        else {
            panic!("not a restore: {cli:?}")
        };
        assert_eq!(file, std::path::PathBuf::from("backup.db"));
        assert_eq!(data_dir, Some(std::path::PathBuf::from("/tmp/d")));
        assert_eq!(
            (name.as_str(), initial_cluster_token.as_str()),
            ("m2", "etcd-cluster")
        );
        // Member flags do not mix with a subcommand.
        assert!(Cli::try_parse_from(["cairn", "--name", "a", "snapshot", "restore", "f"]).is_err());
        assert!(Cli::try_parse_from(["cairn", "snapshot", "frobnicate"]).is_err());
    }
}
