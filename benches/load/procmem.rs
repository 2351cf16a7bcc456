//! Memory of a local target process read from /proc: resident size now (VmRSS), its peak (VmHWM), and the
//! proportional set size of a whole process group (Dovecot runs one process per session).

use std::fs;

/// A `kB` field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, field)
}

/// The value of `Field:   123 kB` in a /proc status-like text.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident set size of `pid` now, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Peak resident set size of `pid` since it started (or since [`reset_peak`]), KiB.
pub fn peak_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// Resets `pid`'s VmHWM to its current RSS (Linux ≥ 4.0, needs the right to write its clear_refs); true if done.
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Process group of `pid`: field 5 of /proc/PID/stat, counted after the `)` that ends the command name (which
/// may itself contain spaces and parentheses).
fn pgrp(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // after ")": state ppid pgrp ...
    after.split_whitespace().nth(2)?.parse().ok()
}

/// Sum of the proportional set size (shared pages split between their users) of every process in process group
/// `group`, KiB, and the number of processes; `None` if /proc has no smaps_rollup.
pub fn group_pss_kib(group: u32) -> Option<(u64, usize)> {
    let mut total = 0;
    let mut procs = 0;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pgrp(pid) != Some(group) {
            continue;
        }
        // A process may exit between the two reads; it then simply does not count.
        if let Some(pss) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| kib_field(&t, "Pss"))
        {
            total += pss;
            procs += 1;
        }
    }
    (procs > 0).then_some((total, procs))
}

/// The kernel's count of connections dropped because a listen queue was full (TcpExt ListenOverflows in
/// /proc/net/netstat), for all sockets in this network namespace: a server whose accept backlog is too small
/// for a connection burst shows up here, while its clients just see a delay (SYN/ACK retransmits, 1 s, 3 s...).
pub fn listen_overflows() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
}
