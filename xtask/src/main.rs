//! cairn's developer commands: `cargo xtask <command>`.

mod bench;
mod fault;

use std::process::Command;

use anyhow::{bail, Context as _};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    run the whole test suite (same as scripts/test.sh and CI)
  serve   build and run a single-member cairn on localhost:2379 (scripts/run.sh)
  bench   load generator for any etcd v3 endpoint, and `bench compare` (cairn vs etcd);
          `cargo xtask bench --help` lists the workloads
  fault   fault-injection runs (blackholes, one-way cuts, kills, pauses) against a 3-member
          cluster with a table of linearizability, lost acks, double applies, watch gaps;
          `cargo xtask fault --help` lists the options";

/// The workspace root (xtask's parent directory).
fn workspace_root() -> anyhow::Result<&'static std::path::Path> {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")
}

fn script(name: &str, args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let status = Command::new("bash")
        .arg(root.join("scripts").join(name))
        .args(args)
        .status()
        .with_context(|| format!("running scripts/{name}"))?;
    if !status.success() {
        bail!("scripts/{name} failed: {status}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => script("test.sh", &args[1..]),
        Some("serve") => script("run.sh", &args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("fault") => fault::main(&args[1..]),
        _ => {
            println!("{USAGE}");
            Ok(())
        }
    }
}
