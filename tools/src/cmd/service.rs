//! `tape service`: run the service of a root in the foreground until
//! SIGINT or SIGTERM.

use anyhow::Result;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Runs the service on `root` until a signal stops it.
pub fn run(root: &Path) -> Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    // Start first, so a refusal (another service on this root) is the only
    // thing said; then say where it listens.
    let service = tape_service::Service::start(root)?;
    eprintln!(
        "tape service: listening on {} (pid {})",
        service.socket_path().display(),
        std::process::id()
    );
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(service);
    eprintln!("tape service: stopped");
    Ok(())
}
