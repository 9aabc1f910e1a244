//! The merge: a grow-only set of entries keyed by `unique_id`, the greatest copy of
//! each by the last-writer-wins order. Commutative, associative and idempotent; no
//! I/O, nothing can fail, nothing is ever dropped.

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;

use crate::entry::Entry;

/// The join of any number of states: for every `unique_id` found in `inputs`, its
/// greatest copy, in file order.
pub fn merge<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<&'a Entry> {
    let inputs = inputs.into_iter();
    let mut best: HashMap<&'a str, &'a Entry> = HashMap::with_capacity(inputs.size_hint().0);
    for e in inputs {
        match best.entry(e.unique_id()) {
            Slot::Vacant(v) => {
                v.insert(e);
            }
            Slot::Occupied(mut o) => {
                if e.lww_cmp(o.get()).is_gt() {
                    o.insert(e);
                }
            }
        }
    }
    let mut out: Vec<&Entry> = best.into_values().collect();
    out.sort_unstable_by(|a, b| a.file_cmp(b));
    out
}

/// [`merge`] into owned entries.
pub fn merge_owned<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<Entry> {
    merge(inputs).into_iter().cloned().collect()
}
