//! TLS on the client port (`https://` listen URLs, `--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth`), driven with the real etcdctl and
//! certificates made at test time with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::{etcdctl, free_port, server_kind, Cluster, Server, ServerKind, ServerOpts};

/// A CA and the certificates it signed, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A self-signed CA `<name>.pem` / `<name>.key`.
    fn ca(&self, name: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// `<name>.pem` / `<name>.key` with common name `cn`, signed by CA `ca`, for a
    /// server (`127.0.0.1`) or a client.
    fn issue(&self, ca: &str, name: &str, cn: &str, server: bool) {
        self.issue_with(
            ca,
            name,
            cn,
            if server {
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            } else {
                "extendedKeyUsage=clientAuth\n"
            },
        );
    }

    /// A certificate for a member's peer port: server and client at once.
    fn issue_peer(&self, ca: &str, name: &str) {
        self.issue_with(
            ca,
            name,
            name,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
    }

    fn issue_with(&self, ca: &str, name: &str, cn: &str, ext: &str) {
        let dir = self.dir.path();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

/// A member that also listens on `https` with `server.pem`, requiring client
/// certificates `ca.pem` signed.
fn mutual_tls(pki: &Pki, https: &str) -> ServerOpts {
    ServerOpts::new()
        .also_listen(https)
        .arg("--cert-file")
        .arg(&pki.arg("server.pem"))
        .arg("--key-file")
        .arg(&pki.arg("server.key"))
        .arg("--trusted-ca-file")
        .arg(&pki.arg("ca.pem"))
        .arg("--client-cert-auth")
}

/// etcdctl against `url` with the given TLS flags.
fn ctl(url: &str, tls: &[String], args: &[&str]) -> cairn_tests::CtlOutput {
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    etcdctl(&[url.to_string()], &all)
}

#[test]
fn etcdctl_talks_tls_and_client_certificates_are_required_when_asked() {
    let pki = Pki::new();
    pki.issue("ca", "server", "cairn", true);
    pki.issue("ca", "client", "root", false);
    let port = free_port();
    let https = format!("https://127.0.0.1:{port}");
    let server = Server::start(mutual_tls(&pki, &https));
    let with_cert = vec![
        format!("--cacert={}", pki.arg("ca.pem")),
        format!("--cert={}", pki.arg("client.pem")),
        format!("--key={}", pki.arg("client.key")),
    ];
    assert_eq!(
        ctl(&https, &with_cert, &["put", "k", "over-tls"]).ok(),
        "OK\n"
    );
    assert_eq!(ctl(&https, &with_cert, &["get", "k"]).ok(), "k\nover-tls\n");
    // The plain listener beside it serves the same data.
    assert_eq!(
        server.etcdctl(&["get", "k", "--print-value-only"]).ok(),
        "over-tls\n"
    );
    // Without a client certificate: refused.
    let no_cert = vec![
        format!("--cacert={}", pki.arg("ca.pem")),
        "--dial-timeout=2s".to_string(),
        "--command-timeout=3s".to_string(),
    ];
    let refused = ctl(&https, &no_cert, &["get", "k"]);
    assert!(!refused.success(), "{refused:?}");
    // A client that does not trust the server's CA: refused.
    pki.ca("other");
    let wrong_ca = vec![
        format!("--cacert={}", pki.arg("other.pem")),
        format!("--cert={}", pki.arg("client.pem")),
        format!("--key={}", pki.arg("client.key")),
        "--dial-timeout=2s".to_string(),
        "--command-timeout=3s".to_string(),
    ];
    assert!(!ctl(&https, &wrong_ca, &["get", "k"]).success());
}

#[test]
fn a_replaced_certificate_and_ca_bundle_serve_the_next_connection() {
    if server_kind() == ServerKind::Etcd {
        return; // etcd reloads certificates but not CA bundles
    }
    let pki = Pki::new();
    pki.issue("ca", "server", "cairn", true);
    pki.issue("ca", "client", "root", false);
    let port = free_port();
    let https = format!("https://127.0.0.1:{port}");
    let _server = Server::start(mutual_tls(&pki, &https));
    let tls = |ca: &str, client: &str| {
        vec![
            format!("--cacert={}", pki.arg(&format!("{ca}.pem"))),
            format!("--cert={}", pki.arg(&format!("{client}.pem"))),
            format!("--key={}", pki.arg(&format!("{client}.key"))),
            "--dial-timeout=2s".to_string(),
            "--command-timeout=3s".to_string(),
        ]
    };
    assert_eq!(
        ctl(&https, &tls("ca", "client"), &["put", "k", "v1"]).ok(),
        "OK\n"
    );

    // A new CA issues a new server and client certificate; the files are replaced.
    pki.ca("ca2");
    pki.issue("ca2", "server2", "cairn", true);
    pki.issue("ca2", "client2", "root", false);
    for (from, to) in [
        ("server2.pem", "server.pem"),
        ("server2.key", "server.key"),
        ("ca2.pem", "ca.pem.new"),
    ] {
        std::fs::copy(pki.path(from), pki.path(to)).unwrap();
    }
    // The CA bundle is swapped in one rename, as an operator's tooling would.
    std::fs::copy(pki.path("ca.pem"), pki.path("ca-old.pem")).unwrap();
    std::fs::rename(pki.path("ca.pem.new"), pki.path("ca.pem")).unwrap();

    // The next connection uses the new files: the new chain works, the old one does not.
    assert_eq!(
        ctl(
            &https,
            &tls("ca", "client2"),
            &["get", "k", "--print-value-only"]
        )
        .ok(),
        "v1\n"
    );
    let old = ctl(&https, &tls("ca-old", "client"), &["get", "k"]);
    assert!(!old.success(), "{old:?}");
}

#[test]
fn a_member_with_a_bad_certificate_says_so_and_exits() {
    if server_kind() == ServerKind::Etcd {
        return; // etcd's wording differs
    }
    let pki = Pki::new();
    pki.issue("ca", "server", "cairn", true);
    // A key that is not the certificate's.
    pki.issue("ca", "other", "someone", true);
    let port = free_port();
    let mut server = Server::launch(
        ServerOpts::new()
            .also_listen(&format!("https://127.0.0.1:{port}"))
            .arg("--cert-file")
            .arg(&pki.arg("server.pem"))
            .arg("--key-file")
            .arg(&pki.arg("other.key")),
    );
    let status = server.wait_exit(std::time::Duration::from_secs(20));
    assert!(!status.success());
    let log = server.log_tail(400);
    assert!(
        log.lines()
            .any(|l| l.contains("client TLS: TLS configuration:")),
        "{log}"
    );
}

#[test]
fn a_cluster_with_peer_tls_replicates_and_catches_up_a_member_by_snapshot() {
    let pki = Pki::new();
    pki.issue_peer("ca", "peer");
    let snapshot_count = 100;
    let mut cluster = Cluster::start_with_peer_tls(3, |o| {
        let o = o
            .arg("--peer-cert-file")
            .arg(&pki.arg("peer.pem"))
            .arg("--peer-key-file")
            .arg(&pki.arg("peer.key"))
            .arg("--peer-trusted-ca-file")
            .arg(&pki.arg("ca.pem"))
            .arg("--peer-client-cert-auth")
            .arg("--snapshot-count")
            .arg(&snapshot_count.to_string());
        if server_kind() == ServerKind::Cairn {
            o.arg("--snapshot-catchup-entries").arg("10")
        } else {
            o
        }
    });
    assert_eq!(cluster.etcdctl(&["put", "k", "v"]).ok(), "OK\n");
    for m in &cluster.members {
        assert_eq!(m.etcdctl(&["get", "k", "--print-value-only"]).ok(), "v\n");
    }
    // A follower misses many writes, then catches up by snapshot over TLS.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (leader, _) = rt.block_on(cluster.wait_leader(None));
    let down = (leader + 1) % 3;
    cluster.members[down].kill9();
    for i in 0..3 * snapshot_count {
        assert_eq!(
            cluster.members[leader]
                .etcdctl(&["put", &format!("key{i:04}"), "x"])
                .ok(),
            "OK\n"
        );
    }
    cluster.members[down].respawn();
    cluster.members[down].wait_ready();
    let keys = cluster.members[down].etcdctl(&[
        "get",
        "key",
        "--prefix",
        "--keys-only",
        "--consistency=s",
    ]);
    let count = keys.ok().lines().filter(|l| !l.is_empty()).count();
    assert_eq!(count, 3 * snapshot_count);
    if server_kind() == ServerKind::Cairn {
        let log = std::fs::read_to_string(cluster.members[down].log_path()).unwrap();
        assert!(
            log.contains("installed a snapshot from the leader"),
            "no snapshot"
        );
    }
}

/// Whether `openssl s_client` completes a handshake with `addr` given `args`.
fn handshake(addr: &str, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-brief"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.contains("CONNECTION ESTABLISHED")
}

#[test]
fn auto_tls_makes_its_own_certificate() {
    let port = free_port();
    let https = format!("https://127.0.0.1:{port}");
    let _server = Server::start(ServerOpts::new().also_listen(&https).arg("--auto-tls"));
    let insecure = vec![
        "--insecure-transport=false".to_string(),
        "--insecure-skip-tls-verify".to_string(),
    ];
    assert_eq!(ctl(&https, &insecure, &["put", "k", "auto"]).ok(), "OK\n");
    assert_eq!(
        ctl(&https, &insecure, &["get", "k", "--print-value-only"]).ok(),
        "auto\n"
    );
}

#[test]
fn tls_versions_and_cipher_suites_are_narrowed_as_asked() {
    if server_kind() == ServerKind::Etcd {
        return; // etcd 3.4 has no --tls-min-version
    }
    let pki = Pki::new();
    pki.issue("ca", "server", "cairn", true);
    let files = |o: ServerOpts| {
        o.arg("--cert-file")
            .arg(&pki.arg("server.pem"))
            .arg("--key-file")
            .arg(&pki.arg("server.key"))
    };
    let port = free_port();
    let _tls13 = Server::start(
        files(ServerOpts::new().also_listen(&format!("https://127.0.0.1:{port}")))
            .arg("--tls-min-version")
            .arg("TLS1.3"),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(handshake(&addr, &["-tls1_3"]));
    assert!(!handshake(&addr, &["-tls1_2"]));

    let port = free_port();
    let _one_suite = Server::start(
        files(ServerOpts::new().also_listen(&format!("https://127.0.0.1:{port}")))
            .arg("--tls-max-version")
            .arg("TLS1.2")
            .arg("--cipher-suites")
            .arg("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(handshake(
        &addr,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    ));
    assert!(!handshake(
        &addr,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]
    ));
    assert!(!handshake(&addr, &["-tls1_3"]));

    let port = free_port();
    let mut refused = Server::launch(
        files(ServerOpts::new().also_listen(&format!("https://127.0.0.1:{port}")))
            .arg("--cipher-suites")
            .arg("TLS_NO_SUCH_SUITE"),
    );
    assert!(!refused
        .wait_exit(std::time::Duration::from_secs(20))
        .success());
    let log = refused.log_tail(400);
    assert!(
        log.contains(r#"--cipher-suites: unexpected TLS cipher suite "TLS_NO_SUCH_SUITE""#),
        "{log}"
    );
}

/// With auth on, a verified client certificate's common name is the user (as etcd):
/// no password needed, and that user's permissions apply.
#[test]
fn the_client_certificates_common_name_is_the_user_with_auth_on() {
    let pki = Pki::new();
    pki.issue("ca", "server", "cairn", true);
    pki.issue("ca", "alice", "alice", false);
    pki.issue("ca", "root", "root", false);
    let port = free_port();
    let https = format!("https://127.0.0.1:{port}");
    let server = Server::start(mutual_tls(&pki, &https).arg("--bcrypt-cost=4"));
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        server.etcdctl(args).ok();
    }
    let as_user = |user: &str| {
        vec![
            format!("--cacert={}", pki.arg("ca.pem")),
            format!("--cert={}", pki.arg(&format!("{user}.pem"))),
            format!("--key={}", pki.arg(&format!("{user}.key"))),
        ]
    };
    let alice = as_user("alice");
    assert_eq!(ctl(&https, &alice, &["put", "/app/x", "1"]).ok(), "OK\n");
    assert_eq!(ctl(&https, &alice, &["get", "/app/x"]).ok(), "/app/x\n1\n");
    assert_eq!(
        ctl(&https, &alice, &["put", "/abc", "1"]).fail(),
        "Error: etcdserver: permission denied"
    );
    let root = as_user("root");
    assert_eq!(ctl(&https, &root, &["put", "/abc", "1"]).ok(), "OK\n");
    assert_eq!(ctl(&https, &root, &["user", "list"]).ok(), "alice\nroot\n");
    // The plain port has no certificate: the request has no user.
    assert_eq!(
        server.etcdctl(&["get", "/app/x"]).fail(),
        "Error: etcdserver: user name is empty"
    );
}

/// `--peer-auto-tls`: members make their own peer certificates and replicate over TLS.
#[test]
fn peer_auto_tls_encrypts_the_cluster_without_certificates() {
    let cluster = Cluster::start_with_peer_tls(3, |o| o.arg("--peer-auto-tls"));
    assert_eq!(cluster.etcdctl(&["put", "k", "auto-peer"]).ok(), "OK\n");
    for m in &cluster.members {
        assert_eq!(
            m.etcdctl(&["get", "k", "--print-value-only"]).ok(),
            "auto-peer\n"
        );
        // The peer port speaks TLS (a handshake without any certificate of ours).
        let addr = m.peer_url().trim_start_matches("https://").to_string();
        assert!(handshake(&addr, &[]), "{addr}");
    }
}

/// `--peer-cert-allowed-cn`: a peer client certificate of another common name is
/// refused, even though the CA signed it.
#[test]
fn peer_certificates_of_another_common_name_are_refused() {
    if server_kind() == ServerKind::Etcd {
        // etcd 3.4 refuses the certificate after the handshake (in its HTTP
        // handler), which openssl s_client cannot see.
        return;
    }
    let pki = Pki::new();
    pki.issue_peer("ca", "peer");
    pki.issue_peer("ca", "intruder");
    let server = Server::start(
        ServerOpts::new()
            .peer_https()
            .arg("--peer-cert-file")
            .arg(&pki.arg("peer.pem"))
            .arg("--peer-key-file")
            .arg(&pki.arg("peer.key"))
            .arg("--peer-trusted-ca-file")
            .arg(&pki.arg("ca.pem"))
            .arg("--peer-client-cert-auth")
            .arg("--peer-cert-allowed-cn=peer"),
    );
    let addr = server.peer_url().trim_start_matches("https://").to_string();
    let with = |name: &str| {
        vec![
            "-CAfile".to_string(),
            pki.arg("ca.pem"),
            "-cert".to_string(),
            pki.arg(&format!("{name}.pem")),
            "-key".to_string(),
            pki.arg(&format!("{name}.key")),
            // TLS 1.2: the client certificate is judged inside the handshake.
            "-tls1_2".to_string(),
        ]
    };
    let shake = |name: &str| {
        let args = with(name);
        handshake(&addr, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(shake("peer"));
    assert!(!shake("intruder"));
}

/// Members that advertise only `https://` client URLs: a follower forwards what only the
/// leader answers (lease keep-alive and time-to-live) over TLS.
#[test]
fn a_follower_forwards_to_a_leader_serving_clients_over_tls_only() {
    let pki = Pki::new();
    pki.issue("ca", "server", "cairn", true);
    let cluster = Cluster::start_with(3, |o| {
        o.also_listen(&format!("https://127.0.0.1:{}", free_port()))
            .advertise_also_only()
            .arg("--cert-file")
            .arg(&pki.arg("server.pem"))
            .arg("--key-file")
            .arg(&pki.arg("server.key"))
            .arg("--trusted-ca-file")
            .arg(&pki.arg("ca.pem"))
    });
    let rt = cairn_tests::runtime();
    let (leader, _) = rt.block_on(cluster.wait_leader(None));
    let follower = &cluster.members[(leader + 1) % 3];
    let granted = follower.etcdctl(&["lease", "grant", "30"]).ok().to_string();
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(30s)\n"));
    assert_eq!(
        follower
            .etcdctl(&["lease", "keep-alive", "--once", &id])
            .ok(),
        format!("lease {id} keepalived with TTL(30)\n")
    );
    let ttl = follower
        .etcdctl(&["lease", "timetolive", &id])
        .ok()
        .to_string();
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining(")),
        "{ttl}"
    );
}
