//! The cap on operation names per rollup row: a statement the normalizer cannot tame, or a
//! client URL per user, would otherwise add a row of operation sums per distinct name. Past the
//! cap, a row's new names are counted under [`OTHER_OPERATION`] of their category.
//!
//! The cap is applied to the row as stored, under its lock, by both backends: a name the row
//! holds is counted under it, a new name takes a free place or goes to `other`. A request taken
//! back is taken from the names the row holds, and from `other` for the rest, which is where a
//! name the row did not hold was counted when that request was added (a row at its cap keeps
//! every name it holds while they count requests).
//!
//! Invariant: changes only which name an operation's sums go to, never the sums.

use std::borrow::Cow;

use super::RollupChange;
use crate::analysis::aggregate::Rollup;

/// The operation name a row's names past the cap are counted under.
pub const OTHER_OPERATION: &str = "other";

/// Operation names kept per rollup row (one endpoint and version, a minute or an hour) by
/// default: an endpoint's own operations are tens, and a row of 500 is still read in a
/// millisecond.
pub const DEFAULT_MAX_OPERATIONS_PER_ROLLUP: usize = 500;

/// Applies `change` to `row` (the row as stored), with at most `cap` operation names besides
/// the `other` ones; returns how many names were counted under `other`.
pub(super) fn apply(row: &mut Rollup, change: &RollupChange, cap: Option<usize>) -> u64 {
    let Some(cap) = cap else {
        row.subtract(&change.removed);
        row.merge(&change.added);
        return 0;
    };
    let removed = taken_back_from(row, &change.removed);
    row.subtract(&removed);
    let (added, folded) = added_within(row, &change.added, cap);
    row.merge(&added);
    folded
}

/// `removed` with the names `row` does not hold under `other`.
fn taken_back_from<'a>(row: &Rollup, removed: &'a Rollup) -> Cow<'a, Rollup> {
    if (removed.operations.keys()).all(|key| row.operations.contains_key(key)) {
        return Cow::Borrowed(removed);
    }
    Cow::Owned(renamed(removed, |key| row.operations.contains_key(key)))
}

/// `added` with the names past the cap under `other`, and how many those are.
fn added_within<'a>(row: &Rollup, added: &'a Rollup, cap: usize) -> (Cow<'a, Rollup>, u64) {
    let held = (row.operations.keys())
        .filter(|(_, name)| name != OTHER_OPERATION)
        .count();
    let new = (added.operations.keys())
        .filter(|key| !row.operations.contains_key(*key))
        .count();
    if held + new <= cap {
        return (Cow::Borrowed(added), 0);
    }
    let mut free = cap.saturating_sub(held);
    let mut folded = 0;
    let kept = renamed(added, |key| {
        if row.operations.contains_key(key) || key.1 == OTHER_OPERATION {
            true
        } else if free > 0 {
            free -= 1;
            true
        } else {
            folded += 1;
            false
        }
    });
    (Cow::Owned(kept), folded)
}

/// `rollup` with each operation `keep` refuses summed under `other` of its category.
fn renamed(
    rollup: &Rollup,
    mut keep: impl FnMut(&(collector::category::Category, String)) -> bool,
) -> Rollup {
    let mut out = Rollup {
        operations: Default::default(),
        ..rollup.clone()
    };
    for (key, sums) in &rollup.operations {
        let name = if keep(key) {
            key.clone()
        } else {
            (key.0, OTHER_OPERATION.to_owned())
        };
        let into = out.operations.entry(name).or_default();
        into.calls = into.calls.saturating_add(sums.calls);
        into.total_ns = into.total_ns.saturating_add(sums.total_ns);
        into.critical_ns = into.critical_ns.saturating_add(sums.critical_ns);
    }
    out
}

#[cfg(test)]
mod tests {
    use collector::category::Category;

    use super::*;
    use crate::analysis::aggregate::OperationSums;
    use crate::store::{Granularity, RollupKey};

    fn rollup(names: &[&str]) -> Rollup {
        let mut rollup = Rollup::new();
        rollup.requests = 1;
        for name in names {
            let sums = OperationSums {
                calls: 1,
                total_ns: 10,
                critical_ns: 5,
            };
            rollup
                .operations
                .insert((Category::Db, (*name).to_owned()), sums);
        }
        rollup
    }

    fn change(added: Rollup, removed: Rollup) -> RollupChange {
        RollupChange {
            key: RollupKey {
                endpoint_id: 1,
                version: String::new(),
                minute: 0,
                granularity: Granularity::Minute,
            },
            added,
            removed,
        }
    }

    fn calls(row: &Rollup) -> Vec<(String, u64)> {
        (row.operations.iter())
            .map(|((_, name), sums)| (name.clone(), sums.calls))
            .collect()
    }

    #[test]
    fn new_names_past_the_cap_go_to_other_and_are_taken_back_from_it() {
        let mut row = Rollup::new();
        let first = rollup(&["a", "b"]);
        assert_eq!(apply(&mut row, &change(first, Rollup::new()), Some(2)), 0);
        let second = rollup(&["a", "c", "d"]);
        assert_eq!(
            apply(&mut row, &change(second.clone(), Rollup::new()), Some(2)),
            2
        );
        let expected = [("a", 2), ("b", 1), ("other", 2)].map(|(n, c)| (n.to_owned(), c));
        assert_eq!(calls(&row), expected);
        assert_eq!(
            row.operations[&(Category::Db, "other".to_owned())].total_ns,
            20
        );

        // The second request analysed again: taken back from where it was counted.
        assert_eq!(apply(&mut row, &change(Rollup::new(), second), Some(2)), 0);
        assert_eq!(calls(&row), [("a".to_owned(), 1), ("b".to_owned(), 1)]);
    }

    #[test]
    fn without_a_cap_every_name_is_kept() {
        let mut row = rollup(&["a"]);
        assert_eq!(
            apply(&mut row, &change(rollup(&["b", "c"]), Rollup::new()), None),
            0
        );
        assert_eq!(calls(&row).len(), 3);
    }
}
