//! The merge: a grow-only set of entries keyed by `unique_id`, the greatest copy of
//! each by the last-writer-wins order. Commutative, associative and idempotent; no
//! I/O, nothing can fail, nothing is ever dropped.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::hash::{BuildHasher, Hasher};

use crate::clock::Timestamp;
use crate::entry::Entry;

/// The join of any number of states: for every `unique_id` found in `inputs`, its
/// greatest copy, in file order.
pub fn merge<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<&'a Entry> {
    let inputs: Vec<&'a Entry> = inputs.into_iter().collect();
    let parts = if inputs.len() < PARALLEL_FROM {
        1
    } else {
        // Every part scans all the hashes: past a few, more parts cost more than
        // they save.
        crate::cores().min(8)
    };
    // Each id's hash was taken where it was read (see `UniqueId`).
    let hashes: Vec<u64> = inputs
        .iter()
        .map(|e| e.meta.unique_id.table_hash())
        .collect();
    if parts <= 1 {
        let mut out = best_of_part(&inputs, &hashes, 0, 1);
        out.sort_unstable_by(file_order);
        return out.into_iter().map(|(_, e)| e).collect();
    }
    // Each thread keeps and sorts the winners of the ids whose hash falls in its
    // part; the sorted parts are merged at the end.
    let (inputs, hashes) = (&inputs, &hashes);
    let sorted: Vec<Vec<(Timestamp, &'a Entry)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..parts)
            .map(|p| {
                s.spawn(move || {
                    let mut out = best_of_part(inputs, hashes, p, parts);
                    out.sort_unstable_by(file_order);
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("merge workers do not panic"))
            .collect()
    });
    let mut sorted = sorted;
    while sorted.len() > 2 {
        let pairs = std::mem::take(&mut sorted);
        let mut pairs = pairs.into_iter();
        while let Some(a) = pairs.next() {
            sorted.push(match pairs.next() {
                Some(b) => merge_sorted(&a, &b, |x| *x),
                None => a,
            });
        }
    }
    match (sorted.first(), sorted.get(1)) {
        (Some(a), Some(b)) => merge_sorted(a, b, |x| x.1),
        (Some(a), None) => a.iter().map(|x| x.1).collect(),
        _ => Vec::new(),
    }
}

/// The items of two lists in file order, as one list in file order.
fn merge_sorted<'a, T>(
    a: &[(Timestamp, &'a Entry)],
    b: &[(Timestamp, &'a Entry)],
    item: impl Fn(&(Timestamp, &'a Entry)) -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        if file_order(x, y).is_le() {
            out.push(item(x));
            i += 1;
        } else {
            out.push(item(y));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(&item));
    out.extend(b[j..].iter().map(&item));
    out
}

/// Below this many entries, threads cost more than they save.
const PARALLEL_FROM: usize = 50_000;

/// File order, on the timestamp copied beside the reference first: that keeps most
/// comparisons off the entries themselves.
fn file_order(a: &(Timestamp, &Entry), b: &(Timestamp, &Entry)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.file_cmp(b.1))
}

/// The greatest copy of each `unique_id` whose hash is in part `part` of `parts`.
fn best_of_part<'a>(
    inputs: &[&'a Entry],
    hashes: &[u64],
    part: usize,
    parts: usize,
) -> Vec<(Timestamp, &'a Entry)> {
    let in_part = |h: u64| (h >> 32) as usize % parts == part;
    // Keyed by the hash alone, which keeps the table small and its probes off the
    // ids; the rare id whose hash another id took first goes to a table keyed by
    // the id itself.
    let mut best: HashMap<u64, &'a Entry, PassHash> =
        HashMap::with_capacity_and_hasher(inputs.len() / parts + 1, PassHash);
    let mut clashes: HashMap<&'a [u8], &'a Entry> = HashMap::new();
    for (&e, &hash) in inputs.iter().zip(hashes) {
        if !in_part(hash) {
            continue;
        }
        match best.entry(hash) {
            Slot::Vacant(v) => {
                v.insert(e);
            }
            Slot::Occupied(mut o) if o.get().id_bytes() == e.id_bytes() => {
                if e.lww_cmp(o.get()).is_gt() {
                    o.insert(e);
                }
            }
            Slot::Occupied(_) => match clashes.entry(e.id_bytes()) {
                Slot::Vacant(v) => {
                    v.insert(e);
                }
                Slot::Occupied(mut o) => {
                    if e.lww_cmp(o.get()).is_gt() {
                        o.insert(e);
                    }
                }
            },
        }
    }
    best.into_values()
        .chain(clashes.into_values())
        .map(|e| (e.meta.timestamp, e))
        .collect()
}

/// Hands a precomputed hash to the table as it is.
#[derive(Clone, Copy, Default)]
struct PassHash;

impl BuildHasher for PassHash {
    type Hasher = Pass;
    fn build_hasher(&self) -> Pass {
        Pass(0)
    }
}

struct Pass(u64);

impl Hasher for Pass {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 hashes are hashed with this")
    }
    fn write_u64(&mut self, h: u64) {
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// [`merge`] into owned entries.
pub fn merge_owned<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<Entry> {
    merge(inputs).into_iter().cloned().collect()
}

/// A fast hash for `unique_id`s (and the identities of stamping): SipHash took a
/// large share of a merge. The seed is random per process, so that colliding ids
/// cannot be prepared in advance.
#[derive(Clone, Copy)]
pub(crate) struct IdHasher {
    seed: u64,
}

impl Default for IdHasher {
    fn default() -> IdHasher {
        IdHasher::new()
    }
}

/// The hash of a `unique_id`'s bytes that the merge's tables use: one seed for the
/// whole process, so that an id can be hashed where it is read.
pub(crate) fn id_hash(id: &[u8]) -> u64 {
    static IDS: std::sync::OnceLock<IdHasher> = std::sync::OnceLock::new();
    IDS.get_or_init(IdHasher::new).hash_one(id)
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
pub(crate) struct IdHash(u64);

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
    use crate::files::parse_stamped;

    #[test]
    fn parallel_and_serial_merges_agree() {
        let n = PARALLEL_FROM + 1000;
        let text = format!(
            "[{}]",
            (0..n)
                .map(|i| format!(
                    r#"{{"_crdt_metadata":{{"host":"h{}","timestamp":"2026-01-01T00:00:{:02}.000000Z","unique_id":"u{}","version":1}},"n":{i}}}"#,
                    i % 3,
                    i % 60,
                    i % (n / 2)
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let entries = parse_stamped(text.as_bytes()).unwrap().entries;
        let parallel = merge(&entries);
        let serial = merge(&entries[..PARALLEL_FROM / 2])
            .into_iter()
            .chain(merge(&entries[PARALLEL_FROM / 2..]))
            .collect::<Vec<_>>();
        let serial = merge(serial);
        assert_eq!(parallel.len(), n / 2);
        assert_eq!(parallel, serial);
        assert!(parallel.windows(2).all(|w| w[0].file_cmp(w[1]).is_lt()));
    }

    #[test]
    fn ids_with_one_hash_stay_apart() {
        let text = format!(
            "[{}]",
            (0..40)
                .map(|i| format!(
                    r#"{{"_crdt_metadata":{{"host":"h","timestamp":"2026-01-01T00:00:{:02}.000000Z","unique_id":"u{}","version":1}}}}"#,
                    i % 7,
                    i % 5
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let entries = parse_stamped(text.as_bytes()).unwrap().entries;
        let inputs: Vec<&Entry> = entries.iter().collect();
        let mut all_clash = best_of_part(&inputs, &vec![7; inputs.len()], 0, 1);
        all_clash.sort_by(file_order);
        let got: Vec<&Entry> = all_clash.into_iter().map(|x| x.1).collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got, merge(&entries));
    }

    #[test]
    fn sorted_lists_merge_in_order() {
        let text = format!(
            "[{}]",
            (0..50)
                .map(|i| format!(
                    r#"{{"_crdt_metadata":{{"host":"h","timestamp":"2026-01-01T00:00:{:02}.000000Z","unique_id":"u{i}","version":1}}}}"#,
                    (i * 7) % 13
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let entries = parse_stamped(text.as_bytes()).unwrap().entries;
        let mut keyed: Vec<_> = entries.iter().map(|e| (e.meta.timestamp, e)).collect();
        let (mut a, mut b) = (keyed[..20].to_vec(), keyed[20..].to_vec());
        a.sort_by(file_order);
        b.sort_by(file_order);
        keyed.sort_by(file_order);
        let want: Vec<&Entry> = keyed.iter().map(|x| x.1).collect();
        assert_eq!(merge_sorted(&a, &b, |x| x.1), want);
        assert_eq!(merge_sorted(&b, &a, |x| x.1), want);
        assert_eq!(merge_sorted(&[], &a, |x| x.1).len(), 20);
    }

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
