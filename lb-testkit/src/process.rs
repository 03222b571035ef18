//! What this process holds, read from `/proc/self` (Linux): threads, sockets, peak
//! memory. Leak and memory tests compare these before and after.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many threads the process has.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// The names of the process's threads (as the kernel keeps them: at most 15 bytes).
pub fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// How many sockets the process has open.
pub fn socket_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| {
        dir.flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    })
}

/// The highest `VmHWM` read so far.
static PEAK_SEEN: AtomicU64 = AtomicU64::new(0);

/// The process's peak resident set size, in KiB. The kernel folds per-thread RSS
/// counters in lazily, so one reading of `VmHWM` can be a little above a later one;
/// this keeps the highest value read, which never goes down.
///
/// # Panics
///
/// If `/proc/self/status` has no `VmHWM` line (not Linux).
pub fn peak_rss_kib() -> u64 {
    let now = status_kib("VmHWM:");
    PEAK_SEEN.fetch_max(now, Ordering::Relaxed).max(now)
}

/// This process's resident set size now, in KiB (Linux `VmRSS`): what a leak
/// grows even while the peak stays where an earlier phase left it.
///
/// ```
/// assert!(lb_testkit::process::rss_kib() > 0);
/// ```
///
/// # Panics
///
/// If `/proc/self/status` has no `VmRSS` line (not Linux).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_named_thread_a_socket_and_memory() {
        // Other tests in this binary start and end threads and sockets at the same
        // time, so this checks presence, not exact counts.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(socket_count() >= 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("counted".into())
            .spawn(move || rx.recv())
            .unwrap();
        // The new thread names itself once it runs: wait for it, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !thread_names().iter().any(|n| n == "counted") {
            assert!(
                std::time::Instant::now() < deadline,
                "named thread not seen"
            );
            std::thread::yield_now();
        }
        assert!(thread_count() >= 2);
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
        drop(listener);
        let peak = peak_rss_kib();
        assert!(
            peak > 0 && peak_rss_kib() >= peak,
            "the peak never goes down"
        );
    }
}
