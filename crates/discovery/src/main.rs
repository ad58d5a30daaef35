//! `cairn-discovery`: the discovery service, storing its state in a cairn (or etcd)
//! cluster given by `--endpoints`.

use std::time::Duration;

use anyhow::Context as _;
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
    /// The cairn or etcd cluster that keeps the tokens (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// How long a token lives, in seconds (a week by default).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    token_ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kv = etcd_client::Client::connect(&args.endpoints, None)
        .await
        .with_context(|| format!("connecting to {:?}", args.endpoints))?;
    let base = args
        .base_url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let service = cairn_discovery::Service::new(kv, base, Duration::from_secs(args.token_ttl));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving discovery");
    axum::serve(listener, service.router())
        .await
        .context("serving")?;
    Ok(())
}
