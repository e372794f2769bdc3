//! `tape top`: a live view of the box (ratatui on crossterm, refreshed
//! every second), or with `--once --json` one snapshot for scripts.

use crate::watch::{Snapshot, Watcher};
use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Row, Table};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Prints one snapshot as JSON: two samples a second apart, so that the
/// rates are those of that second.
pub fn once_json(root: &Path, out: &mut dyn Write) -> Result<()> {
    let mut w = Watcher::new(root);
    w.sample();
    std::thread::sleep(Duration::from_secs(1));
    let snap = w.sample();
    serde_json::to_writer(&mut *out, &snap)?;
    writeln!(out)?;
    Ok(())
}

/// Column the journals are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Name,
    Fps,
    Bytes,
    Lag,
}

fn sorted(snap: &mut Snapshot, sort: Sort) {
    let max_lag =
        |j: &crate::watch::JournalRow| j.readers.iter().filter_map(|r| r.lag).max().unwrap_or(0);
    match sort {
        Sort::Name => snap.journals.sort_by(|a, b| a.name.cmp(&b.name)),
        Sort::Fps => snap.journals.sort_by(|a, b| b.fps.total_cmp(&a.fps)),
        Sort::Bytes => snap
            .journals
            .sort_by(|a, b| b.bytes_per_s.total_cmp(&a.bytes_per_s)),
        Sort::Lag => snap.journals.sort_by_key(|j| std::cmp::Reverse(max_lag(j))),
    }
}

/// The live view until `q` or Esc. Keys: n, f, b, l sort by name,
/// frames/s, MB/s, worst reader lag.
pub fn run(root: &Path) -> Result<()> {
    let mut terminal = ratatui::init();
    let result = live(root, &mut terminal);
    ratatui::restore();
    result
}

fn live(root: &Path, terminal: &mut ratatui::DefaultTerminal) -> Result<()> {
    let mut w = Watcher::new(root);
    let mut sort = Sort::Name;
    let mut snap = w.sample();
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        sorted(&mut snap, sort);
        terminal.draw(|f| draw(f, &snap, sort))?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press {
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('n') => sort = Sort::Name,
                        KeyCode::Char('f') => sort = Sort::Fps,
                        KeyCode::Char('b') => sort = Sort::Bytes,
                        KeyCode::Char('l') => sort = Sort::Lag,
                        _ => {}
                    }
                }
            }
        }
        if Instant::now() >= next {
            snap = w.sample();
            next += Duration::from_secs(1);
            if next < Instant::now() {
                next = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}

fn draw(f: &mut ratatui::Frame, snap: &Snapshot, sort: Sort) {
    let [top, bottom, help] = Layout::vertical([
        Constraint::Min(5),
        Constraint::Length((snap.connectors.len() + snap.unanswered.len()) as u16 + 3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut rows = Vec::new();
    for j in &snap.journals {
        let readers = if j.readers.is_empty() {
            "-".to_string()
        } else {
            j.readers
                .iter()
                .map(|r| {
                    let lag = r.lag.map_or("?".into(), |l| l.to_string());
                    let gone = if r.live { "" } else { " gone" };
                    format!("{}({}) lag {lag}{gone}", r.name, r.pid)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push(Row::new(vec![
            j.name.clone(),
            format!("{:.0}", j.fps),
            format!("{:.2}", j.bytes_per_s / 1e6),
            j.last_seq.to_string(),
            j.writer_pid.map_or("none".into(), |p| p.to_string()),
            readers,
        ]));
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Min(20),
        ],
    )
    .header(
        Row::new([
            "JOURNAL",
            "FRAMES/S",
            "MB/S",
            "LAST_SEQ",
            "WRITER",
            "READERS (lag in frames)",
        ])
        .style(bold),
    )
    .block(Block::bordered().title(format!(" tape top: journals (sorted by {sort:?}) ")));
    f.render_widget(table, top);
    let mut crow: Vec<Row> = snap
        .connectors
        .iter()
        .map(|c| {
            Row::new(vec![
                c.kind.clone(),
                c.name.clone(),
                c.pid.to_string(),
                c.seq.to_string(),
                c.last_seq.to_string(),
                c.lag.to_string(),
                c.frames.to_string(),
                format!("{:.2}", c.bytes as f64 / 1e6),
                c.reconnects.to_string(),
            ])
        })
        .collect();
    for u in &snap.unanswered {
        crow.push(Row::new(vec!["?".to_string(), u.clone()]));
    }
    let ctable = Table::new(
        crow,
        [
            Constraint::Length(12),
            Constraint::Min(30),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new([
            "KIND",
            "CONNECTOR",
            "PID",
            "SEQ",
            "LAST_SEQ",
            "LAG",
            "FRAMES",
            "MB",
            "RECONN",
        ])
        .style(bold),
    )
    .block(Block::bordered().title(" connectors (bridge and NATS) "));
    f.render_widget(ctable, bottom);
    f.render_widget(
        ratatui::text::Line::from(" q quit · sort: n name, f frames/s, b MB/s, l reader lag"),
        help,
    );
}
