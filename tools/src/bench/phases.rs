//! The run's phases: check the options, set up (root, cores, base role),
//! floor and latency in alternating rounds, throughput, and the results.

use super::ctl::{Ctl, Line};
use super::roles::{Kind, Report, Role};
use super::{floors, Percentiles, Results, Root};
use super::{make_root, merge, pages_ahead, percentiles, progress, watch, Children, Config};
use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Rounds the floor and the latency phase alternate in. The two vCPUs'
/// cache-to-cache latency here is either about 60 or about 250 ns, switching
/// every few seconds; the p50 of such a two-moded distribution depends on
/// the mix each side saw. With 4 rounds of about a second each the ratio of
/// the p50s ranged 1.11 to 1.71 over 13 runs; with 10 (0.4 s each side) it
/// ranges 1.01 to 1.23.
const ROUNDS: u64 = 10;

/// Runs the bench: checks the options, sets up, runs floor and latency in
/// alternating rounds, then throughput, and reports.
pub fn run(cfg: &Config) -> Result<Results> {
    check(cfg)?;
    let bench = Bench::setup(cfg)?;
    let latency_frames = ((cfg.rate as f64 * cfg.latency_secs) as u64).max(1);
    let rounds = bench.floor_and_latency(latency_frames)?;
    let pp = bench.pingpong()?;
    let floors = bench.stream_and_ring()?;
    let tput = bench.throughput()?;
    let _ = std::fs::remove_file(&bench.base.ctl);
    let mut r = bench.report(rounds, tput, latency_frames)?;
    let (t, f) = (percentiles(&pp.tape), percentiles(&pp.floor));
    r.pingpong_p50_ns = t.p50_ns;
    r.pingpong_p99_ns = t.p99_ns;
    r.pingpong_p999_ns = t.p999_ns;
    r.pingpong_floor_p50_ns = f.p50_ns;
    r.pingpong_floor_p99_ns = f.p99_ns;
    r.pingpong_floor_p999_ns = f.p999_ns;
    r.pingpong_round_trips = pp.round_trips;
    r.pingpong = t;
    r.pingpong_floor = f;
    r.lost += pp.lost + floors.lost;
    r.ring_fps = floors.ring_fps;
    r.stream_fps = floors.stream_fps;
    r.stream_frames = floors.stream_frames;
    Ok(r)
}

/// What the ping-pong rounds measured.
struct PingPong {
    tape: Histogram<u64>,
    floor: Histogram<u64>,
    round_trips: u64,
    lost: u64,
}

/// What the stream and ring floors measured.
struct Floors {
    ring_fps: f64,
    stream_fps: f64,
    stream_frames: u64,
    lost: u64,
}

/// Frames per second from a writer's start to its reader's last frame.
fn fps(writer: &Report, reader: &Report) -> f64 {
    writer.frames as f64 / ((reader.end_ns - writer.start_ns).max(1) as f64 / 1e9)
}

/// Refuses options no run can use.
fn check(cfg: &Config) -> Result<()> {
    if cfg.readers == 0 {
        bail!("--readers must be at least 1");
    }
    if !tape_journal::format::valid_page_size(cfg.page_size) {
        bail!("--page-size must be a power of two from 1048576 (1 MiB) to 1073741824 (1 GiB)");
    }
    if cfg.size > tape_journal::format::max_payload(cfg.page_size) {
        bail!("--size is larger than a page of --page-size holds");
    }
    if cfg.rate == 0 {
        bail!("--rate must be at least 1");
    }
    Ok(())
}

/// A run set up: its root, the cores its processes go on, and the role
/// every phase's processes start from.
struct Bench<'a> {
    cfg: &'a Config,
    root: Root,
    cores: Vec<usize>,
    ncores: usize,
    /// More readers than cores beside the writer's: readers idle-poll.
    idle: bool,
    pid: u32,
    base: Role,
}

/// What the alternating floor and latency rounds measured.
struct Rounds {
    floor_reports: Vec<Report>,
    hist_floor: Histogram<u64>,
    hist_floor_queued: Histogram<u64>,
    /// The latency readers' reports.
    lat: Vec<Report>,
    /// The latency writers' reports.
    lat_writers: Vec<Report>,
}

impl<'a> Bench<'a> {
    /// Pins this process, keeps the shared clock, makes the root and the
    /// base role, and says what the run is.
    fn setup(cfg: &'a Config) -> Result<Bench<'a>> {
        let cores: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        // This process and the service it starts only wait; keep their wake-ups
        // on the writer's core, away from the readers'.
        if let (Some(&c), true) = (cores.first(), cores.len() > 1) {
            let _ = tape_journal::pin_thread(c);
        }
        // This process lives through every phase: it keeps the shared clock
        // (if no service on the box does already), so the phases' processes
        // never find it stale.
        tape_journal::clock::keep();
        let root = make_root(cfg.root.as_deref())?;
        let ncores = cores.len().max(1);
        let idle = cfg.readers + 1 > ncores;
        let writer_core = cores.first().copied();
        let system = root.path.join("system");
        std::fs::create_dir_all(&system)?;
        let pid = std::process::id();
        let base = Role {
            kind: Kind::Writer,
            ctl: system.join(format!("bench-{pid}.ctl")),
            root: root.path.clone(),
            journal: String::new(),
            frames: 0,
            size: cfg.size,
            rate: cfg.rate,
            page_size: cfg.page_size,
            core: writer_core,
            helper_core: writer_core,
            idle,
            parties: 0,
            latency: true,
            index: 0,
            pages_ahead: 1,
            journal2: String::new(),
            shm: Default::default(),
        };
        progress(
            cfg,
            &format!(
                "{} reader(s), {}-byte frames, pages growing to {} bytes, {} cores{}, root {}",
                cfg.readers,
                cfg.size,
                cfg.page_size,
                ncores,
                if idle { " (readers idle-poll)" } else { "" },
                root.path.display()
            ),
        );
        Ok(Bench {
            cfg,
            root,
            cores,
            ncores,
            idle,
            pid,
            base,
        })
    }

    /// The core of reader `i` (none: not pinned).
    fn reader_core(&self, i: usize) -> Option<usize> {
        self.cores.get(1 + i).copied()
    }

    /// The floor: one round of `frames` clock readings; the report of its
    /// reader.
    fn floor_round(&self, frames: u64) -> Result<Report> {
        let base = &self.base;
        let ctl = Ctl::open(&base.ctl, true)?;
        let mut kids = Children(Vec::new());
        kids.spawn(
            "floor reader",
            &Role {
                kind: Kind::FloorReader,
                frames,
                core: self.reader_core(0),
                ..base.clone()
            },
        )?;
        kids.spawn(
            "floor writer",
            &Role {
                kind: Kind::FloorWriter,
                frames,
                parties: 1,
                ..base.clone()
            },
        )?;
        watch(self.cfg, &ctl, "floor", frames);
        Ok(kids.reports()?.swap_remove(0))
    }

    /// Phases 2 and 3: one writer and the readers on a fresh journal, paced
    /// at `rate` (latency) or flat out; the writer's report first.
    fn phase(&self, name: &str, frames: u64, rate: u64, latency: bool) -> Result<Vec<Report>> {
        let (cfg, base, ncores) = (self.cfg, &self.base, self.ncores);
        let ctl = Ctl::open(&base.ctl, true)?;
        let journal = format!("bench-{name}-{}", self.pid);
        let role = Role {
            journal: journal.clone(),
            frames,
            rate,
            latency,
            pages_ahead: pages_ahead(cfg, frames),
            ..base.clone()
        };
        let mut kids = Children(Vec::new());
        kids.spawn(
            "writer",
            &Role {
                parties: 1 + cfg.readers as i64,
                ..role.clone()
            },
        )?;
        ctl.wait_at_least(Line::Ready, 1, Instant::now() + Duration::from_secs(300))?;
        for i in 0..cfg.readers {
            kids.spawn(
                &format!("reader {i}"),
                &Role {
                    kind: Kind::Reader,
                    // More readers than cores: they share the cores other
                    // than the writer's, taking turns by their idle
                    // strategy, and leave the writer its own.
                    core: self.reader_core(i % ncores.saturating_sub(1).max(1)),
                    // The reader's page helper maps (and populates) the next
                    // page ahead. Pacing frames, it runs on the writer's core,
                    // where a delay only makes the writer stamp a frame later;
                    // flat out, on the reader's own, which has time to spare.
                    helper_core: if latency {
                        base.helper_core
                    } else {
                        self.reader_core(i % ncores.saturating_sub(1).max(1))
                    },
                    index: i,
                    ..role.clone()
                },
            )?;
        }
        watch(cfg, &ctl, name, frames);
        let reports = kids.reports()?;
        self.remove_journal(&journal);
        Ok(reports)
    }

    /// Floor and latency in alternating rounds: the host moves the two vCPUs
    /// about (their cache-to-cache latency here is either about 60 or about
    /// 250 ns, for seconds at a time), and alternating lets both see the
    /// same conditions.
    fn floor_and_latency(&self, latency_frames: u64) -> Result<Rounds> {
        let cfg = self.cfg;
        progress(
            cfg,
            &format!(
                "floor and latency: {latency_frames} clock readings, then frames, at {}/s, in {ROUNDS} rounds",
                cfg.rate
            ),
        );
        let mut floor_reports = Vec::new();
        let mut lat: Vec<Report> = Vec::new();
        let mut lat_writers: Vec<Report> = Vec::new();
        for round in 0..ROUNDS {
            let share = latency_frames / ROUNDS
                + if round == ROUNDS - 1 {
                    latency_frames % ROUNDS
                } else {
                    0
                };
            floor_reports.push(self.floor_round(share)?);
            let mut reports = self.phase(&format!("latency{round}"), share, cfg.rate, true)?;
            lat.extend(reports.drain(1..));
            lat_writers.push(reports.swap_remove(0));
        }
        let hist_floor = merge(&floor_reports)?;
        let hist_floor_queued = merge(
            &floor_reports
                .iter()
                .map(|r| Report {
                    hist: r.hist_queued.clone(),
                    ..Report::default()
                })
                .collect::<Vec<_>>(),
        )?;
        Ok(Rounds {
            floor_reports,
            hist_floor,
            hist_floor_queued,
            lat,
            lat_writers,
        })
    }

    /// Two processes of `kind_a` and `kind_b` (A on the writer's core, B on
    /// the first reader's), each with `role`'s settings; their reports.
    fn pair(&self, role: &Role, kind_a: Kind, kind_b: Kind) -> Result<Vec<Report>> {
        // The control block made afresh (zeroed) for the pair.
        Ctl::open(&self.base.ctl, true)?;
        let (ca, cb) = (self.base.core, self.reader_core(0));
        let mut kids = Children(Vec::new());
        for (what, kind, core) in [("side A", kind_a, ca), ("side B", kind_b, cb)] {
            kids.spawn(
                &format!("{what} ({kind:?})"),
                &Role {
                    kind,
                    core,
                    helper_core: core,
                    parties: 2,
                    // Both sides spin, each on its core; with one core they
                    // yield to each other instead.
                    idle: self.ncores < 2,
                    ..role.clone()
                },
            )?;
        }
        kids.reports()
    }

    /// Ping-pong: the cache-line floor and tape over two journals, in
    /// alternating rounds (as floor and latency are), `--pingpong` round
    /// trips each in all.
    fn pingpong(&self) -> Result<PingPong> {
        let cfg = self.cfg;
        let n = cfg.pingpong.max(ROUNDS);
        progress(
            cfg,
            &format!("ping-pong: {n} round trips over one cache line each way, then over two journals, in {ROUNDS} rounds"),
        );
        let mut floor = Vec::new();
        let mut tape = Vec::new();
        let mut lost = 0;
        for round in 0..ROUNDS {
            let share = n / ROUNDS + if round == ROUNDS - 1 { n % ROUNDS } else { 0 };
            let role = Role {
                frames: share,
                ..self.base.clone()
            };
            floor.push(
                self.pair(&role, Kind::PingFloorA, Kind::PingFloorB)?
                    .swap_remove(0),
            );
            let (ping, pong) = (
                format!("bench-ping{round}-{}", self.pid),
                format!("bench-pong{round}-{}", self.pid),
            );
            let role = Role {
                journal: ping.clone(),
                journal2: pong.clone(),
                pages_ahead: pages_ahead(cfg, share),
                ..role
            };
            let mut r = self.pair(&role, Kind::PingA, Kind::PingB)?;
            lost += share - r[0].frames.min(share);
            tape.push(r.swap_remove(0));
            self.remove_journal(&ping);
            self.remove_journal(&pong);
        }
        Ok(PingPong {
            tape: merge(&tape)?,
            floor: merge(&floor)?,
            round_trips: n,
            lost,
        })
    }

    /// The stream floor (as many frames as the throughput phase, within 8
    /// GiB and half the free memory) and the ring floor (`--frames`).
    fn stream_and_ring(&self) -> Result<Floors> {
        let cfg = self.cfg;
        let rec = floors::stream_record(cfg.size) as u64;
        let budget = (8u64 << 30).min(super::mem_available() / 2) / rec;
        let stream_frames = cfg.frames.min(budget).max(1);
        progress(
            cfg,
            &format!("stream floor: {stream_frames} records of {rec} bytes in fresh memory; ring floor: {} slots of {} bytes through a ring of {}", cfg.frames, floors::SLOT, floors::RING_SLOTS),
        );
        let shm = self
            .root
            .path
            .join("system")
            .join(format!("bench-{}.floor", self.pid));
        floors::make_shm(&shm, stream_frames * rec)?;
        let role = Role {
            frames: stream_frames,
            shm: shm.clone(),
            ..self.base.clone()
        };
        let r = self.pair(&role, Kind::StreamWriter, Kind::StreamReader);
        let _ = std::fs::remove_file(&shm);
        let r = r?;
        let (stream_fps, mut lost) = (fps(&r[0], &r[1]), r[1].lost);
        floors::make_shm(&shm, floors::ring_len())?;
        let role = Role {
            frames: cfg.frames,
            ..role
        };
        let r = self.pair(&role, Kind::RingWriter, Kind::RingReader);
        let _ = std::fs::remove_file(&shm);
        let r = r?;
        lost += r[1].lost;
        Ok(Floors {
            ring_fps: fps(&r[0], &r[1]),
            stream_fps,
            stream_frames,
            lost,
        })
    }

    /// Removes a journal's pages and lock file (a run's journals are large).
    fn remove_journal(&self, journal: &str) {
        let dir = tape_journal::journal_dir(&self.root.path);
        for no in tape_journal::list_pages(&dir, journal).unwrap_or_default() {
            let _ = std::fs::remove_file(tape_journal::files::page_path(&dir, journal, no));
        }
        let _ = std::fs::remove_file(tape_journal::files::lock_path(&dir, journal));
    }

    /// The throughput phase: `--frames` frames as fast as possible.
    fn throughput(&self) -> Result<Vec<Report>> {
        let cfg = self.cfg;
        progress(
            cfg,
            &format!("throughput: {} frames as fast as possible", cfg.frames),
        );
        self.phase("throughput", cfg.frames, 0, false)
    }

    /// The results of the run from its reports.
    fn report(&self, rounds: Rounds, tput: Vec<Report>, latency_frames: u64) -> Result<Results> {
        let cfg = self.cfg;
        let Rounds {
            floor_reports,
            hist_floor,
            hist_floor_queued,
            lat,
            lat_writers,
        } = rounds;
        let tput_ahead = pages_ahead(cfg, cfg.frames);
        let hist_latency = merge(&lat)?;
        if std::env::var_os("JOURNAL_BENCH_DEBUG").is_some() {
            for r in &lat {
                eprintln!("journal-bench: slowest frame seq {}", r.max_seq);
            }
        }
        let l = percentiles(&hist_latency);
        let f = percentiles(&hist_floor);
        let writer = &tput[0];
        let slowest_end = tput[1..]
            .iter()
            .map(|r| r.end_ns)
            .max()
            .unwrap_or(writer.end_ns);
        let elapsed = (slowest_end - writer.start_ns).max(1) as f64 / 1e9;
        let writer_elapsed = (writer.end_ns - writer.start_ns).max(1) as f64 / 1e9;
        let lost = lat.iter().chain(&tput[1..]).map(|r| r.lost).sum();
        Ok(Results {
            frames: cfg.frames,
            size: cfg.size,
            p50_ns: l.p50_ns,
            p99_ns: l.p99_ns,
            p999_ns: l.p999_ns,
            max_ns: l.max_ns,
            throughput_fps: cfg.frames as f64 / elapsed,
            lost,
            page_switches: lat_writers.iter().map(|r| r.page_switches).sum::<u64>()
                + writer.page_switches,
            switch_max_ns: lat.iter().map(|r| r.switch_max_ns).max().unwrap_or(0),
            switch_first_p50_ns: {
                let mut v: Vec<u64> = lat.iter().flat_map(|r| r.switch_first_ns.clone()).collect();
                v.sort_unstable();
                v.get(v.len() / 2).copied().unwrap_or(0)
            },
            floor_ns: f.p50_ns,
            floor_p99_ns: f.p99_ns,
            floor_p999_ns: f.p999_ns,
            floor_max_ns: f.max_ns,
            floor_missed: floor_reports.iter().map(|r| r.lost).sum(),
            floor_missed_pct: 100.0 * floor_reports.iter().map(|r| r.lost).sum::<u64>() as f64
                / floor_reports.iter().map(|r| r.frames).sum::<u64>().max(1) as f64,
            pages_ahead: tput_ahead,
            throughput_bytes_per_sec: cfg.frames as f64 * cfg.size as f64 / elapsed,
            writer_fps: cfg.frames as f64 / writer_elapsed,
            rate: cfg.rate,
            latency_frames,
            readers: cfg.readers,
            page_size: cfg.page_size,
            cores: self.ncores,
            idle_readers: self.idle,
            latency: l,
            floor: f,
            floor_queued: percentiles(&hist_floor_queued),
            hist_latency: Some(hist_latency),
            hist_floor: Some(hist_floor),
            pingpong_p50_ns: 0,
            pingpong_p99_ns: 0,
            pingpong_p999_ns: 0,
            pingpong_floor_p50_ns: 0,
            pingpong_floor_p99_ns: 0,
            pingpong_floor_p999_ns: 0,
            ring_fps: 0.0,
            stream_fps: 0.0,
            stream_frames: 0,
            pingpong_round_trips: 0,
            pingpong: Percentiles::default(),
            pingpong_floor: Percentiles::default(),
        })
    }
}
