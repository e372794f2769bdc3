//! The systemd units in contrib/systemd: parsed here, every unit checked
//! for what a trading box needs (the dedicated user and group, group access
//! to what the service makes, restart on failure, a CPU affinity, the root
//! on disk), every flag of every ExecStart checked against the real
//! binary's `--help`, and `systemd-analyze verify` run on them (with the
//! binary's path put in) where systemd-analyze exists.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A unit file: section → (key, value) in order (a key may repeat).
type Unit = BTreeMap<String, Vec<(String, String)>>;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd")
}

fn units() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(contrib())
        .expect("contrib/systemd")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Parses systemd's unit syntax (comments, sections, `Key=Value`, a
/// trailing backslash continues a line); panics, naming the line, on
/// anything else.
fn parse(name: &str, text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    let mut pending = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(s.to_string());
            unit.entry(s.to_string()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}:{}: not Key=Value: {raw}", i + 1));
        let s = section
            .as_ref()
            .unwrap_or_else(|| panic!("{name}:{}: a key before any section", i + 1));
        unit.get_mut(s)
            .unwrap()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    assert!(pending.is_empty(), "{name}: ends inside a continued line");
    unit
}

fn get<'a>(u: &'a Unit, name: &str, section: &str, key: &str) -> &'a str {
    u.get(section)
        .and_then(|s| s.iter().rev().find(|(k, _)| k == key))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name}: no {key}= in [{section}]"))
}

/// `CPUAffinity=` values: CPU numbers and ranges, separated by spaces or
/// commas.
fn cpus(v: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in v.split([' ', ',']).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

const BIN: &str = "/usr/local/bin/tape";
const ROOT: &str = "/var/lib/tape";

#[test]
fn the_units_give_a_dedicated_user_group_access_restarts_and_cpu_affinity() {
    let units = units();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "tape.service",
        "tape-bridge-serve.service",
        "tape-nats-export.service",
    ] {
        assert!(
            names.contains(&want),
            "contrib/systemd has no {want}: {names:?}"
        );
    }
    for (name, text) in &units {
        let u = parse(name, text);
        let s = |k| get(&u, name, "Service", k);
        assert!(!get(&u, name, "Unit", "Description").is_empty());
        assert_eq!(s("User"), "tape", "{name}");
        assert_eq!(s("Group"), "tape", "{name}");
        assert_eq!(s("Restart"), "on-failure", "{name}");
        assert!(!cpus(s("CPUAffinity")).is_empty(), "{name}");
        // What it makes keeps group access (readers in group tape) and
        // gives others nothing.
        let umask = u32::from_str_radix(s("UMask"), 8).unwrap();
        assert_eq!(
            umask & 0o070,
            0,
            "{name}: UMask {umask:o} takes the group's access"
        );
        assert_eq!(
            umask & 0o007,
            0o007,
            "{name}: UMask {umask:o} leaves others access"
        );
        let exec: Vec<&str> = s("ExecStart").split_whitespace().collect();
        assert_eq!(exec[0], BIN, "{name}");
        let root = exec.iter().position(|a| *a == "--root");
        assert_eq!(root.map(|i| exec[i + 1]), Some(ROOT), "{name}: --root");
        assert_eq!(get(&u, name, "Install", "WantedBy"), "multi-user.target");
        if name.as_str() != "tape.service" {
            assert!(
                get(&u, name, "Unit", "After").contains("tape.service"),
                "{name} starts before the service"
            );
        }
    }
    let u = parse(
        "tape.service",
        &units.iter().find(|(n, _)| n == "tape.service").unwrap().1,
    );
    let s = |k| get(&u, "tape.service", "Service", k);
    // The root is the unit's state folder: on disk, kept when it stops.
    assert_eq!(format!("/var/lib/{}", s("StateDirectory")), ROOT);
    assert_eq!(s("ExecStart"), format!("{BIN} service --root {ROOT}"));
    let mode = u32::from_str_radix(s("StateDirectoryMode"), 8).unwrap();
    assert_eq!(mode & 0o070, 0o070, "the group cannot reach the socket");
}

/// The subcommand words of an ExecStart (`service`, `bridge serve`, ...).
fn verbs(args: &[String]) -> Vec<String> {
    let n = if ["bridge", "nats"].contains(&args[0].as_str()) {
        2
    } else {
        1
    };
    args[..n].to_vec()
}

#[test]
fn every_flag_in_the_units_is_one_the_binary_takes() {
    for (name, text) in units() {
        let u = parse(&name, &text);
        let exec: Vec<String> = get(&u, &name, "Service", "ExecStart")
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect();
        let verbs = verbs(&exec);
        let mut args: Vec<&str> = verbs.iter().map(String::as_str).collect();
        args.push("--help");
        let help = String::from_utf8(ok(&mut tape(&args), b"")).unwrap();
        for (i, flag) in exec.iter().enumerate().filter(|(_, a)| a.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{name}: `tape {}` has no {flag}",
                verbs.join(" ")
            );
            if flag == "--sync" {
                let v = &exec[i + 1];
                v.parse::<tape_journal::SyncPolicy>()
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}

#[test]
fn the_sysusers_file_makes_the_tape_user_and_group() {
    let text = std::fs::read_to_string(contrib().join("tape.sysusers")).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(lines.iter().any(|l| l[..2] == ["g", "tape"]), "{text}");
    assert!(
        lines.iter().any(|l| l[..3] == ["u", "tape", "-:tape"]),
        "{text}"
    );
}

#[test]
fn systemd_analyze_verify_finds_nothing_to_say() {
    let Ok(o) = Command::new("systemd-analyze").arg("--version").output() else {
        // The parsing tests above still ran; systemd-analyze is only on
        // systemd machines.
        eprintln!("systemd-analyze is not installed: verify not run (the units are parsed by the other tests)");
        return;
    };
    assert!(o.status.success());
    // verify checks that ExecStart's binary exists: the real one is put in.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, text) in units() {
        let path = dir.path().join(&name);
        std::fs::write(&path, text.replace(BIN, tape_bin())).unwrap();
        files.push(path);
    }
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "systemd-analyze verify: {err}");
    // Unknown keys and bad values are warnings with exit 0: none allowed.
    assert!(err.trim().is_empty(), "systemd-analyze verify: {err}");
}
