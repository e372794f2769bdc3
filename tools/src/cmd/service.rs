//! `tape service`: run the service of a root in the foreground until
//! SIGINT or SIGTERM, applying retention rules if given.

use anyhow::Result;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tape_service::Retention;

/// Runs the service on `root` until a signal stops it, applying the
/// retention rules `retain` to `<root>/journal` every `retain_every`.
/// With `metrics`, also serves `/metrics` on that address
/// ([`super::metrics`]).
pub fn run(
    root: &Path,
    retain: &[Retention],
    retain_every: Duration,
    metrics: Option<&str>,
) -> Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    // Start first, so a refusal (another service on this root) is the only
    // thing said; then say where it listens.
    let service = tape_service::Service::start(root)?;
    eprintln!(
        "tape service: listening on {} (pid {})",
        service.socket_path().display(),
        std::process::id()
    );
    let metrics = match metrics {
        Some(addr) => {
            let counters = std::sync::Arc::clone(service.counters_arc());
            let read: std::sync::Arc<super::metrics::CountersRef> =
                std::sync::Arc::new(move || super::metrics::read_counters(&counters));
            let m = super::metrics::MetricsServer::start(addr, root, read).map_err(|e| {
                anyhow::anyhow!(
                    "cannot serve metrics on {addr}: {e}: give --metrics a free HOST:PORT"
                )
            })?;
            eprintln!("tape service: metrics on http://{}/metrics", m.local_addr());
            Some(m)
        }
        None => None,
    };
    let retainer = if retain.is_empty() {
        None
    } else {
        let rules: Vec<String> = retain.iter().map(Retention::to_string).collect();
        eprintln!(
            "tape service: retention {} every {:?}",
            rules.join(" "),
            retain_every
        );
        Some(tape_service::Retainer::start(
            tape_journal::journal_dir(root),
            retain.to_vec(),
            retain_every,
        )?)
    };
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(metrics);
    drop(retainer);
    drop(service);
    eprintln!("tape service: stopped");
    Ok(())
}
