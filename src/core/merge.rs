//! The merge, in one place: a grow-only set of entry versions keyed by
//! `unique_id`, the greatest copy of each by the last-writer-wins order
//! (timestamp instant, version, host, canonical bytes), written in file order
//! (timestamp, unique_id). Commutative, associative and idempotent; no I/O,
//! nothing can fail, nothing is ever dropped (section 5).

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::core::entry::Entry;

/// The order of two copies of one `unique_id`: the greater one wins.
pub fn lww_cmp(a: &Entry, b: &Entry) -> Ordering {
    a.meta
        .timestamp
        .cmp(&b.meta.timestamp)
        .then_with(|| a.meta.version.cmp(&b.meta.version))
        .then_with(|| a.meta.host.cmp(&b.meta.host))
        .then_with(|| {
            if a == b {
                Ordering::Equal
            } else {
                a.to_json().cmp(&b.to_json())
            }
        })
}

/// The order of entries in a written file: by timestamp, then `unique_id`.
pub fn file_cmp(a: &Entry, b: &Entry) -> Ordering {
    a.meta
        .timestamp
        .cmp(&b.meta.timestamp)
        .then_with(|| a.meta.unique_id.cmp(&b.meta.unique_id))
        .then_with(|| lww_cmp(a, b))
}

/// `entries` in file order. Sorted as indices and then moved once: an entry is
/// large, and a sort moves each item many times.
pub fn into_file_order(entries: Vec<Entry>) -> Vec<Entry> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by(|&a, &b| file_cmp(&entries[a], &entries[b]));
    let mut slots: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().expect("each index comes once"))
        .collect()
}

/// Two lists in file order as one, in file order.
pub fn merge_sorted(
    a: impl ExactSizeIterator<Item = Entry>,
    b: impl ExactSizeIterator<Item = Entry>,
) -> Vec<Entry> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.peekable(), b.peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => file_cmp(x, y).is_le(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
}

/// The join of any number of states: for every `unique_id` found in `inputs`, its
/// greatest copy, in file order.
pub fn merge<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<&'a Entry> {
    // Counted first: a table that grows hashes every `unique_id` again.
    let inputs: Vec<&'a Entry> = inputs.into_iter().collect();
    let mut best: HashMap<&'a str, &'a Entry, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(inputs.len(), Default::default());
    for e in inputs {
        best.entry(e.unique_id())
            .and_modify(|cur| {
                if lww_cmp(e, cur).is_gt() {
                    *cur = e;
                }
            })
            .or_insert(e);
    }
    // The timestamp beside each reference: most comparisons end there.
    let mut keyed: Vec<(crate::core::clock::Timestamp, &'a Entry)> =
        best.into_values().map(|e| (e.meta.timestamp, e)).collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| file_cmp(a.1, b.1)));
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// [`merge`] into owned entries.
pub fn merge_owned<'a>(inputs: impl IntoIterator<Item = &'a Entry>) -> Vec<Entry> {
    merge(inputs).into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::Timestamp;
    use crate::core::entry::Metadata;

    fn e(uid: &str, ts: i64, version: u64, host: &str, body: &str) -> Entry {
        let meta = Metadata::new(
            &host.into(),
            Timestamp::from_micros(ts),
            version,
            uid.into(),
        );
        Entry::new(meta, body)
    }

    #[test]
    fn the_greatest_copy_of_each_unique_id_wins_in_file_order() {
        let a1 = e("a", 5, 1, "h", r#"{"n":1}"#);
        let a2 = e("a", 6, 2, "h", r#"{"n":2}"#);
        let b = e("b", 1, 1, "h", r#"{"n":3}"#);
        let out = merge([&a1, &b, &a2]);
        assert_eq!(out, [&b, &a2]);
    }

    #[test]
    fn into_file_order_orders_as_file_cmp_does() {
        let list = vec![
            e("b", 5, 1, "h", r#"{"n":1}"#),
            e("a", 5, 1, "h", r#"{"n":2}"#),
            e("c", 1, 1, "h", r#"{"n":3}"#),
            e("a", 5, 2, "h", r#"{"n":4}"#),
            e("a", 5, 1, "h", r#"{"n":0}"#),
        ];
        let mut expected = list.clone();
        expected.sort_by(file_cmp);
        assert_eq!(expected[0].body(), r#"{"n":3}"#);
        assert_eq!(into_file_order(list), expected);
    }

    #[test]
    fn merge_sorted_gives_file_order() {
        let all = vec![
            e("a", 1, 1, "h", "{}"),
            e("b", 2, 1, "h", "{}"),
            e("a", 3, 2, "h", "{}"),
            e("c", 3, 1, "h", "{}"),
            e("d", 9, 1, "h", "{}"),
        ];
        let (odd, even): (Vec<_>, Vec<_>) = all
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 2 == 1);
        let strip = |v: Vec<(usize, Entry)>| v.into_iter().map(|(_, e)| e).collect::<Vec<_>>();
        let (odd, even) = (strip(odd), strip(even));
        let both = |a: &[Entry], b: &[Entry]| merge_sorted(a.iter().cloned(), b.iter().cloned());
        assert_eq!(both(&odd, &even), all);
        assert_eq!(both(&even, &odd), all);
        assert_eq!(both(&[], &all), all);
    }

    #[test]
    fn ties_are_broken_by_version_then_host_then_bytes() {
        let v1 = e("a", 5, 1, "z", r#"{"n":1}"#);
        let v2 = e("a", 5, 2, "a", r#"{"n":1}"#);
        assert_eq!(merge([&v1, &v2]), [&v2]);
        let ha = e("a", 5, 1, "a", r#"{"n":9}"#);
        let hb = e("a", 5, 1, "b", r#"{"n":1}"#);
        assert_eq!(merge([&hb, &ha]), [&hb]);
        let x = e("a", 5, 1, "a", r#"{"n":1}"#);
        let y = e("a", 5, 1, "a", r#"{"n":2}"#);
        assert_eq!(merge([&y, &x]), [&y]);
        assert_eq!(merge([&x, &y]), [&y]);
    }
}
