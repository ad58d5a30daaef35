//! `cargo xtask fault`: the fault scenario of `cairn_tests::fault`, many times over, with
//! a table of the runs. The scenario lives once, in the tests crate (the `t81_fault` test
//! runs it too); this builds and runs its `cairn-fault` binary, which needs neither
//! RocksDB nor the server's crates (the server under test is `CAIRN_BIN`, default
//! `<target>/debug/cairn`).

use std::process::Command;

use anyhow::{bail, Context as _};

/// Entry point of `cargo xtask fault ...`; `args` excludes `fault` and go to the runner
/// unchanged (`cargo xtask fault --help` lists them).
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let root = crate::paths::workspace_root()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "-p",
            "cairn-tests",
            "--bin",
            "cairn-fault",
            "--",
        ])
        .args(args)
        .status()
        .context("running cargo run -p cairn-tests --bin cairn-fault")?;
    if !status.success() {
        bail!("cairn-fault: {status}");
    }
    Ok(())
}
