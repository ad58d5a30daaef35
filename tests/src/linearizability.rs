//! A linearizability checker for histories of concurrent clients, each key a
//! register.
//!
//! A fault test records every request with [`History`] (call time, return
//! time, what the server answered) and asks [`check`] whether some order of the
//! operations, each placed at one instant between its call and its return,
//! explains every answer. The search is Wing & Gong's, with Lowe's
//! improvements: it memoises (set of linearized operations, register value)
//! pairs it has already explored, and checks each key on its own, which is
//! sound because a history is linearizable exactly when every key's
//! sub-history is (P-compositionality).
//!
//! An operation whose outcome is [`Outcome::Unknown`] (a timeout, a broken
//! connection) may have taken effect at any instant after its call, or never.
//!
//! ```
//! use cairn_tests::linearizability::{check, CheckResult, History, Op, Outcome};
//! use std::time::Duration;
//!
//! let history = History::new();
//! let write = history.begin(0, "k", Op::Write(1));
//! history.end(write, Outcome::Written);
//! let read = history.begin(1, "k", Op::Read);
//! history.end(read, Outcome::Read(None)); // the acknowledged write is lost
//!
//! match check(&history.operations(), Duration::from_secs(1)) {
//!     CheckResult::Violation { key, culprit, .. } => assert_eq!((key.as_str(), culprit), ("k", 1)),
//!     other => panic!("expected a violation, got {other:?}"),
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a client asked of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the value; `None` when the key is absent.
    Read,
    /// Put a value.
    Write(u64),
    /// Put `new` if the value is `expect` (`None`: the key is absent).
    Cas {
        /// The value the key must hold for the swap to happen.
        expect: Option<u64>,
        /// The value put when it does.
        new: u64,
    },
}

/// What the server answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The answer to [`Op::Read`].
    Read(Option<u64>),
    /// The answer to [`Op::Write`].
    Written,
    /// The answer to [`Op::Cas`]: whether the swap happened.
    Cas(bool),
    /// No answer: the operation may or may not have taken effect.
    Unknown,
}

/// One request of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who sent it; only used to describe a violation.
    pub client: usize,
    /// The key it is about.
    pub key: String,
    /// What was asked.
    pub op: Op,
    /// Nanoseconds since the history's origin, taken before the request left.
    pub call: u64,
    /// Nanoseconds since the origin, taken after the answer arrived; `None`
    /// when none did (then `outcome` should be [`Outcome::Unknown`]).
    pub ret: Option<u64>,
    /// What was answered.
    pub outcome: Outcome,
}

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Some order of the operations explains every answer.
    Linearizable,
    /// No order does.
    Violation {
        /// The key whose sub-history is not linearizable.
        key: String,
        /// Index in the checked history of the operation whose return no
        /// linearization gets past: every operation of the key that returned
        /// before it can be explained, it cannot.
        culprit: usize,
        /// For a human: the culprit and the operations around it.
        explanation: String,
    },
    /// The search budget ran out before a verdict.
    Inconclusive,
}

/// Decides whether `history` is linearizable with each key a register that is
/// initially absent, spending at most about `budget` of wall-clock time.
///
/// Keys are searched one after another against one deadline; a violation
/// found on any key is reported even if an earlier key ran out of budget.
///
/// # Panics
///
/// If an operation's outcome does not fit its kind (say [`Outcome::Written`]
/// for an [`Op::Read`]) or it returned before its call: the recording test is
/// wrong, not the server.
pub fn check(history: &[Operation], budget: Duration) -> CheckResult {
    let deadline = Instant::now() + budget;
    let mut by_key: BTreeMap<&str, Vec<KeyOp>> = BTreeMap::new();
    for (id, operation) in history.iter().enumerate() {
        validate(id, operation);
        by_key
            .entry(&operation.key)
            .or_default()
            .push(KeyOp::from_operation(id, operation));
    }
    let mut verdict = CheckResult::Linearizable;
    for (key, ops) in by_key {
        match search(&ops, deadline) {
            Search::Linearizable => {}
            Search::OutOfTime => verdict = CheckResult::Inconclusive,
            Search::NotLinearizable { culprit, values } => {
                let culprit = &ops[culprit];
                return CheckResult::Violation {
                    key: key.to_owned(),
                    culprit: culprit.id,
                    explanation: explain(history, key, &ops, culprit, &values),
                };
            }
        }
    }
    verdict
}

/// A recorder of operations, cheap to clone into every client task; all
/// times are measured from its creation.
#[derive(Clone, Debug)]
pub struct History {
    origin: Instant,
    ops: Arc<Mutex<Vec<Operation>>>,
}

/// An operation begun and not yet ended. If it is dropped without
/// [`History::end`] (the task was cancelled), its outcome stays Unknown.
#[derive(Debug)]
#[must_use = "end the operation with History::end, or its outcome stays Unknown"]
pub struct Pending {
    index: usize,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History {
            origin: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// Records the call of `op` on `key` by `client`; call it just before
    /// sending the request.
    pub fn begin(&self, client: usize, key: impl Into<String>, op: Op) -> Pending {
        let call = self.now();
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        ops.push(Operation {
            client,
            key: key.into(),
            op,
            call,
            ret: None,
            outcome: Outcome::Unknown,
        });
        Pending {
            index: ops.len() - 1,
        }
    }

    /// Records the answer to a begun operation; call it as soon as the answer
    /// arrives. [`Outcome::Unknown`] leaves the operation without a return.
    pub fn end(&self, pending: Pending, outcome: Outcome) {
        let ret = self.now();
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let operation = &mut ops[pending.index];
        operation.outcome = outcome;
        operation.ret = (outcome != Outcome::Unknown).then_some(ret);
    }

    /// A copy of everything recorded so far, in call order.
    pub fn operations(&self) -> Vec<Operation> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// [`check`] over everything recorded so far.
    pub fn check(&self, budget: Duration) -> CheckResult {
        check(&self.operations(), budget)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

fn validate(id: usize, operation: &Operation) {
    let fits = matches!(
        (operation.op, operation.outcome),
        (_, Outcome::Unknown)
            | (Op::Read, Outcome::Read(_))
            | (Op::Write(_), Outcome::Written)
            | (Op::Cas { .. }, Outcome::Cas(_))
    );
    assert!(fits, "operation #{id}: outcome does not fit: {operation:?}");
    if let Some(ret) = operation.ret {
        assert!(
            ret >= operation.call,
            "operation #{id} returned before its call: {operation:?}"
        );
    }
}

/// The register's value: `None` while the key is absent.
type Value = Option<u64>;

/// One operation of a single key's sub-history.
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index in the whole history.
    id: usize,
    op: Op,
    outcome: Outcome,
    call: u64,
    /// Return time; infinity (`u64::MAX`) for an operation that never returned.
    ret: u64,
}

impl KeyOp {
    fn from_operation(id: usize, operation: &Operation) -> Self {
        KeyOp {
            id,
            op: operation.op,
            outcome: operation.outcome,
            call: operation.call,
            ret: match operation.outcome {
                Outcome::Unknown => u64::MAX,
                _ => operation.ret.unwrap_or(u64::MAX),
            },
        }
    }

    /// Whether every linearization must contain it.
    fn completed(&self) -> bool {
        self.outcome != Outcome::Unknown
    }

    /// The register's value after this operation at `value`, or `None` if its
    /// outcome is impossible there. An Unknown CAS is only placed where it
    /// succeeds: placing a failing one changes nothing, like leaving it out.
    fn step(&self, value: Value) -> Option<Value> {
        match (self.op, self.outcome) {
            (Op::Read, Outcome::Read(seen)) => (seen == value).then_some(value),
            (Op::Read, _) => Some(value),
            (Op::Write(new), _) => Some(Some(new)),
            (Op::Cas { expect, new }, Outcome::Cas(true) | Outcome::Unknown) => {
                (value == expect).then_some(Some(new))
            }
            (Op::Cas { expect, .. }, _) => (value != expect).then_some(value),
        }
    }
}

enum Search {
    Linearizable,
    /// No linearization places every operation that returned before this
    /// one's return (an index into the searched operations), given what they
    /// answered; `values` are what the register could hold in the partial
    /// linearizations that got that far.
    NotLinearizable {
        culprit: usize,
        values: BTreeSet<Value>,
    },
    OutOfTime,
}

/// Sentinel for "no entry" in the entry list's links and the cache's chains.
const NIL: usize = usize::MAX;
/// How many search steps pass between two looks at the clock.
const CLOCK_EVERY: u32 = 1 << 10;
/// At most this many candidate register values are reported with a violation.
const VALUES_SHOWN: usize = 8;

/// Wing & Gong's search with Lowe's memoisation over one key's operations.
///
/// The history becomes a list of call and return entries in time order; the
/// search repeatedly takes the first remaining entry: a call is tentatively
/// linearized (both its entries lifted out of the list) if the register allows
/// its outcome and the resulting (linearized set, value) was not explored
/// before; a return means its operation should already have been linearized,
/// so the last choice is undone and the next call after it tried instead.
/// Operations that never returned have no return entry, so nothing forces
/// them in; the search succeeds once every completed operation is placed.
///
/// When it fails, the furthest return entry any partial linearization was
/// stopped at names the culprit: every return before it can be explained,
/// that one cannot.
fn search(ops: &[KeyOp], deadline: Instant) -> Search {
    let (ops, original): (Vec<KeyOp>, Vec<usize>) = relevant(ops);
    let n = ops.len();
    // Node 0 is the list head; node k + 1 is entries[k].
    let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (index, op) in ops.iter().enumerate() {
        entries.push((op.call, false, index));
        if op.completed() {
            entries.push((op.ret, true, index));
        }
    }
    // At equal times calls come first: touching intervals count as concurrent.
    entries.sort_unstable();
    let nodes = entries.len() + 1;
    let mut next: Vec<usize> = (1..=nodes).collect();
    next[nodes - 1] = NIL;
    let mut prev: Vec<usize> = (0..nodes).map(|node| node.wrapping_sub(1)).collect();
    let mut node_op = vec![0; nodes];
    let mut node_is_return = vec![false; nodes];
    let mut call_node = vec![0; n];
    let mut return_node = vec![NIL; n];
    for (position, &(_, is_return, index)) in entries.iter().enumerate() {
        let node = position + 1;
        node_op[node] = index;
        node_is_return[node] = is_return;
        if is_return {
            return_node[index] = node;
        } else {
            call_node[index] = node;
        }
    }
    // Dancing links: a lifted node keeps its own links, so undoing lifts in
    // reverse order restores the list.
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        next[prev[node]] = next[node];
        if next[node] != NIL {
            prev[next[node]] = prev[node];
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        next[prev[node]] = node;
        if next[node] != NIL {
            prev[next[node]] = node;
        }
    };

    let mut remaining = ops.iter().filter(|op| op.completed()).count();
    let mut linearized = Linearized::new(n);
    let mut value: Value = None;
    let mut explored = Explored::new(linearized.words.len());
    // The operations linearized so far, in order, with the value before each.
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut furthest = 0;
    let mut furthest_values = BTreeSet::new();
    let mut node = next[0];
    let mut steps: u32 = 0;
    while remaining > 0 {
        steps = steps.wrapping_add(1);
        if steps.is_multiple_of(CLOCK_EVERY) && Instant::now() > deadline {
            return Search::OutOfTime;
        }
        if node != NIL && !node_is_return[node] {
            let index = node_op[node];
            if let Some(after) = ops[index].step(value) {
                linearized.flip(index);
                if explored.insert(&linearized, after) {
                    stack.push((index, value));
                    value = after;
                    lift(&mut next, &mut prev, node);
                    if ops[index].completed() {
                        lift(&mut next, &mut prev, return_node[index]);
                        remaining -= 1;
                    }
                    node = next[0];
                    continue;
                }
                linearized.flip(index);
            }
            node = next[node];
            continue;
        }
        // A return: the first one still in the list, as the scan never passes
        // one. Nothing placed so far lets its operation take effect.
        if node != NIL && node >= furthest {
            if node > furthest {
                furthest = node;
                furthest_values.clear();
            }
            if furthest_values.len() < VALUES_SHOWN {
                furthest_values.insert(value);
            }
        }
        let Some((index, before)) = stack.pop() else {
            return Search::NotLinearizable {
                culprit: original[node_op[furthest]],
                values: furthest_values,
            };
        };
        if ops[index].completed() {
            unlift(&mut next, &mut prev, return_node[index]);
            remaining += 1;
        }
        unlift(&mut next, &mut prev, call_node[index]);
        linearized.flip(index);
        value = before;
        node = next[call_node[index]];
    }
    Search::Linearizable
}

/// The set of linearized operations, with a hash kept up to date as members
/// come and go (Zobrist hashing), so the cache never rehashes the whole set.
struct Linearized {
    words: Vec<u64>,
    hash: u64,
}

impl Linearized {
    fn new(ops: usize) -> Self {
        Linearized {
            words: vec![0; ops.div_ceil(64)],
            hash: 0,
        }
    }

    fn flip(&mut self, index: usize) {
        self.words[index / 64] ^= 1 << (index % 64);
        self.hash ^= splitmix64(index as u64);
    }
}

/// A well-mixed 64-bit value per operation index.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The (linearized set, value) pairs already explored. Sets are kept whole,
/// back to back in one arena, and compared exactly: a hash collision costs a
/// comparison, never a wrong verdict.
struct Explored {
    words: usize,
    sets: Vec<u64>,
    /// For each stored set, the previous one with the same hash and value.
    chain: Vec<usize>,
    latest: HashMap<(u64, Value), usize>,
}

impl Explored {
    fn new(words: usize) -> Self {
        Explored {
            words,
            sets: Vec::new(),
            chain: Vec::new(),
            latest: HashMap::new(),
        }
    }

    /// Whether the pair is new; remembers it.
    fn insert(&mut self, set: &Linearized, value: Value) -> bool {
        let slot = self.latest.entry((set.hash, value)).or_insert(NIL);
        let mut stored = *slot;
        while stored != NIL {
            if self.sets[stored * self.words..(stored + 1) * self.words] == set.words[..] {
                return false;
            }
            stored = self.chain[stored];
        }
        self.chain.push(*slot);
        *slot = self.chain.len() - 1;
        self.sets.extend_from_slice(&set.words);
        true
    }
}

/// The operations the search has to consider, and for each its index in
/// `ops`: Unknown reads explain nothing, and (unless a completed CAS failed,
/// which any other value could explain) an Unknown write or CAS whose value
/// no read saw and no CAS expected can be left out — its value would have been
/// overwritten unobserved.
fn relevant(ops: &[KeyOp]) -> (Vec<KeyOp>, Vec<usize>) {
    let failed_cas = ops.iter().any(|op| op.outcome == Outcome::Cas(false));
    let observed: HashSet<Value> = ops
        .iter()
        .filter_map(|op| match (op.op, op.outcome) {
            (Op::Read, Outcome::Read(seen)) => Some(seen),
            (Op::Cas { expect, .. }, _) => Some(expect),
            _ => None,
        })
        .collect();
    ops.iter()
        .enumerate()
        .filter(|(_, op)| match (op.op, op.outcome) {
            (_, outcome) if outcome != Outcome::Unknown => true,
            (Op::Read, _) => false,
            (Op::Write(new) | Op::Cas { new, .. }, _) => {
                failed_cas || observed.contains(&Some(new))
            }
        })
        .map(|(index, op)| (*op, index))
        .unzip()
}

/// How many operations that completed before the culprit's call to show.
const CONTEXT_BEFORE: usize = 8;
/// At most this many operations concurrent with the culprit are shown.
const CONTEXT_CONCURRENT: usize = 24;

fn explain(
    history: &[Operation],
    key: &str,
    ops: &[KeyOp],
    culprit: &KeyOp,
    values: &BTreeSet<Value>,
) -> String {
    let values: Vec<String> = values
        .iter()
        .map(|value| ValueDisplay(*value).to_string())
        .collect();
    let mut text = format!(
        "key {key:?}: no order of the operations explains the return of\n  {}\n\
         once everything that returned before it has taken effect, the value is one of: {}\n",
        describe(history, culprit.id),
        values.join(", ")
    );
    let mut before: Vec<&KeyOp> = ops
        .iter()
        .filter(|op| op.completed() && op.ret < culprit.call)
        .collect();
    before.sort_by_key(|op| op.ret);
    let before = &before[before.len().saturating_sub(CONTEXT_BEFORE)..];
    text.push_str(&format!(
        "the last {} operations that returned before its call:\n",
        before.len()
    ));
    for op in before {
        text.push_str(&format!("  {}\n", describe(history, op.id)));
    }
    let concurrent: Vec<&KeyOp> = ops
        .iter()
        .filter(|op| op.id != culprit.id && op.call <= culprit.ret && op.ret >= culprit.call)
        .collect();
    text.push_str(&format!(
        "{} operations concurrent with it:\n",
        concurrent.len()
    ));
    for op in concurrent.iter().take(CONTEXT_CONCURRENT) {
        text.push_str(&format!("  {}\n", describe(history, op.id)));
    }
    if concurrent.len() > CONTEXT_CONCURRENT {
        text.push_str("  ...\n");
    }
    text
}

fn describe(history: &[Operation], id: usize) -> String {
    let operation = &history[id];
    let ret = match operation.ret {
        Some(ret) if operation.outcome != Outcome::Unknown => millis(ret),
        _ => "never".to_owned(),
    };
    format!(
        "#{id} client {}: {} -> {} [{} .. {}]",
        operation.client,
        operation.op,
        operation.outcome,
        millis(operation.call),
        ret
    )
}

fn millis(nanos: u64) -> String {
    format!("{}.{:06}ms", nanos / 1_000_000, nanos % 1_000_000)
}

struct ValueDisplay(Value);

impl fmt::Display for ValueDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Read => f.write_str("read"),
            Op::Write(value) => write!(f, "write {value}"),
            Op::Cas { expect, new } => write!(f, "cas {} to {new}", ValueDisplay(expect)),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Outcome::Read(value) => write!(f, "{}", ValueDisplay(value)),
            Outcome::Written => f.write_str("ok"),
            Outcome::Cas(true) => f.write_str("swapped"),
            Outcome::Cas(false) => f.write_str("not swapped"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const BUDGET: Duration = Duration::from_secs(30);

    fn done(client: usize, op: Op, call: u64, ret: u64, outcome: Outcome) -> Operation {
        Operation {
            client,
            key: "k".to_owned(),
            op,
            call,
            ret: Some(ret),
            outcome,
        }
    }

    fn unknown(client: usize, op: Op, call: u64) -> Operation {
        Operation {
            client,
            key: "k".to_owned(),
            op,
            call,
            ret: None,
            outcome: Outcome::Unknown,
        }
    }

    fn read(client: usize, call: u64, ret: u64, seen: Option<u64>) -> Operation {
        done(client, Op::Read, call, ret, Outcome::Read(seen))
    }

    fn write(client: usize, call: u64, ret: u64, value: u64) -> Operation {
        done(client, Op::Write(value), call, ret, Outcome::Written)
    }

    fn cas(
        client: usize,
        call: u64,
        ret: u64,
        expect: Option<u64>,
        new: u64,
        swapped: bool,
    ) -> Operation {
        done(
            client,
            Op::Cas { expect, new },
            call,
            ret,
            Outcome::Cas(swapped),
        )
    }

    /// The culprit of a violation on key "k", or a panic naming the result.
    fn culprit(history: &[Operation]) -> usize {
        match check(history, BUDGET) {
            CheckResult::Violation {
                key,
                culprit,
                explanation,
            } => {
                assert_eq!(key, "k");
                assert!(
                    explanation.contains(&format!("#{culprit} client")),
                    "explanation does not name the culprit: {explanation}"
                );
                culprit
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            read(0, 0, 1, None),
            write(0, 2, 3, 1),
            read(1, 4, 5, Some(1)),
            cas(0, 6, 7, Some(1), 2, true),
            cas(1, 8, 9, Some(1), 3, false),
            cas(1, 10, 11, None, 4, false),
            read(0, 12, 13, Some(2)),
            write(1, 14, 15, 5),
            read(0, 16, 17, Some(5)),
        ];
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(&[], BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        let history = [
            write(0, 0, 100, 1),
            write(1, 10, 50, 2),
            // Overlaps both writes: may see either, or nothing yet.
            read(2, 5, 20, None),
            read(3, 20, 40, Some(2)),
            // After write 2 returned, write 1 (still running) may land last.
            read(2, 60, 70, Some(1)),
            read(3, 110, 120, Some(1)),
        ];
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        // The read is called at the very nanosecond the write returns.
        let history = [write(0, 0, 10, 1), read(1, 10, 20, None)];
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn stale_read_after_completed_write_is_a_violation() {
        let history = [
            write(0, 0, 10, 1),
            write(0, 20, 30, 2),
            read(1, 25, 28, Some(1)),
            read(1, 40, 50, Some(1)),
        ];
        assert_eq!(culprit(&history), 3);
    }

    #[test]
    fn read_of_a_value_never_written_is_a_violation() {
        let history = [
            write(0, 0, 10, 1),
            read(1, 5, 15, Some(7)),
            read(1, 20, 30, Some(1)),
        ];
        assert_eq!(culprit(&history), 1);
    }

    #[test]
    fn reads_observing_writes_in_opposite_orders_are_a_violation() {
        let history = [
            write(0, 0, 100, 1),
            write(1, 0, 100, 2),
            read(2, 10, 20, Some(1)),
            read(2, 30, 40, Some(2)),
            read(3, 10, 20, Some(2)),
            read(3, 30, 40, Some(1)),
        ];
        // Up to the third read's return the history is explained; the fourth
        // read's return, at the same instant, is what no order explains.
        assert_eq!(culprit(&history), 5);
    }

    #[test]
    fn cas_that_swapped_a_mismatching_value_is_a_violation() {
        let history = [
            write(0, 0, 10, 1),
            cas(1, 20, 30, Some(2), 3, true),
            read(0, 40, 50, Some(3)),
        ];
        assert_eq!(culprit(&history), 1);
    }

    #[test]
    fn cas_that_failed_on_a_matching_value_is_a_violation() {
        let history = [write(0, 0, 10, 1), cas(1, 20, 30, Some(1), 3, false)];
        assert_eq!(culprit(&history), 1);
    }

    #[test]
    fn lost_acknowledged_write_is_a_violation() {
        let history = [
            write(0, 0, 10, 1),
            write(1, 20, 30, 2),
            unknown(1, Op::Write(3), 35),
            read(2, 40, 50, Some(1)),
            read(2, 60, 70, Some(1)),
        ];
        assert_eq!(culprit(&history), 3);
    }

    #[test]
    fn unknown_write_that_took_effect_is_linearizable() {
        let history = [
            write(0, 0, 10, 1),
            unknown(1, Op::Write(2), 20),
            read(2, 30, 40, Some(1)),
            // It landed long after its call, even after the later write below.
            write(0, 50, 60, 3),
            read(2, 70, 80, Some(2)),
            read(0, 90, 100, Some(2)),
        ];
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn unknown_write_that_never_took_effect_is_linearizable() {
        let history = [
            write(0, 0, 10, 1),
            unknown(1, Op::Write(2), 20),
            read(2, 30, 40, Some(1)),
            read(2, 1_000, 1_010, Some(1)),
        ];
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn unknown_write_cannot_be_seen_before_its_call() {
        let history = [read(0, 0, 10, Some(2)), unknown(1, Op::Write(2), 20)];
        assert_eq!(culprit(&history), 0);
    }

    #[test]
    fn unknown_write_once_seen_cannot_be_undone() {
        let history = [
            write(0, 0, 10, 1),
            unknown(1, Op::Write(2), 20),
            read(2, 30, 40, Some(2)),
            read(2, 50, 60, Some(1)),
        ];
        assert_eq!(culprit(&history), 3);
    }

    #[test]
    fn unknown_read_is_ignored() {
        let history = [
            write(0, 0, 10, 1),
            unknown(1, Op::Read, 5),
            read(2, 20, 30, Some(1)),
        ];
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn unknown_cas_may_or_may_not_have_swapped() {
        let swapped = [
            write(0, 0, 10, 1),
            unknown(
                1,
                Op::Cas {
                    expect: Some(1),
                    new: 2,
                },
                20,
            ),
            read(2, 30, 40, Some(2)),
        ];
        assert_eq!(check(&swapped, BUDGET), CheckResult::Linearizable);
        let not_swapped = [
            write(0, 0, 10, 1),
            unknown(
                1,
                Op::Cas {
                    expect: Some(1),
                    new: 2,
                },
                20,
            ),
            read(2, 30, 40, Some(1)),
        ];
        assert_eq!(check(&not_swapped, BUDGET), CheckResult::Linearizable);
        let could_not_swap = [
            write(0, 0, 10, 1),
            unknown(
                1,
                Op::Cas {
                    expect: Some(5),
                    new: 2,
                },
                20,
            ),
            read(2, 30, 40, Some(2)),
        ];
        assert_eq!(culprit(&could_not_swap), 2);
    }

    #[test]
    fn unseen_unknown_write_can_explain_a_failed_cas() {
        // Nobody read 9, but only the Unknown write of 9 explains the failure.
        let history = [
            write(0, 0, 10, 1),
            unknown(1, Op::Write(9), 15),
            cas(2, 20, 30, Some(1), 3, false),
        ];
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn keys_are_checked_apart_and_the_violating_one_is_named() {
        let mut history = vec![write(0, 0, 10, 1), read(1, 20, 30, Some(1))];
        history.push(Operation {
            key: "other".to_owned(),
            ..write(0, 0, 10, 1)
        });
        history.push(Operation {
            key: "other".to_owned(),
            // On key "k" this value would be fine; on "other" it is stale.
            ..read(1, 40, 50, None)
        });
        match check(&history, BUDGET) {
            CheckResult::Violation { key, culprit, .. } => {
                assert_eq!((key.as_str(), culprit), ("other", 3))
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn explanation_names_the_culprit_and_its_context() {
        let history = [
            write(0, 0, 1_000_000, 1),
            read(1, 2_000_000, 2_500_000, None),
        ];
        let CheckResult::Violation { explanation, .. } = check(&history, BUDGET) else {
            panic!("expected a violation");
        };
        assert_eq!(
            explanation,
            "key \"k\": no order of the operations explains the return of\n  \
             #1 client 1: read -> absent [2.000000ms .. 2.500000ms]\n\
             once everything that returned before it has taken effect, the value is one of: 1\n\
             the last 1 operations that returned before its call:\n  \
             #0 client 0: write 1 -> ok [0.000000ms .. 1.000000ms]\n\
             0 operations concurrent with it:\n"
        );
    }

    /// A history of `clients` clients each doing `per_client` operations on
    /// one key, each taking effect at a random instant inside its interval
    /// on a simulated register, so it is linearizable by construction. A
    /// fraction `unknown` of them get no answer (writes and CASes among those
    /// take effect or not at random).
    fn random_history(
        seed: u64,
        clients: usize,
        per_client: usize,
        unknown_share: f64,
    ) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut history = Vec::with_capacity(clients * per_client);
        let mut effect_at = Vec::with_capacity(clients * per_client);
        for client in 0..clients {
            let mut time = rng.random_range(0..1_000u64);
            for _ in 0..per_client {
                let call = time + rng.random_range(0..2_000);
                let ret = call + rng.random_range(1..5_000);
                effect_at.push(rng.random_range(call..=ret));
                history.push(done(client, Op::Read, call, ret, Outcome::Read(None)));
                time = ret;
            }
        }
        let mut order: Vec<usize> = (0..history.len()).collect();
        order.sort_by_key(|&index| effect_at[index]);
        let mut value: Option<u64> = None;
        let mut next_value = 1;
        for index in order {
            let operation = &mut history[index];
            let choice = rng.random_range(0..10);
            let lost = rng.random_bool(unknown_share);
            let takes_effect = !lost || rng.random_bool(0.5);
            if choice < 5 {
                operation.outcome = Outcome::Read(value);
            } else {
                next_value += 1;
                if choice < 8 {
                    operation.op = Op::Write(next_value);
                    operation.outcome = Outcome::Written;
                    if takes_effect {
                        value = Some(next_value);
                    }
                } else {
                    let expect = match rng.random_range(0..4) {
                        0 | 1 => value,
                        2 => None,
                        _ => Some(rng.random_range(1..next_value)),
                    };
                    operation.op = Op::Cas {
                        expect,
                        new: next_value,
                    };
                    let swapped = value == expect;
                    operation.outcome = Outcome::Cas(swapped);
                    if swapped && takes_effect {
                        value = Some(next_value);
                    }
                }
            }
            if lost {
                operation.ret = None;
                operation.outcome = Outcome::Unknown;
            }
        }
        history
    }

    #[test]
    fn large_random_valid_history_is_linearizable_quickly() {
        let history = random_history(1, 10, 500, 0.0);
        let started = Instant::now();
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
        let took = started.elapsed();
        eprintln!("5,000 operations checked in {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn large_random_history_with_unknown_outcomes_is_linearizable_quickly() {
        let history = random_history(2, 10, 500, 0.03);
        assert!(history.iter().any(|op| op.outcome == Outcome::Unknown));
        let started = Instant::now();
        assert_eq!(check(&history, BUDGET), CheckResult::Linearizable);
        let took = started.elapsed();
        eprintln!("5,000 operations with Unknowns checked in {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn large_random_history_with_one_stale_read_is_a_violation() {
        let mut history = random_history(3, 10, 500, 0.0);
        // A read in the middle, made to return the value of a write that a
        // later write overwrote before the read was even called.
        let mut writes: Vec<(u64, u64, u64)> = history
            .iter()
            .filter_map(|op| match op.op {
                Op::Write(value) => Some((op.call, op.ret?, value)),
                _ => None,
            })
            .collect();
        writes.sort_by_key(|&(_, ret, _)| ret);
        let mut reads: Vec<usize> = (0..history.len())
            .filter(|&index| history[index].op == Op::Read)
            .collect();
        reads.sort_by_key(|&index| history[index].call);
        let stale = reads[reads.len() / 2];
        let read_call = history[stale].call;
        let (overwriter_call, _, _) = *writes
            .iter()
            .rev()
            .find(|&&(_, ret, _)| ret < read_call)
            .expect("a write completed before the read");
        let (_, _, old_value) = *writes
            .iter()
            .rev()
            .find(|&&(_, ret, _)| ret < overwriter_call)
            .expect("a write completed before the overwriting one");
        history[stale].outcome = Outcome::Read(Some(old_value));

        let started = Instant::now();
        assert_eq!(culprit(&history), stale);
        eprintln!(
            "stale read among 5,000 operations found in {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn exhausted_budget_is_inconclusive() {
        let history = random_history(4, 10, 500, 0.0);
        assert_eq!(check(&history, Duration::ZERO), CheckResult::Inconclusive);
    }

    #[test]
    fn recorder_times_operations_and_leaves_unanswered_ones_unknown() {
        let history = History::new();
        let threads: Vec<_> = (0..4)
            .map(|client| {
                let history = history.clone();
                std::thread::spawn(move || {
                    let value = client as u64 + 1;
                    let write = history.begin(client, "k", Op::Write(value));
                    history.end(write, Outcome::Written);
                    // Never answered, like a request cut off by a partition.
                    let _lost = history.begin(client, format!("lost-{client}"), Op::Write(value));
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("client thread");
        }
        let read = history.begin(9, "k", Op::Read);
        history.end(read, Outcome::Read(Some(0)));
        let ops = history.operations();
        assert_eq!(ops.len(), 9);
        for op in &ops {
            match op.outcome {
                Outcome::Unknown => assert_eq!(op.ret, None),
                _ => assert!(op.ret.is_some_and(|ret| ret >= op.call), "{op:?}"),
            }
        }
        assert_eq!(
            ops.iter()
                .filter(|op| op.outcome == Outcome::Unknown)
                .count(),
            4
        );
        // Nobody wrote 0.
        match history.check(BUDGET) {
            CheckResult::Violation { key, culprit, .. } => {
                assert_eq!((key.as_str(), culprit), ("k", 8))
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }
}
