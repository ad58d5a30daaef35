//! etcd's configuration surface: the same flag names, `ETCD_*` environment variables,
//! defaults and YAML config file (`--config-file`, which replaces flags and environment).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use cairn_grpc_gateway::tls::{TlsFiles, TlsPolicy};
use clap::Parser;
use serde::Deserialize;

/// Configuration errors, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL flag holds something that is not an `http://host:port` URL.
    #[error("invalid URL {url:?} in --{flag}: {why}")]
    BadUrl {
        /// The flag.
        flag: &'static str,
        /// The value.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// `--initial-cluster` is malformed or does not name this member.
    #[error("--initial-cluster: {0}")]
    InitialCluster(String),
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// Values that contradict each other.
    #[error("{0}")]
    Invalid(String),
}

/// The `cairn` command line: etcd's flags.
#[derive(Debug, Clone, Parser, Deserialize)]
#[command(
    name = "cairn",
    version,
    about = "cairn: a distributed, reliable key-value store that speaks etcd's protocols"
)]
#[serde(rename_all = "kebab-case", default)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: ${name}.etcd).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Path to the dedicated WAL directory (default: inside the data dir).
    #[arg(long, env = "ETCD_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// List of this member's client URLs to advertise to the public.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (default: ${name}=${initial-advertise-peer-urls}).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Number of entries for a slow follower to catch up after compacting the raft storage entries.
    /// (`--snapshot-catchup-entries` since etcd 3.6; the experimental name is kept.)
    #[arg(
        long,
        visible_alias = "snapshot-catchup-entries",
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5_000
    )]
    pub experimental_snapshot_catchup_entries: u64,
    /// Maximum number of learners in the cluster (etcd 3.6's --max-learners).
    #[arg(
        long,
        visible_alias = "experimental-max-learners",
        env = "ETCD_MAX_LEARNERS",
        default_value_t = 1
    )]
    pub max_learners: usize,
    /// How often the leader compares its compaction hashes with the followers' (etcd
    /// 3.6's --compact-hash-check-time; accepted, cairn checks hashes on request only).
    #[arg(
        long,
        visible_alias = "experimental-compact-hash-check-time",
        env = "ETCD_COMPACT_HASH_CHECK_TIME",
        default_value = "1m0s"
    )]
    pub compact_hash_check_time: String,
    /// etcd's feature gates, `Name=true|false,...` (etcd 3.6+): the names etcd knows are
    /// accepted, with a warning for those cairn has no switch for; others are refused.
    #[arg(long, env = "ETCD_FEATURE_GATES", default_value = "")]
    pub feature_gates: String,
    /// Whether to fast-forward initial election ticks on boot for faster election.
    #[arg(
        long,
        env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub initial_election_tick_advance: bool,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u64,
    /// Raise an alarm when the backend size exceeds the given quota (0 defaults to low
    /// space quota).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Interval of progress notifications for watchers that ask for them (a Go duration
    /// such as `10m0s` or `500ms`).
    /// (`--watch-progress-notify-interval` since etcd 3.6; the experimental name is kept.)
    #[arg(
        long,
        visible_alias = "watch-progress-notify-interval",
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m0s"
    )]
    pub experimental_watch_progress_notify_interval: String,
    /// Automatic compaction: `periodic` (keep a time window of history) or `revision`
    /// (keep a number of revisions); off while --auto-compaction-retention is 0.
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_MODE",
        default_value = "periodic",
        value_parser = ["periodic", "revision"]
    )]
    pub auto_compaction_mode: String,
    /// What automatic compaction keeps: a duration (`1h`, `30m`, or a bare number of
    /// hours) in periodic mode, a revision count in revision mode; 0 turns it off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Path to the client server TLS certificate (PEM) for https:// client URLs.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file (PEM).
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA bundle (PEM), read again when it changes.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client certificate authentication: clients must present a certificate
    /// the trusted CA signed.
    #[arg(
        long,
        env = "ETCD_CLIENT_CERT_AUTH",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub client_cert_auth: bool,
    /// Serve etcd's v2 API (`/v2/keys`, `/v2/members`, `/v2/stats`) on the v3 store.
    #[arg(
        long,
        env = "ETCD_ENABLE_V2",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub enable_v2: bool,
    /// Client TLS with a generated self-signed certificate (in the data dir's
    /// `fixtures/client`) when https:// client URLs have no --cert-file / --key-file.
    #[arg(
        long,
        env = "ETCD_AUTO_TLS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub auto_tls: bool,
    /// The oldest TLS version accepted: TLS1.2 (default) or TLS1.3.
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,
    /// The newest TLS version offered: TLS1.2 or TLS1.3 (empty: the newest there is).
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,
    /// Comma-separated cipher suites (IANA names) for client and peer TLS; empty: the
    /// library's defaults.
    #[arg(long, env = "ETCD_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,
    /// Path to the peer server TLS certificate (PEM), also this member's client
    /// certificate towards its peers.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file (PEM).
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer TLS trusted CA bundle (PEM).
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client certificate authentication.
    #[arg(
        long,
        env = "ETCD_PEER_CLIENT_CERT_AUTH",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub peer_client_cert_auth: bool,
    /// Peer TLS with a generated self-signed certificate (in the data dir's
    /// `fixtures/peer`) when https:// peer URLs have no --peer-cert-file /
    /// --peer-key-file; peers' certificates are then not verified (encryption only).
    #[arg(
        long,
        env = "ETCD_PEER_AUTO_TLS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub peer_auto_tls: bool,
    /// Accept peer client certificates only with this common name (with
    /// --peer-client-cert-auth).
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN", default_value = "")]
    pub peer_cert_allowed_cn: String,
    /// Discovery URL used to bootstrap the cluster (`http://<host>/<token>`, as
    /// discovery.etcd.io and `cairn-discovery` hand out).
    #[arg(long, env = "ETCD_DISCOVERY", default_value = "")]
    pub discovery: String,
    /// What to do when discovery finds the cluster full: `exit` or `proxy` (cairn has no
    /// proxy mode: both stop the member with etcd's `discovery: cluster is full`).
    #[arg(
        long,
        env = "ETCD_DISCOVERY_FALLBACK",
        default_value = "proxy",
        value_parser = ["exit", "proxy"]
    )]
    pub discovery_fallback: String,
    /// v3 discovery (etcd 3.6+): the endpoints of the cairn or etcd cluster that keeps
    /// the registrations (comma-separated), used with --discovery-token.
    #[arg(long, env = "ETCD_DISCOVERY_ENDPOINTS", default_value = "")]
    pub discovery_endpoints: String,
    /// v3 discovery: the token (the keys are under `/_etcd/registry/<token>/`).
    #[arg(long, env = "ETCD_DISCOVERY_TOKEN", default_value = "")]
    pub discovery_token: String,
    /// v3 discovery: the dial timeout (a Go duration).
    #[arg(long, env = "ETCD_DISCOVERY_DIAL_TIMEOUT", default_value = "2s")]
    pub discovery_dial_timeout: String,
    /// v3 discovery: the timeout of each request (a Go duration).
    #[arg(long, env = "ETCD_DISCOVERY_REQUEST_TIMEOUT", default_value = "5s")]
    pub discovery_request_timeout: String,
    /// HTTP proxy for the discovery service: not supported (refused when set).
    #[arg(long, env = "ETCD_DISCOVERY_PROXY", default_value = "")]
    pub discovery_proxy: String,
    /// DNS SRV domain for bootstrapping: not supported (refused when set).
    #[arg(long, env = "ETCD_DISCOVERY_SRV", default_value = "")]
    pub discovery_srv: String,
    /// Auth token type and options: `simple` (opaque tokens valid on the member that
    /// issued them, expiring after --auth-token-ttl) or
    /// `jwt,pub-key=<path>,priv-key=<path>,sign-method=<RS256|ES256|EdDSA|...>,ttl=<duration>`.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Seconds a simple auth token stays valid after its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// bcrypt cost for hashing auth passwords (4 to 31).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// Logging level: debug, info, warn, error.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// The logger: `zap`, the only one etcd 3.5+ has (cairn logs through `tracing`).
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap", value_parser = ["zap"])]
    pub logger: String,
    /// Where logs go: `default` (stderr), `stderr`, `stdout` or a file path
    /// (comma-separated; the first is used).
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    #[serde(deserialize_with = "string_or_list")]
    pub log_outputs: String,
    /// Extra URLs that serve /metrics and the health endpoints (plain HTTP), as etcd's
    /// --listen-metrics-urls (kubeadm probes port 2381 there).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// Log format: text or json.
    #[arg(long, env = "ETCD_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Path to a YAML configuration file; when given, flags and environment are ignored.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// A YAML value given as one string or as a list of them (etcd's config file writes
/// `log-outputs: [stderr]`), as the comma-separated string the flag takes.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match <OneOrMany as serde::Deserialize>::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(v) => v.join(","),
    })
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["cairn"])
    }
}

/// A member of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// Its name.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Turns `http://host:port` into the socket addresses to bind or dial.
pub fn url_addrs(flag: &'static str, url: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let (addrs, tls) = url_addrs_tls(flag, url)?;
    if tls {
        return Err(ConfigError::BadUrl {
            flag,
            url: url.to_string(),
            why: "TLS is not supported yet here (only on client URLs)".to_string(),
        });
    }
    Ok(addrs)
}

/// Turns `http://host:port` or `https://host:port` into the socket addresses to bind or
/// dial, and whether they speak TLS.
pub fn url_addrs_tls(
    flag: &'static str,
    url: &str,
) -> Result<(Vec<SocketAddr>, bool), ConfigError> {
    let bad = |why: &str| ConfigError::BadUrl {
        flag,
        url: url.to_string(),
        why: why.to_string(),
    };
    let expected = "expected a URL of the form http://host:port or https://host:port";
    let uri: http::Uri = url.parse().map_err(|_| bad(expected))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some("unixs" | "unix") => return Err(bad("unix sockets are not supported")),
        _ => return Err(bad(expected)),
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a listen URL has no path"));
    }
    let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
        return Err(bad(expected));
    };
    let addrs: Vec<SocketAddr> = authority
        .as_str()
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .collect();
    // Like etcd, `localhost` means the IPv4 loopback only.
    let v4: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.is_ipv4()).collect();
    let addrs = if host == "localhost" && !v4.is_empty() {
        v4
    } else {
        addrs
    };
    Ok((addrs, tls))
}

impl Config {
    /// Parses the command line and environment, then the config file if one is named.
    pub fn load() -> Result<Config, ConfigError> {
        Config::parse().with_config_file()
    }

    /// The configuration the config file gives, when flags or environment name one
    /// (`--config-file` replaces every other flag, as in etcd); else this one.
    pub fn with_config_file(self) -> Result<Config, ConfigError> {
        match &self.config_file {
            Some(path) => Config::from_file(path),
            None => Ok(self),
        }
    }

    /// Reads a YAML config file with etcd's keys (`name`, `data-dir`, `listen-client-urls`...).
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let mut cfg: Config = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        cfg.config_file = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("member").join("wal"))
    }

    /// The backend (RocksDB) directory.
    pub fn db_dir(&self) -> PathBuf {
        self.data_dir().join("member").join("db")
    }

    /// Client listen addresses.
    pub fn client_listen_addrs(&self) -> Result<Vec<(SocketAddr, bool)>, ConfigError> {
        let mut out = Vec::new();
        for url in split_list(&self.listen_client_urls) {
            let (addrs, tls) = url_addrs_tls("listen-client-urls", &url)?;
            if tls && !self.auto_tls && (self.cert_file.is_none() || self.key_file.is_none()) {
                return Err(ConfigError::Invalid(format!(
                    "--listen-client-urls {url}: TLS needs --cert-file and --key-file"
                )));
            }
            out.extend(addrs.into_iter().map(|a| (a, tls)));
        }
        Ok(out)
    }

    /// The TLS files of the client port, when `--cert-file` and `--key-file` are given.
    pub fn client_tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (cert, key) = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ if self.auto_tls
                && split_list(&self.listen_client_urls)
                    .iter()
                    .any(|u| u.starts_with("https://")) =>
            {
                let mut hosts = Vec::new();
                for url in split_list(&self.listen_client_urls) {
                    if let Ok(uri) = url.parse::<http::Uri>() {
                        hosts.extend(uri.host().map(|h| h.trim_matches(['[', ']']).to_string()));
                    }
                }
                let dir = self.data_dir().join("fixtures").join("client");
                cairn_grpc_gateway::tls::self_signed(&dir, &hosts)
                    .map_err(|e| ConfigError::Invalid(format!("--auto-tls: {e}")))?
            }
            _ => return Ok(None),
        };
        if self.auto_tls && self.cert_file.is_none() {
            return Ok(Some(TlsFiles {
                cert,
                key,
                trusted_ca: None,
                client_cert_auth: false,
                allowed_cn: None,
                policy: self.tls_policy(),
            }));
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(ConfigError::Invalid(
                "--client-cert-auth needs --trusted-ca-file".into(),
            ));
        }
        Ok(Some(TlsFiles {
            cert,
            key,
            trusted_ca: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            allowed_cn: None,
            policy: self.tls_policy(),
        }))
    }

    /// The --listen-metrics-urls addresses (none by default).
    pub fn metrics_listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        for url in split_list(&self.listen_metrics_urls) {
            out.extend(url_addrs("listen-metrics-urls", &url)?);
        }
        Ok(out)
    }

    /// Peer listen addresses.
    pub fn peer_listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let tls = self.peer_tls()?.is_some();
        let mut out = Vec::new();
        for url in split_list(&self.listen_peer_urls) {
            let (addrs, https) = url_addrs_tls("listen-peer-urls", &url)?;
            if https != tls {
                return Err(ConfigError::Invalid(format!(
                    "--listen-peer-urls {url}: {}",
                    if https {
                        "TLS needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file"
                    } else {
                        "with peer TLS configured, peer URLs are https://"
                    }
                )));
            }
            out.extend(addrs);
        }
        Ok(out)
    }

    /// The peer port's TLS files, when `--peer-cert-file` and `--peer-key-file` are
    /// given (a peer CA is then required: members check each other).
    pub fn peer_tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.peer_cert_file, &self.peer_key_file) else {
            let https: Vec<String> = split_list(&self.listen_peer_urls)
                .into_iter()
                .filter(|u| u.starts_with("https://"))
                .collect();
            if !self.peer_auto_tls || https.is_empty() {
                return Ok(None);
            }
            let hosts = https
                .iter()
                .filter_map(|url| url.parse::<http::Uri>().ok())
                .filter_map(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_string()))
                .collect::<Vec<_>>();
            let dir = self.data_dir().join("fixtures").join("peer");
            let (cert, key) = cairn_grpc_gateway::tls::self_signed(&dir, &hosts)
                .map_err(|e| ConfigError::Invalid(format!("--peer-auto-tls: {e}")))?;
            return Ok(Some(TlsFiles {
                cert,
                key,
                trusted_ca: None,
                client_cert_auth: false,
                allowed_cn: None,
                policy: self.tls_policy(),
            }));
        };
        let Some(ca) = &self.peer_trusted_ca_file else {
            return Err(ConfigError::Invalid(
                "peer TLS needs --peer-trusted-ca-file".into(),
            ));
        };
        Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            trusted_ca: Some(ca.clone()),
            client_cert_auth: self.peer_client_cert_auth,
            allowed_cn: Some(self.peer_cert_allowed_cn.clone()).filter(|cn| !cn.is_empty()),
            policy: self.tls_policy(),
        }))
    }

    /// `--tls-min-version`, `--tls-max-version` and `--cipher-suites`.
    pub fn tls_policy(&self) -> TlsPolicy {
        TlsPolicy {
            min_version: Some(self.tls_min_version.clone()),
            max_version: Some(self.tls_max_version.clone()),
            cipher_suites: split_list(&self.cipher_suites),
        }
    }

    /// Advertised client URLs.
    pub fn advertise_client_urls(&self) -> Vec<String> {
        split_list(&self.advertise_client_urls)
    }

    /// Advertised peer URLs.
    pub fn advertise_peer_urls(&self) -> Vec<String> {
        split_list(&self.initial_advertise_peer_urls)
    }

    /// `--initial-cluster` parsed; by default this member alone at its advertised peer URLs.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ConfigError> {
        let spec = match &self.initial_cluster {
            Some(s) if !s.trim().is_empty() => s.clone(),
            _ => self
                .advertise_peer_urls()
                .iter()
                .map(|u| format!("{}={}", self.name, u))
                .collect::<Vec<_>>()
                .join(","),
        };
        let mut members: Vec<InitialMember> = Vec::new();
        for part in split_list(&spec) {
            let (name, url) = part.split_once('=').ok_or_else(|| {
                ConfigError::InitialCluster(format!("{part:?} is not of the form name=url"))
            })?;
            url_addrs_tls("initial-cluster", url)?;
            match members.iter_mut().find(|m| m.name == name) {
                Some(m) => m.peer_urls.push(url.to_string()),
                None => members.push(InitialMember {
                    name: name.to_string(),
                    peer_urls: vec![url.to_string()],
                }),
            }
        }
        let me = members
            .iter()
            .find(|m| m.name == self.name)
            .ok_or_else(|| {
                ConfigError::InitialCluster(format!(
                    "couldn't find local name {:?} in the initial cluster configuration",
                    self.name
                ))
            })?;
        let mut mine = me.peer_urls.clone();
        let mut adv = self.advertise_peer_urls();
        mine.sort();
        adv.sort();
        if mine != adv {
            return Err(ConfigError::InitialCluster(format!(
                "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} (it lists {})",
                mine.join(","),
                adv.join(","),
                self.initial_advertise_peer_urls
            )));
        }
        Ok(members)
    }

    /// Raft tick and election ticks from the millisecond flags.
    pub fn raft_timing(&self) -> Result<(Duration, usize), ConfigError> {
        if self.heartbeat_interval == 0 {
            return Err(ConfigError::Invalid(
                "--heartbeat-interval must be > 0".into(),
            ));
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        Ok((
            Duration::from_millis(self.heartbeat_interval),
            (self.election_timeout / self.heartbeat_interval) as usize,
        ))
    }

    /// How long a request may wait for raft (etcd: 5 s + 2 x election timeout).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + Duration::from_millis(2 * self.election_timeout)
    }

    /// The backend quota in bytes: `--quota-backend-bytes`, or etcd's 2 GiB for 0.
    pub fn quota_backend_bytes(&self) -> u64 {
        match self.quota_backend_bytes {
            0 => crate::alarms::DEFAULT_QUOTA_BYTES,
            n => n,
        }
    }

    /// The interval of watch progress notifications.
    pub fn watch_progress_notify_interval(&self) -> Result<Duration, ConfigError> {
        let value = &self.experimental_watch_progress_notify_interval;
        match parse_go_duration(value) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(ConfigError::Invalid(format!(
                "--experimental-watch-progress-notify-interval: invalid duration {value:?}"
            ))),
        }
    }
}

/// The feature gates etcd 3.7 knows, with what cairn does about each.
pub const FEATURE_GATES: [(&str, &str); 8] = [
    (
        "StopGRPCServiceOnDefrag",
        "not needed: cairn's defragmentation does not stop serving",
    ),
    (
        "TxnModeWriteWithSharedBuffer",
        "no effect: a bbolt buffer setting",
    ),
    (
        "InitialCorruptCheck",
        "no effect yet: cairn checks hashes on request (HashKV)",
    ),
    (
        "CompactHashCheck",
        "no effect yet: cairn checks hashes on request (HashKV)",
    ),
    ("LeaseCheckpoint", "always on in cairn"),
    ("LeaseCheckpointPersist", "always on in cairn"),
    (
        "SetMemberLocalAddr",
        "no effect: peers dial from any local address",
    ),
    (
        "FastLeaseKeepAlive",
        "no effect: keep-alives do not wait for apply",
    ),
];

/// The automatic compaction the flags ask for (`crate::auto_compact` runs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

impl Config {
    /// The feature gates set (name, value), checked as etcd checks them: every name one
    /// etcd knows (or `AllAlpha` / `AllBeta`), every value a boolean.
    pub fn feature_gates(&self) -> Result<Vec<(String, bool)>, ConfigError> {
        let mut out = Vec::new();
        for part in split_list(&self.feature_gates) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(ConfigError::Invalid(format!(
                    "--feature-gates: missing bool value for {part}"
                )));
            };
            let (name, value) = (name.trim(), value.trim());
            let known = FEATURE_GATES.iter().any(|(n, _)| *n == name)
                || name == "AllAlpha"
                || name == "AllBeta";
            if !known {
                return Err(ConfigError::Invalid(format!(
                    "--feature-gates: unrecognized feature gate: {name}"
                )));
            }
            let value = match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "t" => true,
                "false" | "0" | "f" => false,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "--feature-gates: invalid value of {name}={value}, err: \
                         strconv.ParseBool: parsing {value:?}: invalid syntax"
                    )))
                }
            };
            out.push((name.to_string(), value));
        }
        Ok(out)
    }

    /// The automatic compaction the flags ask for; None when it is off.
    pub fn auto_compaction(&self) -> Result<Option<AutoCompaction>, ConfigError> {
        let text = self.auto_compaction_retention.trim();
        let bad = || {
            ConfigError::Invalid(format!(
                "--auto-compaction-retention: invalid value {text:?} for mode {:?}",
                self.auto_compaction_mode
            ))
        };
        if text.is_empty() || text == "0" {
            return Ok(None);
        }
        match self.auto_compaction_mode.as_str() {
            "revision" => match text.parse::<i64>() {
                Ok(n) if n > 0 => Ok(Some(AutoCompaction::Revision(n))),
                _ => Err(bad()),
            },
            _ => {
                // A bare number is hours, as in etcd.
                let window = match text.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.checked_mul(3600).ok_or_else(bad)?),
                    Err(_) => parse_go_duration(text).ok_or_else(bad)?,
                };
                if window.is_zero() {
                    return Ok(None);
                }
                Ok(Some(AutoCompaction::Periodic(window)))
            }
        }
    }
}

/// Parses a Go duration (`1h2m3.5s`, `500ms`, `10us`; a bare `0` is zero).
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|n| *n > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_compaction_flags_read_as_etcd_reads_them() {
        let with = |mode: &str, retention: &str| {
            Config::parse_from([
                "cairn".to_string(),
                format!("--auto-compaction-mode={mode}"),
                format!("--auto-compaction-retention={retention}"),
            ])
            .auto_compaction()
        };
        assert_eq!(Config::default().auto_compaction().unwrap(), None);
        assert_eq!(
            with("periodic", "1").unwrap(),
            Some(AutoCompaction::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            with("periodic", "30m").unwrap(),
            Some(AutoCompaction::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(
            with("revision", "1000").unwrap(),
            Some(AutoCompaction::Revision(1000))
        );
        assert_eq!(with("revision", "0").unwrap(), None);
        for (mode, bad) in [("revision", "1h"), ("revision", "-5"), ("periodic", "soon")] {
            assert!(with(mode, bad).is_err(), "{mode} {bad}");
        }
    }

    #[test]
    fn etcd_36_flag_names_and_feature_gates() {
        let c = Config::parse_from([
            "cairn",
            "--snapshot-catchup-entries",
            "100",
            "--watch-progress-notify-interval",
            "5s",
            "--max-learners",
            "2",
            "--compact-hash-check-time",
            "2m",
            "--feature-gates",
            "StopGRPCServiceOnDefrag=true,CompactHashCheck=false",
        ]);
        assert_eq!(
            (c.experimental_snapshot_catchup_entries, c.max_learners),
            (100, 2)
        );
        assert_eq!(c.experimental_watch_progress_notify_interval, "5s");
        assert_eq!(
            c.feature_gates().unwrap(),
            vec![
                ("StopGRPCServiceOnDefrag".to_string(), true),
                ("CompactHashCheck".to_string(), false)
            ]
        );
        let gates = |g: &str| Config::parse_from(["cairn", "--feature-gates", g]).feature_gates();
        assert!(
            matches!(gates("NoSuchGate=true"), Err(ConfigError::Invalid(m)) if m.contains("unrecognized feature gate: NoSuchGate"))
        );
        assert!(gates("CompactHashCheck=maybe").is_err());
        assert!(gates("CompactHashCheck").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10m0s"), Some(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration(""), None);
        let c = Config::default();
        assert_eq!(
            c.watch_progress_notify_interval().unwrap(),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn defaults_are_etcds() {
        let c = Config::default();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir(), PathBuf::from("default.etcd"));
        assert_eq!(
            c.client_listen_addrs().unwrap(),
            vec![("127.0.0.1:2379".parse::<SocketAddr>().unwrap(), false)]
        );
        let m = c.initial_members().unwrap();
        assert_eq!(
            m,
            vec![InitialMember {
                name: "default".into(),
                peer_urls: vec!["http://localhost:2380".into()]
            }]
        );
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.snapshot_count, 10_000);
        assert_eq!(
            (c.max_learners, c.experimental_snapshot_catchup_entries),
            (1, 5_000)
        );
        assert_eq!(c.quota_backend_bytes(), 2_147_483_648);
    }

    #[test]
    fn initial_cluster_must_name_this_member() {
        let c = Config::parse_from([
            "cairn",
            "--name",
            "a",
            "--initial-cluster",
            "b=http://127.0.0.1:2380",
        ]);
        assert!(c.initial_members().is_err());
    }

    #[test]
    fn config_file_uses_etcd_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(
            &path,
            "name: n1\ndata-dir: /tmp/x\nlisten-client-urls: http://127.0.0.1:3379\nsnapshot-count: 5\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.name, "n1");
        assert_eq!(c.data_dir(), PathBuf::from("/tmp/x"));
        assert_eq!(c.snapshot_count, 5);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(
            (c.logger.as_str(), c.log_outputs.as_str()),
            ("zap", "default")
        );

        // etcd's own config files list the log outputs.
        std::fs::write(
            &path,
            "logger: zap\nlog-outputs: [stdout, stderr]\nlisten-metrics-urls: http://127.0.0.1:2381\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.log_outputs, "stdout,stderr");
        assert_eq!(
            c.metrics_listen_addrs().unwrap(),
            vec!["127.0.0.1:2381".parse().unwrap()]
        );
    }

    #[test]
    fn tls_urls_need_their_files() {
        let e = url_addrs("listen-peer-urls", "https://127.0.0.1:2380").unwrap_err();
        assert!(
            e.to_string().contains("TLS is not supported yet here"),
            "{e}"
        );
        let no_files =
            Config::parse_from(["cairn", "--listen-client-urls", "https://127.0.0.1:2379"]);
        let e = no_files.client_listen_addrs().unwrap_err();
        assert!(
            e.to_string()
                .contains("TLS needs --cert-file and --key-file"),
            "{e}"
        );
        let with = Config::parse_from([
            "cairn",
            "--listen-client-urls",
            "http://127.0.0.1:2379,https://127.0.0.1:2479",
            "--cert-file",
            "/c.pem",
            "--key-file",
            "/k.pem",
            "--client-cert-auth",
        ]);
        assert_eq!(
            with.client_listen_addrs().unwrap(),
            vec![
                ("127.0.0.1:2379".parse().unwrap(), false),
                ("127.0.0.1:2479".parse().unwrap(), true)
            ]
        );
        let e = with.client_tls().unwrap_err();
        assert!(
            e.to_string()
                .contains("--client-cert-auth needs --trusted-ca-file"),
            "{e}"
        );
    }

    #[test]
    fn listen_urls_are_http_host_port() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            url_addrs("listen-client-urls", "http://127.0.0.1:2379/").unwrap(),
            vec![addr("127.0.0.1:2379")]
        );
        assert_eq!(
            url_addrs("listen-peer-urls", "http://[::1]:2380").unwrap(),
            vec![addr("[::1]:2380")]
        );
        assert_eq!(
            url_addrs("listen-peer-urls", "http://localhost:2380").unwrap(),
            vec![addr("127.0.0.1:2380")]
        );
        for (url, why) in [
            (
                "127.0.0.1:2379",
                "expected a URL of the form http://host:port or https://host:port",
            ),
            (
                "ftp://127.0.0.1:2379",
                "expected a URL of the form http://host:port or https://host:port",
            ),
            ("unixs://sock:1", "unix sockets are not supported"),
            ("http://127.0.0.1:2379/v3", "a listen URL has no path"),
        ] {
            let e = url_addrs("listen-client-urls", url).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid URL {url:?} in --listen-client-urls: {why}")
            );
        }
        assert!(url_addrs("listen-client-urls", "http://127.0.0.1").is_err());
    }
}
