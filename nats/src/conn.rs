//! Which server, which credentials, and the connection to it.

use crate::Log;
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, ServerAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The server `tape nats` talks to without `--server` and `$TAPE_NATS`.
pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// How to authenticate.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A token (`--token-file`).
    Token(String),
    /// A NATS credentials file (JWT and nkey seed, `--creds`).
    Creds(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(..)"),
            Auth::Creds(p) => f.debug_tuple("Creds").field(p).finish(),
        }
    }
}

impl Auth {
    /// Reads the token file or names the credentials file; `None` for both
    /// means no credentials.
    pub fn from_args(
        token_file: Option<&std::path::Path>,
        creds: Option<&std::path::Path>,
    ) -> Result<Auth, String> {
        match (token_file, creds) {
            (Some(_), Some(_)) => Err("give --token-file or --creds, not both".into()),
            (Some(f), None) => {
                let t = std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(format!("the token file {} is empty", f.display()));
                }
                Ok(Auth::Token(t.to_string()))
            }
            (None, Some(c)) => {
                if let Err(e) = std::fs::metadata(c) {
                    return Err(format!(
                        "cannot read the credentials file {}: {e}",
                        c.display()
                    ));
                }
                Ok(Auth::Creds(c.to_path_buf()))
            }
            (None, None) => Ok(Auth::None),
        }
    }
}

/// A server (or several: the members of a cluster, comma-separated) and
/// how to authenticate with it.
#[derive(Debug, Clone)]
pub struct Server {
    /// As given: `nats://HOST:PORT`, comma-separated for several.
    pub url: String,
    /// The credentials.
    pub auth: Auth,
}

impl Server {
    /// `--server URL`, else `$TAPE_NATS`, else [`DEFAULT_SERVER`].
    pub fn resolve(arg: Option<&str>, auth: Auth) -> Server {
        let url = match arg {
            Some(u) => u.to_string(),
            None => match std::env::var("TAPE_NATS") {
                Ok(u) if !u.trim().is_empty() => u,
                _ => DEFAULT_SERVER.to_string(),
            },
        };
        Server { url, auth }
    }

    /// The addresses, checked.
    pub fn addrs(&self) -> Result<Vec<ServerAddr>, String> {
        let mut v = Vec::new();
        for u in self.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            v.push(u.parse::<ServerAddr>().map_err(|e| {
                format!("the server address {u:?} is not usable ({e}): give nats://HOST:PORT")
            })?);
        }
        if v.is_empty() {
            return Err("no server address: give --server nats://HOST:PORT".into());
        }
        Ok(v)
    }
}

/// Why something failed.
#[derive(Debug, Clone)]
pub enum Fail {
    /// Retrying cannot mend it; the text says what to do.
    Fatal(String),
    /// Worth another try after a pause; the text is for the log.
    Retry(String),
}

impl Fail {
    /// The text.
    pub fn text(&self) -> &str {
        match self {
            Fail::Fatal(s) | Fail::Retry(s) => s,
        }
    }
}

/// The wait before reconnection attempt `n` (0, 1, ...): 50 ms doubling to
/// 2 s.
pub fn backoff(n: usize) -> Duration {
    const SCHEDULE: tape_service::Backoff =
        tape_service::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    SCHEDULE.wait_before(n)
}

/// Runs `f` until it answers something else than [`Fail::Retry`], or
/// `timeout` passes: the retry loop of `Vars` and `Files` (backoff up to
/// 500 ms between tries, the third failure logged). The error is one
/// sentence: the fatal one, or "cannot `what` within N s" and the last.
pub(crate) fn retrying<T>(
    what: &str,
    timeout: Duration,
    log: &crate::Log,
    mut f: impl FnMut() -> Result<T, Fail>,
) -> Result<T, String> {
    let until = std::time::Instant::now() + timeout;
    let mut n = 0;
    loop {
        match f() {
            Ok(t) => return Ok(t),
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => {
                if std::time::Instant::now() >= until {
                    return Err(format!("cannot {what} within {} s: {e}", timeout.as_secs()));
                }
                if n == 2 {
                    log(&format!("{e}; retrying"));
                }
                std::thread::sleep(backoff(n).min(Duration::from_millis(500)));
                n += 1;
            }
        }
    }
}

/// Answers what a push consumer's idle heartbeat asks for: its
/// flow-control request (the message's reply subject) and a stalled flow
/// control it names (`Nats-Consumer-Stalled`). Returns whether `m` was a
/// heartbeat, which carries nothing else.
pub fn answer_heartbeat(rt: &tokio::runtime::Runtime, c: &Client, m: &async_nats::Message) -> bool {
    if m.status != Some(async_nats::StatusCode::IDLE_HEARTBEAT) {
        return false;
    }
    let stalled = m
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Consumer-Stalled"))
        .map(|v| v.to_string());
    for to in m
        .reply
        .as_ref()
        .map(|r| r.to_string())
        .into_iter()
        .chain(stalled)
    {
        let _ = rt.block_on(c.publish(to, bytes::Bytes::new()));
    }
    true
}

/// A connection and what its events tell.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client (it reconnects by itself, with [`backoff`]).
    pub client: Client,
    /// Counts the (re)connections: a change means the connection was made
    /// again, and whatever was in flight must be checked.
    pub epoch: Arc<AtomicU64>,
}

/// Connects once. A refused credential is [`Fail::Fatal`], naming the
/// server; anything else is [`Fail::Retry`].
pub async fn connect(server: &Server, name: &str, log: Log) -> Result<Conn, Fail> {
    let addrs = server.addrs().map_err(Fail::Fatal)?;
    let opts = match &server.auth {
        Auth::None => ConnectOptions::new(),
        Auth::Token(t) => ConnectOptions::with_token(t.clone()),
        Auth::Creds(p) => ConnectOptions::with_credentials_file(p)
            .await
            .map_err(|e| {
                Fail::Fatal(format!(
                    "cannot use the credentials file {}: {e}",
                    p.display()
                ))
            })?,
    };
    let epoch = Arc::new(AtomicU64::new(0));
    let ep = Arc::clone(&epoch);
    let url = server.url.clone();
    let opts = opts
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(3)))
        .ping_interval(Duration::from_secs(2))
        .subscription_capacity(1 << 17)
        .client_capacity(1 << 14)
        .reconnect_delay_callback(backoff)
        .event_callback(move |e| {
            let log = log.clone();
            let ep = Arc::clone(&ep);
            let url = url.clone();
            async move {
                match e {
                    Event::Connected => {
                        if ep.fetch_add(1, Ordering::AcqRel) > 0 {
                            log(&format!("connected again to {url}"));
                        }
                    }
                    Event::Disconnected => {
                        ep.fetch_add(1, Ordering::AcqRel);
                        log(&format!("lost the connection to {url}; reconnecting"));
                    }
                    Event::SlowConsumer(_) => {
                        log("the client dropped messages it could not keep up with; they are fetched again")
                    }
                    other => log(&format!("{url}: {other}")),
                }
            }
        });
    match opts.connect(addrs).await {
        Ok(client) => Ok(Conn { client, epoch }),
        Err(e) => match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                Err(Fail::Fatal(format!(
                    "the NATS server {} refused the credentials ({e}): check --token-file or --creds",
                    server.url
                )))
            }
            ConnectErrorKind::ServerParse | ConnectErrorKind::Tls => Err(Fail::Fatal(format!(
                "cannot connect to the NATS server {}: {e}",
                server.url
            ))),
            _ => Err(Fail::Retry(format!(
                "cannot connect to the NATS server {}: {e}",
                server.url
            ))),
        },
    }
}

/// Connects, retrying with [`backoff`] until it works, `stop` is set
/// (`Ok(None)`), or the server refuses the credentials.
pub fn connect_retrying(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    name: &str,
    log: &Log,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Option<Conn>, String> {
    let mut n = 0;
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        match rt.block_on(connect(server, name, log.clone())) {
            Ok(c) => return Ok(Some(c)),
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => {
                if n == 0 {
                    log(&format!(
                        "{e}; retrying every {} s at most",
                        backoff(99).as_secs()
                    ));
                }
                crate::sleep_unless(stop, backoff(n));
                n += 1;
            }
        }
    }
}
