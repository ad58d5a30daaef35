//! `cairn-discovery`: the discovery service, storing its state in a cairn (or etcd)
//! cluster given by `--endpoints`, or by default in a single-member cairn it runs itself
//! (the `cairn` binary beside its own, on a data dir of its own).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;

/// Serves discovery tokens for bootstrapping clusters (discovery.etcd.io's protocol).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8087")]
    listen: String,
    /// The URL members reach this service at (token URLs start with it); default
    /// http://<listen>.
    #[arg(long)]
    base_url: Option<String>,
    /// The cairn or etcd cluster that keeps the tokens (comma-separated); without it,
    /// an embedded single-member cairn on --data-dir keeps them.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The embedded cairn's data dir.
    #[arg(long, default_value = "cairn-discovery.data")]
    data_dir: PathBuf,
    /// The embedded cairn's binary (default: `cairn` beside this one).
    #[arg(long)]
    cairn_bin: Option<PathBuf>,
    /// How long a token lives, in seconds (a week by default).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    token_ttl: u64,
    /// A token of this name to have from the start (kept if it exists), so that
    /// members can be given its URL before the service runs (e.g. in docker-compose).
    #[arg(long)]
    init_token: Option<String>,
    /// The size of --init-token's cluster.
    #[arg(long, default_value_t = 3)]
    init_size: u64,
}

/// Starts the embedded cairn on a free loopback port; its endpoint. The child stops with
/// this process.
async fn embedded(args: &Args) -> anyhow::Result<(tokio::process::Child, String)> {
    let binary = match &args.cairn_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("locating the cairn binary")?
            .join("cairn"),
    };
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (client, peer) = (free()?, free()?);
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = tokio::process::Command::new(&binary)
        .arg("--name")
        .arg("discovery")
        .arg("--data-dir")
        .arg(&args.data_dir)
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("discovery={peer_url}")])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the embedded cairn ({})", binary.display()))?;
    Ok((child, format!("127.0.0.1:{client}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut _embedded = None;
    let endpoints = if args.endpoints.is_empty() {
        let (child, endpoint) = embedded(&args).await?;
        _embedded = Some(child);
        tracing::info!(%endpoint, data_dir = %args.data_dir.display(), "embedded cairn started");
        vec![endpoint]
    } else {
        args.endpoints.clone()
    };
    // The store may still be starting: try for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kv = loop {
        let attempt = match etcd_client::Client::connect(&endpoints, None).await {
            Ok(mut kv) => match kv.get("health", None).await {
                Ok(_) => Ok(kv),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match attempt {
            Ok(kv) => break kv,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => bail!("{endpoints:?} does not answer: {e}"),
        }
    };
    let base = args
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let service = cairn_discovery::Service::new(kv, base, Duration::from_secs(args.token_ttl));
    if let Some(token) = &args.init_token {
        let url = service
            .ensure_token(token, args.init_size)
            .await
            .with_context(|| format!("creating the token {token}"))?;
        tracing::info!(%url, size = args.init_size, "token ready");
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving discovery");
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    axum::serve(listener, service.router())
        .with_graceful_shutdown(stop)
        .await
        .context("serving")?;
    Ok(())
}
