//! The merge: a grow-only set of entries keyed by `unique_id`, the greatest copy of
//! each by the last-writer-wins order. Commutative, associative and idempotent; no
//! I/O, nothing can fail, nothing is ever dropped.

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::hash::{BuildHasher, Hasher};

use crate::entry::Entry;

/// The join of any number of states: for every `unique_id` found in `inputs`, its
/// greatest copy, in file order.
pub fn merge<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<&'a Entry> {
    // Counted first, so that the table is sized once: growing it cost more than
    // this list of references.
    let inputs: Vec<&'a Entry> = inputs.into_iter().collect();
    let mut best: HashMap<&'a str, &'a Entry, IdHasher> =
        HashMap::with_capacity_and_hasher(inputs.len(), IdHasher::new());
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
    // Sorting by the timestamp copied beside the reference keeps most comparisons
    // off the entries themselves.
    let mut out: Vec<_> = best.into_values().map(|e| (e.meta.timestamp, e)).collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.file_cmp(b.1)));
    out.into_iter().map(|(_, e)| e).collect()
}

/// [`merge`] into owned entries.
pub fn merge_owned<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<Entry> {
    merge(inputs).into_iter().cloned().collect()
}

/// A fast hash for `unique_id`s: SipHash took a large share of a merge. The seed
/// is random per process, so that colliding ids cannot be prepared in advance.
#[derive(Clone, Copy)]
struct IdHasher {
    seed: u64,
}

impl IdHasher {
    fn new() -> IdHasher {
        IdHasher {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8) | 1,
        }
    }
}

impl BuildHasher for IdHasher {
    type Hasher = IdHash;
    fn build_hasher(&self) -> IdHash {
        IdHash(self.seed)
    }
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// Multiply-rotate over 8-byte words, and a folded multiply at the end to spread
/// the bits over the whole word (the table uses both ends of it).
struct IdHash(u64);

impl IdHash {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for IdHash {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
        // The length tells apart texts that differ only by trailing zero bytes.
        self.add(bytes.len() as u64);
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * u128::from(K);
        (m as u64) ^ ((m >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hash_apart() {
        let b = IdHasher { seed: 1 };
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            for s in [
                format!("h_mem-{i}"),
                format!("h_mem-{i}\0"),
                "x".repeat(i % 40),
            ] {
                seen.insert((b.hash_one(s.as_str()), s));
            }
        }
        let mut by_hash = std::collections::HashMap::new();
        for (h, s) in &seen {
            if let Some(other) = by_hash.insert(*h, s) {
                panic!("{s:?} and {other:?} collide");
            }
        }
    }
}
