//! Where things are, for every command.

use std::path::Path;

use anyhow::Context as _;

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> anyhow::Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")
}
