//! `journal-bench`: cross-process latency and throughput of tape.
fn main() {
    eprintln!("journal-bench: not yet built");
}
