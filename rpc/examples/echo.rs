//! Request/reply on one box: a responder named `echo-example` answers each
//! request with its own data, on a thread; a requester calls it COUNT times
//! (default 3) and prints each reply; then a call to a name nobody answers
//! comes back NO at once. A `tape service` must run on the root
//! (`$TAPE_ROOT`, else `/tmp/trading`).
//!
//! ```text
//! tape service &
//! cargo run -p tape-rpc --example echo
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tape_rpc::{CallError, Requester, Responder};

fn main() -> Result<(), Box<dyn Error>> {
    let count: u32 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("COUNT must be a number, not {n:?}"))?,
        None => 3,
    };
    let mut echo = Responder::create("echo-example")?;
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            echo.run(&stop, |req, out| {
                let _ = out.reply(req.msg_type(), req.data());
            })
        })
    };

    let mut client = Requester::create("echo-example-client")?;
    for i in 1..=count {
        let text = format!("hello {i}");
        let reply = client.call("echo-example", 1, text.as_bytes(), Duration::from_secs(5))?;
        println!("reply {}", String::from_utf8_lossy(reply.data()));
    }
    match client.call("nobody-example", 1, b"?", Duration::from_secs(5)) {
        Err(CallError::No { .. }) => println!("nobody-example: NO (not online)"),
        other => return Err(format!("expected NO, got {other:?}").into()),
    }

    stop.store(true, Ordering::Release);
    serving
        .join()
        .map_err(|_| "the responder thread panicked")??;
    Ok(())
}
