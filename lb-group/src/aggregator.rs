//! The weighted state aggregator and its picker.
//!
//! The picker chooses a child by a precomputed schedule: the weights are divided by
//! their greatest common divisor and each child's picks are spread evenly over a cycle
//! as long as the sum of the reduced weights, so weights 2 and 1 give `[a, b, a]`.
//! Each thread walks the cycle with its own [`RoundRobinCounter`] shard, so a pick
//! writes no shared memory. When the cycle would be longer than 4096 the picker chooses
//! by a per-thread random number over the cumulative weights instead.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::{
    ConnectivityState, LbState, PickInfo, PickResult, Picker, RoundRobinCounter, Status,
    aggregate_states,
};

/// The longest precomputed schedule; longer cycles fall back to random choice.
const MAX_SCHEDULE_LEN: u64 = 4096;

/// The failure message when there is nothing to aggregate.
pub(crate) const NO_TARGETS: &str = "weighted-target: no targets to pick from";

/// Aggregates weighted children into one [`LbState`], as grpc-go's weighted
/// aggregator does:
///
/// | children | state | picker |
/// |---|---|---|
/// | none | TRANSIENT_FAILURE | fails: "weighted-target: no targets to pick from" |
/// | any READY | READY | the READY children's pickers, by weight |
/// | else any CONNECTING | CONNECTING | queues |
/// | else any IDLE | IDLE | the IDLE children's pickers, by weight (they ask their child to connect) |
/// | else | TRANSIENT_FAILURE | every child's picker, by weight (they fail with the child's error) |
///
/// A child that reported TRANSIENT_FAILURE counts as failed until it reports READY or
/// IDLE: its CONNECTING reports while it reconnects do not pull the aggregate back to
/// CONNECTING. A new child counts as CONNECTING until it reports.
///
/// The picker spreads each child's share evenly over a precomputed cycle (weights 2
/// and 1 give `[a, b, a]`) that every thread walks on its own, so a pick writes no
/// shared memory; very long cycles fall back to a per-thread random choice.
///
/// Feed it every [`ChildStateUpdate`](crate::ChildStateUpdate) of a
/// [`BalancerGroup`](crate::BalancerGroup) with [`update_state`](Self::update_state),
/// then publish [`build`](Self::build). States of ids it does not know (children that
/// were removed) are ignored.
///
/// # Examples
///
/// ```
/// use lb_core::{ConnectivityState, LbState};
/// use lb_group::WeightedAggregator;
///
/// let mut agg = WeightedAggregator::new();
/// assert_eq!(agg.build().connectivity_state, ConnectivityState::TransientFailure);
/// agg.add("us", 2);
/// agg.add("eu", 1);
/// assert_eq!(agg.build().connectivity_state, ConnectivityState::Connecting);
/// agg.update_state("eu", LbState::queuing(ConnectivityState::Idle));
/// assert_eq!(agg.build().connectivity_state, ConnectivityState::Connecting, "us still connects");
/// assert!(!agg.update_state("gone", LbState::queuing(ConnectivityState::Ready)));
/// ```
#[derive(Debug, Default)]
pub struct WeightedAggregator {
    targets: BTreeMap<String, TargetState>,
}

#[derive(Debug)]
struct TargetState {
    weight: u32,
    state: LbState,
    /// The state this child counts as: sticky in TRANSIENT_FAILURE.
    aggregate_as: ConnectivityState,
}

impl WeightedAggregator {
    /// An aggregator with no children.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds child `id` with `weight` (0 counts as 1), CONNECTING until it reports. An
    /// existing child only gets the new weight.
    pub fn add(&mut self, id: &str, weight: u32) {
        if let Some(t) = self.targets.get_mut(id) {
            t.weight = weight;
            return;
        }
        self.targets.insert(
            id.to_owned(),
            TargetState {
                weight,
                state: LbState::queuing(ConnectivityState::Connecting),
                aggregate_as: ConnectivityState::Connecting,
            },
        );
    }

    /// Removes child `id`. Returns whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        self.targets.remove(id).is_some()
    }

    /// Changes the weight of child `id`. Returns whether it is there.
    pub fn set_weight(&mut self, id: &str, weight: u32) -> bool {
        self.targets
            .get_mut(id)
            .map(|t| t.weight = weight)
            .is_some()
    }

    /// Records the state child `id` published. Returns whether the child is known.
    pub fn update_state(&mut self, id: &str, state: LbState) -> bool {
        let Some(t) = self.targets.get_mut(id) else {
            return false;
        };
        let reconnecting = t.aggregate_as == ConnectivityState::TransientFailure
            && state.connectivity_state == ConnectivityState::Connecting;
        if !reconnecting {
            t.aggregate_as = state.connectivity_state;
        }
        t.state = state;
        true
    }

    /// How many children there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no children.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The aggregate state and its picker (see the table above).
    pub fn build(&self) -> LbState {
        let aggregate = aggregate_states(self.targets.values().map(|t| t.aggregate_as));
        if aggregate == ConnectivityState::Connecting {
            return LbState::queuing(aggregate);
        }
        let chosen: Vec<(Arc<dyn Picker>, u32)> = self
            .targets
            .values()
            .filter(|t| t.aggregate_as == aggregate)
            .map(|t| (t.state.picker.clone(), t.weight))
            .collect();
        if chosen.is_empty() {
            return LbState::failing(Status::unavailable(NO_TARGETS));
        }
        LbState {
            connectivity_state: aggregate,
            picker: Arc::new(WeightedPicker::new(chosen)),
        }
    }
}

/// Picks a child picker by weight, then delegates the pick to it.
pub(crate) struct WeightedPicker {
    pickers: Box<[Arc<dyn Picker>]>,
    choice: Choice,
}

enum Choice {
    /// One child: no choice to make.
    Single,
    /// A precomputed cycle of child indices, walked per thread.
    Schedule {
        order: Box<[u32]>,
        next: RoundRobinCounter,
    },
    /// Cumulative weights for a random choice, when the cycle would be too long.
    Random { cumulative: Box<[u64]>, total: u64 },
}

impl WeightedPicker {
    /// A picker over `children` (picker, weight); must not be empty.
    pub(crate) fn new(children: Vec<(Arc<dyn Picker>, u32)>) -> Self {
        let weights: Vec<u64> = children
            .iter()
            .map(|(_, w)| u64::from((*w).max(1)))
            .collect();
        let pickers: Box<[Arc<dyn Picker>]> = children.into_iter().map(|(p, _)| p).collect();
        let choice = if pickers.len() <= 1 {
            Choice::Single
        } else {
            choose(&weights)
        };
        Self { pickers, choice }
    }

    fn index(&self) -> usize {
        match &self.choice {
            Choice::Single => 0,
            Choice::Schedule { order, next } => order[next.next_below(order.len())] as usize,
            Choice::Random { cumulative, total } => {
                let r = thread_random_below(*total);
                cumulative.partition_point(|&c| c <= r)
            }
        }
    }
}

impl Picker for WeightedPicker {
    #[inline]
    fn pick(&self, info: &PickInfo<'_>) -> PickResult<'_> {
        self.pickers[self.index()].pick(info)
    }
}

impl fmt::Debug for WeightedPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.choice {
            Choice::Single => "single",
            Choice::Schedule { .. } => "schedule",
            Choice::Random { .. } => "random",
        };
        write!(f, "WeightedPicker({} children, {kind})", self.pickers.len())
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The schedule for `weights` (each ≥ 1), or the random fallback.
fn choose(weights: &[u64]) -> Choice {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / g).collect();
    let total: u64 = reduced.iter().sum();
    if total > MAX_SCHEDULE_LEN {
        let cumulative: Box<[u64]> = weights
            .iter()
            .scan(0u64, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        let total = cumulative.last().copied().unwrap_or(1);
        return Choice::Random { cumulative, total };
    }
    Choice::Schedule {
        order: schedule(&reduced),
        next: RoundRobinCounter::new(0),
    }
}

/// Spreads each child's picks evenly over one cycle: child `i`'s `k`-th pick is due at
/// `(2k + 1) / (2 wᵢ)` of the cycle, and picks are taken in order of that time (ties
/// by child index).
fn schedule(weights: &[u64]) -> Box<[u32]> {
    let mut slots: Vec<(u64, u64, u32)> = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        for k in 0..w {
            slots.push((2 * k + 1, 2 * w, i as u32));
        }
    }
    // Compare n1/d1 with n2/d2 exactly: n1·d2 against n2·d1 (all below 2¹³·2¹³).
    slots.sort_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)));
    slots.into_iter().map(|(_, _, i)| i).collect()
}

thread_local! {
    static RANDOM: Cell<u64> = Cell::new(random_seed());
}

/// A distinct seed per thread, without reading a clock.
fn random_seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x243f_6a88_85a3_08d3);
    let mut z = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// A random number in `0..n` from this thread's xorshift generator.
fn thread_random_below(n: u64) -> u64 {
    RANDOM.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((u128::from(x) * u128::from(n)) >> 64) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{FailPicker, Metadata, QueuePicker};

    /// A picker that fails with its own name, so tests can see which child was chosen.
    fn named(name: &str) -> Arc<dyn Picker> {
        Arc::new(FailPicker(Status::unavailable(name)))
    }

    fn chosen(picker: &dyn Picker, n: usize) -> Vec<String> {
        let md = Metadata::new();
        let info = PickInfo::new("/s/m", &md);
        (0..n)
            .map(|_| match picker.pick(&info) {
                PickResult::Fail(s) => s.message().to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn schedule_interleaves_by_reduced_weight() {
        assert_eq!(&*schedule(&[2, 1]), [0, 1, 0]);
        assert_eq!(&*schedule(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(&*schedule(&[1, 3]), [1, 0, 1, 1]);
        let s = schedule(&[5, 3, 2]);
        assert_eq!(s.len(), 10);
        for (i, want) in [5, 3, 2].into_iter().enumerate() {
            assert_eq!(s.iter().filter(|&&x| x as usize == i).count(), want);
        }
        // Smooth: the heaviest child never waits more than two slots.
        assert!(s.windows(3).all(|w| w.contains(&0)), "{s:?}");
    }

    #[test]
    fn weights_are_divided_by_their_gcd() {
        let p = WeightedPicker::new(vec![(named("a"), 200), (named("b"), 100)]);
        match &p.choice {
            Choice::Schedule { order, .. } => assert_eq!(&**order, [0, 1, 0]),
            _ => panic!("expected a schedule, got {p:?}"),
        }
        assert_eq!(chosen(&p, 6), ["a", "b", "a", "a", "b", "a"]);
    }

    #[test]
    fn long_cycles_fall_back_to_random_choice_by_weight() {
        let p = WeightedPicker::new(vec![(named("a"), 9_000), (named("b"), 1_001)]);
        assert!(matches!(p.choice, Choice::Random { .. }), "{p:?}");
        let picks = chosen(&p, 20_000);
        let a = picks.iter().filter(|x| *x == "a").count();
        // Expected 18,000 ± a generous margin.
        assert!((17_000..19_000).contains(&a), "a picked {a} times of 20000");
    }

    #[test]
    fn zero_weight_counts_as_one_and_single_child_delegates() {
        let p = WeightedPicker::new(vec![(named("a"), 0), (named("b"), 0)]);
        assert_eq!(chosen(&p, 4), ["a", "b", "a", "b"]);
        let p = WeightedPicker::new(vec![(named("only"), 7)]);
        assert!(matches!(p.choice, Choice::Single));
        assert_eq!(chosen(&p, 2), ["only", "only"]);
    }

    #[test]
    fn random_choice_stays_in_range() {
        for n in [1, 2, 3, 1 << 40] {
            for _ in 0..1000 {
                assert!(thread_random_below(n) < n);
            }
        }
    }

    fn state(s: ConnectivityState, name: &str) -> LbState {
        LbState {
            connectivity_state: s,
            picker: named(name),
        }
    }

    #[test]
    fn aggregate_follows_the_table() {
        use ConnectivityState::*;
        let mut agg = WeightedAggregator::new();
        let built = agg.build();
        assert_eq!(built.connectivity_state, TransientFailure);
        assert_eq!(chosen(&*built.picker, 1), [NO_TARGETS]);

        agg.add("a", 1);
        agg.add("b", 1);
        assert_eq!(agg.build().connectivity_state, Connecting);

        agg.update_state("a", state(TransientFailure, "a-failed"));
        agg.update_state("b", state(TransientFailure, "b-failed"));
        let built = agg.build();
        assert_eq!(built.connectivity_state, TransientFailure);
        assert_eq!(chosen(&*built.picker, 2), ["a-failed", "b-failed"]);

        // Sticky: a failed child reconnecting still counts as failed.
        agg.update_state("a", state(Connecting, "a-connecting"));
        assert_eq!(agg.build().connectivity_state, TransientFailure);
        let built = agg.build();
        assert_eq!(
            chosen(&*built.picker, 2),
            ["a-connecting", "b-failed"],
            "the child's latest picker is used"
        );

        agg.update_state("b", state(Idle, "b-idle"));
        let built = agg.build();
        assert_eq!(built.connectivity_state, Idle);
        assert_eq!(chosen(&*built.picker, 2), ["b-idle", "b-idle"]);

        agg.update_state("a", state(Ready, "a-ready"));
        let built = agg.build();
        assert_eq!(built.connectivity_state, Ready);
        assert_eq!(chosen(&*built.picker, 2), ["a-ready", "a-ready"]);

        agg.update_state(
            "b",
            LbState {
                connectivity_state: Connecting,
                picker: Arc::new(QueuePicker),
            },
        );
        assert_eq!(agg.build().connectivity_state, Ready, "READY wins");
        assert!(agg.remove("a"));
        assert_eq!(agg.build().connectivity_state, Connecting);
        assert!(agg.set_weight("b", 5));
        assert!(!agg.set_weight("a", 5));
        assert_eq!(agg.len(), 1);
    }
}
