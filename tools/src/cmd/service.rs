//! `tape service`: run the service of a root in the foreground until
//! SIGINT or SIGTERM.

use anyhow::Result;
use std::path::Path;

/// Runs the service on `root` until a signal stops it.
pub fn run(root: &Path) -> Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    eprintln!(
        "tape service: listening on {} (pid {})",
        root.join("system/service.sock").display(),
        std::process::id()
    );
    tape_service::run(root, stop)?;
    Ok(())
}
