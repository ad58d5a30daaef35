//! cairn's developer commands: `cargo xtask <command>`.

use std::process::Command;

use anyhow::{bail, Context as _};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    run the whole test suite (same as scripts/test.sh and CI)
  serve   build and run a single-member cairn on localhost:2379 (scripts/run.sh)";

fn script(name: &str, args: &[String]) -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
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
        _ => {
            println!("{USAGE}");
            Ok(())
        }
    }
}
