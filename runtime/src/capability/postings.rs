//! Sorted posting lists of node ids and their intersection.
//!
//! A posting list is a `Vec<NodeId>` kept strictly ascending. Membership changes are a
//! binary search plus a shift, which is cheap next to the signature check that precedes
//! every change; queries read the lists in place and intersect them smallest first,
//! skipping through the longer lists by galloping search.

use netrun_messages::NodeId;

/// Adds `id` to a sorted list (no-op if present).
pub(super) fn insert(list: &mut Vec<NodeId>, id: NodeId) {
    if let Err(at) = list.binary_search(&id) {
        list.insert(at, id);
    }
}

/// Removes `id` from a sorted list (no-op if absent).
pub(super) fn remove(list: &mut Vec<NodeId>, id: NodeId) {
    if let Ok(at) = list.binary_search(&id) {
        list.remove(at);
    }
}

/// The ids present in every list that also pass `keep`, ascending.
///
/// Walks the shortest list and advances a cursor through each other list, so the cost is
/// about `shortest × lists × log(gap)` rather than the sum of the lengths.
pub(super) fn intersect(
    lists: &mut [&[NodeId]],
    mut keep: impl FnMut(NodeId) -> bool,
) -> Vec<NodeId> {
    lists.sort_unstable_by_key(|list| list.len());
    let Some((first, rest)) = lists.split_first_mut() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(first.len());
    'candidates: for &id in first.iter() {
        for cursor in rest.iter_mut() {
            let skip = gallop(cursor, id);
            *cursor = &cursor[skip..];
            match cursor.first() {
                Some(&next) if next == id => {}
                Some(_) => continue 'candidates,
                None => break 'candidates,
            }
        }
        if keep(id) {
            out.push(id);
        }
    }
    out
}

/// How many leading elements of the sorted `list` are smaller than `id`, by exponential
/// then binary search (cheap when the answer is small, as it is for a moving cursor).
pub(super) fn gallop(list: &[NodeId], id: NodeId) -> usize {
    let mut bound = 1;
    while bound <= list.len() && list[bound - 1] < id {
        bound *= 2;
    }
    // Every element before `bound / 2` was seen to be smaller than `id`.
    let low = bound / 2;
    let high = bound.min(list.len());
    low + list[low..high].partition_point(|&x| x < id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ids(set: &BTreeSet<u64>) -> Vec<NodeId> {
        set.iter().copied().map(NodeId).collect()
    }

    proptest! {
        #[test]
        fn intersection_matches_sets(
            sets in proptest::collection::vec(proptest::collection::btree_set(0u64..200, 0..80), 1..5),
            modulus in 1u64..5,
        ) {
            let lists: Vec<Vec<NodeId>> = sets.iter().map(ids).collect();
            let mut views: Vec<&[NodeId]> = lists.iter().map(Vec::as_slice).collect();
            let got = intersect(&mut views, |id| id.0 % modulus == 0);
            let mut want: BTreeSet<u64> = sets[0].clone();
            for s in &sets[1..] {
                want = want.intersection(s).copied().collect();
            }
            want.retain(|x| x % modulus == 0);
            prop_assert_eq!(got, ids(&want));
        }

        #[test]
        fn gallop_is_partition_point(set in proptest::collection::btree_set(0u64..100, 0..60), probe in 0u64..110) {
            let list = ids(&set);
            prop_assert_eq!(gallop(&list, NodeId(probe)), list.partition_point(|x| x.0 < probe));
        }

        #[test]
        fn insert_remove_keep_order(ops in proptest::collection::vec((any::<bool>(), 0u64..50), 0..100)) {
            let mut list = Vec::new();
            let mut model = BTreeSet::new();
            for (add, x) in ops {
                if add {
                    insert(&mut list, NodeId(x));
                    model.insert(x);
                } else {
                    remove(&mut list, NodeId(x));
                    model.remove(&x);
                }
            }
            prop_assert_eq!(list, ids(&model));
        }
    }

    #[test]
    fn no_lists_no_result() {
        assert!(intersect(&mut [], |_| true).is_empty());
    }
}
