//! cairn's developer commands: `cargo xtask <command>`.

mod bench;
mod fault;
mod paths;

use std::process::Command as Process;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "cairn's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole test suite (same as scripts/test.sh and CI).
    Test {
        /// Passed to scripts/test.sh.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and run a single-member cairn on localhost:2379 (scripts/run.sh).
    Serve {
        /// Passed to cairn (e.g. --data-dir, --log-level).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A local cluster without Docker: `up [N]`, `status`, `down [--clean]`
    /// (scripts/cluster.sh).
    Cluster {
        /// Passed to scripts/cluster.sh.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Load generator for any etcd v3 endpoint, and `bench compare` (cairn vs etcd).
    Bench(bench::Cli),
    /// Fault-injection runs (blackholes, one-way cuts, kills, pauses) against a 3-member
    /// cluster, with a table of linearizability, lost acks, double applies and watch
    /// gaps; `cargo xtask fault --help` lists the options.
    #[command(disable_help_flag = true)]
    Fault {
        /// Passed to the cairn-fault runner.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn script(name: &str, args: &[String]) -> anyhow::Result<()> {
    let root = paths::workspace_root()?;
    let status = Process::new("bash")
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
    match Cli::parse().command {
        Command::Test { args } => script("test.sh", &args),
        Command::Serve { args } => script("run.sh", &args),
        Command::Cluster { args } => script("cluster.sh", &args),
        Command::Bench(cli) => bench::main(cli),
        Command::Fault { args } => fault::main(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_commands_and_missing_ones_are_errors() {
        assert!(Cli::try_parse_from(["cargo xtask", "frobnicate"]).is_err());
        assert!(Cli::try_parse_from(["cargo xtask"]).is_err());
    }

    #[test]
    fn fault_options_reach_the_runner_untouched() {
        let cli = Cli::try_parse_from(["cargo xtask", "fault", "--runs", "3", "--help"]).unwrap();
        let Command::Fault { args } = cli.command else {
            panic!("not fault")
        };
        assert_eq!(args, ["--runs", "3", "--help"]);
    }
}
