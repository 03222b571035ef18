//! Helpers that take picks and check their distribution.

use lb_core::{Metadata, PickInfo, PickResult, Picker};

/// The method path the helpers pick for.
pub const TEST_METHOD: &str = "/test.Service/Method";

/// Picks once for [`TEST_METHOD`] with no metadata and returns the picked address, or
/// `None` if the picker did not pick a subchannel.
pub fn pick_address(picker: &dyn Picker) -> Option<String> {
    let md = Metadata::new();
    let info = PickInfo {
        method: TEST_METHOD,
        metadata: &md,
    };
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
    let info = PickInfo {
        method: TEST_METHOD,
        metadata: md,
    };
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
