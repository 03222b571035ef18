//! Connectivity states and the rule that aggregates many of them into one.

use std::fmt;

/// The connectivity state of a subchannel, a policy or a channel.
///
/// ```text
///            connect()
///   IDLE ───────────────> CONNECTING ──────> READY
///    ^                        │                │ connection lost
///    │ backoff over           v                v
///    └──────────── TRANSIENT_FAILURE          IDLE
/// ```
///
/// `Shutdown` is terminal: nothing leaves it.
///
/// # Examples
///
/// ```
/// use lb_core::ConnectivityState;
/// assert_eq!(ConnectivityState::Ready.to_string(), "READY");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectivityState {
    /// No connection and no attempt under way.
    Idle,
    /// A connection attempt is under way.
    Connecting,
    /// Connected and able to carry calls.
    Ready,
    /// The last attempt failed; waiting out a backoff.
    TransientFailure,
    /// Shut down for good.
    Shutdown,
}

impl ConnectivityState {
    /// Every state.
    pub const ALL: [Self; 5] = [
        Self::Idle,
        Self::Connecting,
        Self::Ready,
        Self::TransientFailure,
        Self::Shutdown,
    ];

    fn index(self) -> usize {
        match self {
            Self::Idle => 0,
            Self::Connecting => 1,
            Self::Ready => 2,
            Self::TransientFailure => 3,
            Self::Shutdown => 4,
        }
    }

    /// The upper-case name gRPC uses for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Connecting => "CONNECTING",
            Self::Ready => "READY",
            Self::TransientFailure => "TRANSIENT_FAILURE",
            Self::Shutdown => "SHUTDOWN",
        }
    }
}

impl fmt::Display for ConnectivityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Aggregates the states of many children into one, by gRPC's rule:
/// READY if any child is READY, else CONNECTING if any is, else IDLE if any is, else
/// TRANSIENT_FAILURE (which is also the answer when there are no children). SHUTDOWN
/// children are not counted.
///
/// The evaluator keeps counts, so a transition costs O(1) and the caller never walks its
/// children.
///
/// # Examples
///
/// ```
/// use lb_core::{ConnectivityState as S, ConnectivityStateEvaluator};
/// let mut eval = ConnectivityStateEvaluator::default();
/// assert_eq!(eval.record_transition(None, Some(S::Connecting)), S::Connecting);
/// assert_eq!(eval.record_transition(None, Some(S::TransientFailure)), S::Connecting);
/// assert_eq!(eval.record_transition(Some(S::Connecting), Some(S::Ready)), S::Ready);
/// assert_eq!(eval.record_transition(Some(S::Ready), None), S::TransientFailure);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConnectivityStateEvaluator {
    counts: [usize; 5],
}

impl ConnectivityStateEvaluator {
    /// Records that one child moved from `old` to `new` (`None` for a child that is
    /// being added or removed) and returns the aggregate state.
    pub fn record_transition(
        &mut self,
        old: Option<ConnectivityState>,
        new: Option<ConnectivityState>,
    ) -> ConnectivityState {
        if let Some(old) = old {
            let count = &mut self.counts[old.index()];
            debug_assert!(*count > 0, "transition from a state nobody was in");
            *count = count.saturating_sub(1);
        }
        if let Some(new) = new {
            self.counts[new.index()] += 1;
        }
        self.aggregate()
    }

    /// The aggregate of the recorded children.
    pub fn aggregate(&self) -> ConnectivityState {
        aggregate_counts(&self.counts)
    }

    /// How many children are in `state`.
    pub fn count(&self, state: ConnectivityState) -> usize {
        self.counts[state.index()]
    }
}

/// Aggregates an iterator of states by the same rule as [`ConnectivityStateEvaluator`].
///
/// # Examples
///
/// ```
/// use lb_core::{aggregate_states, ConnectivityState as S};
/// assert_eq!(aggregate_states([S::Idle, S::TransientFailure]), S::Idle);
/// assert_eq!(aggregate_states([]), S::TransientFailure);
/// ```
pub fn aggregate_states(states: impl IntoIterator<Item = ConnectivityState>) -> ConnectivityState {
    let mut counts = [0usize; 5];
    for s in states {
        counts[s.index()] += 1;
    }
    aggregate_counts(&counts)
}

fn aggregate_counts(counts: &[usize; 5]) -> ConnectivityState {
    for state in [
        ConnectivityState::Ready,
        ConnectivityState::Connecting,
        ConnectivityState::Idle,
    ] {
        if counts[state.index()] > 0 {
            return state;
        }
    }
    ConnectivityState::TransientFailure
}

#[cfg(test)]
mod tests {
    use super::ConnectivityState as S;
    use super::*;

    #[test]
    fn precedence_is_ready_connecting_idle_failure() {
        let cases: &[(&[S], S)] = &[
            (&[], S::TransientFailure),
            (&[S::Shutdown], S::TransientFailure),
            (&[S::TransientFailure, S::Idle], S::Idle),
            (&[S::Idle, S::Connecting], S::Connecting),
            (&[S::Connecting, S::Ready, S::TransientFailure], S::Ready),
            (
                &[S::TransientFailure, S::TransientFailure],
                S::TransientFailure,
            ),
        ];
        for (states, want) in cases {
            assert_eq!(
                aggregate_states(states.iter().copied()),
                *want,
                "{states:?}"
            );
        }
    }

    #[test]
    fn evaluator_matches_recount_after_every_transition() {
        let mut eval = ConnectivityStateEvaluator::default();
        let mut children = vec![S::Idle; 4];
        for _ in &children {
            eval.record_transition(None, Some(S::Idle));
        }
        let script = [
            (0, S::Connecting),
            (1, S::TransientFailure),
            (0, S::Ready),
            (2, S::Shutdown),
            (0, S::Idle),
            (3, S::TransientFailure),
            (0, S::TransientFailure),
        ];
        for (i, to) in script {
            let got = eval.record_transition(Some(children[i]), Some(to));
            children[i] = to;
            assert_eq!(got, aggregate_states(children.iter().copied()));
        }
        for s in ConnectivityState::ALL {
            assert_eq!(eval.count(s), children.iter().filter(|c| **c == s).count());
        }
    }
}
