//! A real `nats-server -js` on a free loopback port (or three in a
//! cluster), killed when dropped; raw NATS protocol for the tests that
//! misbehave on purpose; `tape nats export` and `import` as children.

use crate::bridge::setup::{Log, Side};
use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One `nats-server` process; its store folder outlives restarts.
pub struct Engine {
    pub kid: Option<Kid>,
    pub port: u16,
    pub store: PathBuf,
    pub token: Option<String>,
    /// Extra arguments (cluster).
    pub extra: Vec<String>,
    pub name: String,
}

impl Engine {
    /// A single server with JetStream on a new store folder inside `dir`.
    pub fn start(dir: &Path, token: Option<&str>) -> Engine {
        let mut e = Engine {
            kid: None,
            port: free_port(),
            store: dir.join("jetstream"),
            token: token.map(str::to_string),
            extra: Vec::new(),
            name: "n1".into(),
        };
        e.restart();
        e.wait_ready();
        e
    }

    /// Three servers in one cluster on loopback, JetStream on each.
    pub fn cluster(dir: &Path) -> Vec<Engine> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let all = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut v: Vec<Engine> = (0..3)
            .map(|i| Engine {
                kid: None,
                port: free_port(),
                store: dir.join(format!("jetstream-n{}", i + 1)),
                token: None,
                extra: vec![
                    "--cluster_name".into(),
                    "tapetest".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    all.clone(),
                ],
                name: format!("n{}", i + 1),
            })
            .collect();
        for e in &mut v {
            e.restart();
        }
        for e in &v {
            e.wait_ready();
        }
        v
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store folder.
    pub fn restart(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-js", "-sd"])
            .arg(&self.store)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--server_name", &self.name])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(t) = &self.token {
            cmd.args(["--auth", t]);
        }
        harden(&mut cmd);
        self.kid = Some(Kid::spawn("nats-server", &mut cmd));
    }

    /// Waits until the server takes connections and its JetStream answers.
    pub fn wait_ready(&self) {
        let d = Deadline::new();
        loop {
            if js_answers(self.port, self.token.as_deref()) {
                return;
            }
            d.check(&format!(
                "nats-server {} to answer JetStream requests",
                self.name
            ));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut k) = self.kid.take() {
            k.kill9();
        }
    }
}

/// A raw connection speaking the NATS text protocol.
pub struct Raw {
    pub s: TcpStream,
    r: BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(port: u16, token: Option<&str>) -> std::io::Result<Raw> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut info = String::new();
        r.read_line(&mut info)?;
        let auth = token.map_or(String::new(), |t| format!(",\"auth_token\":\"{t}\""));
        let mut raw = Raw { s, r };
        raw.send(
            format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true{auth}}}\r\nPING\r\n")
                .as_bytes(),
        )?;
        let mut pong = String::new();
        raw.r.read_line(&mut pong)?;
        if !pong.starts_with("PONG") {
            return Err(std::io::Error::other(pong));
        }
        Ok(raw)
    }

    pub fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)
    }

    /// Sends `body` to `subject` and returns the first reply's body.
    pub fn request(&mut self, subject: &str, body: &[u8]) -> std::io::Result<String> {
        let mut m = format!("SUB _T.r 1\r\nPUB {subject} _T.r {}\r\n", body.len()).into_bytes();
        m.extend_from_slice(body);
        m.extend_from_slice(b"\r\n");
        self.send(&m)?;
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed"));
            }
            if line.starts_with("PING") {
                self.send(b"PONG\r\n")?;
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (hdr_len, total) = match parts.first() {
                Some(&"MSG") => (0usize, parts.last().unwrap().parse::<usize>().unwrap()),
                Some(&"HMSG") => (
                    parts[parts.len() - 2].parse::<usize>().unwrap(),
                    parts.last().unwrap().parse::<usize>().unwrap(),
                ),
                _ => continue,
            };
            let mut b = vec![0u8; total + 2];
            self.r.read_exact(&mut b)?;
            self.send(b"UNSUB 1\r\n")?;
            return Ok(String::from_utf8_lossy(&b[hdr_len..total]).into_owned());
        }
    }

    /// Publishes `body` on `subject` with the given NATS headers.
    pub fn publish(&mut self, subject: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut h = String::from("NATS/1.0\r\n");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        let mut m = format!("HPUB {subject} {} {}\r\n", h.len(), h.len() + body.len()).into_bytes();
        m.extend_from_slice(h.as_bytes());
        m.extend_from_slice(body);
        m.extend_from_slice(b"\r\n");
        self.send(&m).expect("publish");
    }
}

/// Whether JetStream on `port` answers an account-info request.
pub fn js_answers(port: u16, token: Option<&str>) -> bool {
    let Ok(mut raw) = Raw::connect(port, token) else {
        return false;
    };
    match raw.request("$JS.API.INFO", b"") {
        Ok(body) => body.contains("\"memory\"") && !body.contains("\"error\""),
        Err(_) => false,
    }
}

/// The JSON answer of a JetStream API request.
pub fn js_api(port: u16, subject: &str, body: &str) -> serde_json::Value {
    js_api_as(port, None, subject, body)
}

/// [`js_api`] with a token.
pub fn js_api_as(port: u16, token: Option<&str>, subject: &str, body: &str) -> serde_json::Value {
    // A cluster may take a moment to answer (a leader being elected).
    let d = Deadline::new();
    loop {
        let got =
            Raw::connect(port, token).and_then(|mut raw| raw.request(subject, body.as_bytes()));
        match got {
            Ok(a) => {
                let v: serde_json::Value = serde_json::from_str(&a).expect("JSON");
                if v["error"]["code"].as_u64() != Some(503) {
                    return v;
                }
            }
            Err(e) => d.check(&format!("an answer to {subject} ({e})")),
        }
        d.check(&format!("an answer to {subject}"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `tape nats export` or `import`, its stderr collected.
pub struct Nats {
    pub kid: Kid,
    pub log: Log,
}

impl Nats {
    /// `tape nats <verb> <args> --root <side> --server <url>`.
    pub fn start(side: &Side, verb: &str, url: &str, args: &[&str]) -> Nats {
        let tag = if verb == "export" { "export" } else { "import" };
        let mut kid = Kid::spawn(
            &format!("tape nats {verb}"),
            side.root
                .tape("nats", &[verb])
                .args(args)
                .args(["--server", url])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let log = Log::of(kid.child.stderr.take().unwrap(), tag);
        Nats { kid, log }
    }
}

/// `tape nats status --json` against `url`.
pub fn status(url: &str) -> serde_json::Value {
    let out = ok(
        &mut tape(&["nats", "status", "--json", "--server", url]),
        b"",
    );
    serde_json::from_slice(&out).expect("status JSON")
}

/// A tiny deterministic random source (xorshift), seeded from the clock
/// unless `TAPE_CAMPAIGN_SEED` is set.
pub struct Rng(pub u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("TAPE_CAMPAIGN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("seed {seed} (TAPE_CAMPAIGN_SEED={seed} repeats the choices)");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Waits until stream `stream` on `port` has last seq `n` at least.
pub fn wait_stream(port: u16, stream: &str, n: u64) {
    let d = Deadline::new();
    loop {
        let v = js_api(port, &format!("$JS.API.STREAM.INFO.{stream}"), "");
        if v["state"]["last_seq"].as_u64().unwrap_or(0) >= n {
            return;
        }
        d.check(&format!("stream {stream} to reach seq {n}"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Feeds `tape write` on `src` lines 1, 2, ... in steps of `step`, never
/// more than `ahead` frames ahead of the replica `dst`, until `stop`;
/// returns the writer's stdin and how many lines it wrote.
pub fn feeder(
    src_dir: PathBuf,
    dst_dir: PathBuf,
    mut stdin: std::process::ChildStdin,
    step: u64,
    ahead: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: u64,
) -> std::thread::JoinHandle<(std::process::ChildStdin, u64)> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let _ = src_dir;
        let mut next = 1u64;
        while !stop.load(Ordering::Relaxed) && next <= max {
            let have = tape_journal::stats(&dst_dir, "md").map_or(0, |s| s.last_seq);
            if next > have + ahead {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let end = (next + step - 1).min(max);
            feed(&mut stdin, &lines(next..=end));
            next = end + 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        (stdin, next - 1)
    })
}
