//! Helpers that take picks and check their distribution.

use lb_core::{Metadata, PickInfo, PickResult, Picker};

/// The method path the helpers pick for.
pub const TEST_METHOD: &str = "/test.Service/Method";

/// Picks once for [`TEST_METHOD`] with no metadata and returns the picked address, or
/// `None` if the picker did not pick a subchannel.
pub fn pick_address(picker: &dyn Picker) -> Option<String> {
    let md = Metadata::new();
    let info = PickInfo::new(TEST_METHOD, &md);
    match picker.pick(&info) {
        PickResult::Pick(p) => Some(p.subchannel.address().address.clone()),
        _ => None,
    }
}

/// Picks `n` times and returns the addresses picked.
///
/// # Panics
///
/// If a pick does not pick a subchannel.
pub fn take_addresses(picker: &dyn Picker, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            pick_address(picker).unwrap_or_else(|| panic!("pick {i} did not pick a subchannel"))
        })
        .collect()
}

/// Picks once and says what kind of result it was: `"pick:<addr>"`, `"queue"`,
/// `"fail:<CODE>"` or `"drop:<CODE>"`.
pub fn describe_pick(picker: &dyn Picker, md: &Metadata) -> String {
    let info = PickInfo::new(TEST_METHOD, md);
    match picker.pick(&info) {
        PickResult::Pick(p) => format!("pick:{}", p.subchannel.address()),
        PickResult::Queue => "queue".into(),
        PickResult::Fail(s) => format!("fail:{}", s.code()),
        PickResult::Drop(s) => format!("drop:{}", s.code()),
    }
}

/// Checks that picks cycle over `want` (a multiset of addresses): the first
/// `want.len()` picks are a permutation of `want`, and the next `2 × want.len()` picks
/// repeat that order exactly.
///
/// # Panics
///
/// If they do not, with the picks seen.
pub fn verify_round_robin(picker: &dyn Picker, want: &[&str]) {
    if let Err(msg) = check_round_robin(picker, want) {
        panic!("{msg}");
    }
}

/// Like [`verify_round_robin`], returning the failure instead of panicking.
///
/// # Errors
///
/// The picks do not cycle over `want`.
pub fn check_round_robin(picker: &dyn Picker, want: &[&str]) -> Result<(), String> {
    let n = want.len();
    let got = take_addresses(picker, 3 * n);
    let mut first: Vec<&str> = got[..n].iter().map(String::as_str).collect();
    first.sort_unstable();
    let mut sorted_want = want.to_vec();
    sorted_want.sort_unstable();
    if first != sorted_want {
        return Err(format!(
            "first {n} picks {:?} are not a permutation of {want:?}",
            &got[..n]
        ));
    }
    for i in n..3 * n {
        if got[i] != got[i % n] {
            return Err(format!("picks {got:?} do not repeat with period {n}"));
        }
    }
    Ok(())
}

/// Picks `iters` times from `picker` for [`TEST_METHOD`], keeping the results alive
/// just long enough that the compiler cannot skip the picks: the inner loop of the
/// pick benchmarks.
pub fn pick_loop(picker: &dyn Picker, iters: u64) {
    let md = Metadata::new();
    let info = PickInfo::new(TEST_METHOD, &md);
    for _ in 0..iters {
        std::hint::black_box(
            picker
                .pick(std::hint::black_box(&info))
                .subchannel()
                .map(|s| s.id()),
        );
    }
}

/// Wall time per pick when `threads` threads each run [`pick_loop`] for `iters` picks
/// at once (started together behind a barrier): with one thread it is the cost of a
/// pick, with more the inverse of aggregate throughput, so the ratio of the two is the
/// scaling.
///
/// ```
/// use std::sync::Arc;
/// use lb_core::{Picker, QueuePicker};
/// let picker: Arc<dyn Picker> = Arc::new(QueuePicker);
/// let per_pick = lb_testkit::picks::parallel_picks(&picker, 2, 1000);
/// println!("{per_pick:?} per pick with 2 threads");
/// ```
pub fn parallel_picks(
    picker: &std::sync::Arc<dyn Picker>,
    threads: u32,
    iters: u64,
) -> std::time::Duration {
    use std::sync::{Arc, Barrier};
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let picker = picker.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                pick_loop(&*picker, iters);
            })
        })
        .collect();
    start.wait();
    let t = std::time::Instant::now();
    for h in handles {
        h.join().expect("bench thread");
    }
    t.elapsed() / threads
}
