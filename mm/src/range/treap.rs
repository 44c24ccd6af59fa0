//! The holes in a treap keyed by address, each node augmented with the largest hole of its
//! subtree: the index behind lowest and highest placement, `drm_mm`'s `holes_addr` tree with
//! its `subtree_max_hole`.

use super::Hole;

/// "No node" in [`HoleTreap`]'s arena.
const NIL: usize = usize::MAX;

/// One hole of a [`HoleTreap`] and its links.
#[derive(Debug, Clone)]
struct TreapNode {
    hole: Hole,
    /// Treap heap key: never below a child's.
    prio: u64,
    left: usize,
    right: usize,
    /// Size in bytes of the largest hole in the subtree rooted here, this one included: what
    /// lets a search skip a subtree of holes that are all too small (`drm_mm`'s
    /// `subtree_max_hole`).
    max: u64,
}

/// The holes of a [`RangeAllocator`](super::RangeAllocator) in a treap keyed by start address,
/// each node augmented with the largest hole size in its subtree. Nodes live in an arena `Vec`
/// linked by index; freed slots are reused.
///
/// Priorities come from a SplitMix64 sequence private to the tree, so the shape does not
/// depend on the addresses inserted: the expected depth is O(log n) for any sequence of
/// inserts and removes, and every operation below costs O(depth). The sequence is fixed, so
/// runs are reproducible.
#[derive(Debug, Clone)]
pub(super) struct HoleTreap {
    arena: Vec<TreapNode>,
    vacant: Vec<usize>,
    root: usize,
    prio_state: u64,
}

impl HoleTreap {
    pub(super) fn new() -> Self {
        Self {
            arena: Vec::new(),
            vacant: Vec::new(),
            root: NIL,
            prio_state: 0,
        }
    }

    /// The next SplitMix64 output (Steele, Lea, Flood 2014).
    fn next_prio(&mut self) -> u64 {
        self.prio_state = self.prio_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.prio_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn max_of(&self, t: usize) -> u64 {
        if t == NIL {
            0
        } else {
            self.arena[t].max
        }
    }

    fn size_of(&self, t: usize) -> u64 {
        self.arena[t].hole.size()
    }

    /// Recomputes `t`'s subtree maximum from its own size and its children's maxima.
    fn pull(&mut self, t: usize) {
        let (l, r) = (self.arena[t].left, self.arena[t].right);
        self.arena[t].max = self.size_of(t).max(self.max_of(l)).max(self.max_of(r));
    }

    /// Splits subtree `t` into the holes starting below `key` and those starting at or above.
    fn split(&mut self, t: usize, key: u64) -> (usize, usize) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.arena[t].hole.start() < key {
            let (l, r) = self.split(self.arena[t].right, key);
            self.arena[t].right = l;
            self.pull(t);
            (t, r)
        } else {
            let (l, r) = self.split(self.arena[t].left, key);
            self.arena[t].left = r;
            self.pull(t);
            (l, t)
        }
    }

    /// Joins subtrees `a` and `b`, every hole of `a` lying below every hole of `b`.
    fn merge(&mut self, a: usize, b: usize) -> usize {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.arena[a].prio >= self.arena[b].prio {
            let r = self.merge(self.arena[a].right, b);
            self.arena[a].right = r;
            self.pull(a);
            a
        } else {
            let l = self.merge(a, self.arena[b].left);
            self.arena[b].left = l;
            self.pull(b);
            b
        }
    }

    /// Adds `hole` (overlapping no hole already here).
    pub(super) fn insert(&mut self, hole: Hole) {
        let node = TreapNode {
            hole,
            prio: self.next_prio(),
            left: NIL,
            right: NIL,
            max: hole.size(),
        };
        let t = match self.vacant.pop() {
            Some(t) => {
                self.arena[t] = node;
                t
            }
            None => {
                self.arena.push(node);
                self.arena.len() - 1
            }
        };
        let (l, r) = self.split(self.root, hole.start());
        let l = self.merge(l, t);
        self.root = self.merge(l, r);
    }

    /// Removes the hole starting at `start`; nothing happens if there is none.
    pub(super) fn remove(&mut self, start: u64) {
        self.root = self.remove_from(self.root, start);
    }

    fn remove_from(&mut self, t: usize, start: u64) -> usize {
        if t == NIL {
            return NIL;
        }
        let here = self.arena[t].hole.start();
        if start == here {
            let m = self.merge(self.arena[t].left, self.arena[t].right);
            self.vacant.push(t);
            return m;
        }
        if start < here {
            let l = self.remove_from(self.arena[t].left, start);
            self.arena[t].left = l;
        } else {
            let r = self.remove_from(self.arena[t].right, start);
            self.arena[t].right = r;
        }
        self.pull(t);
        t
    }

    /// The lowest hole starting at or above `key` with at least `size` bytes.
    pub(super) fn first_fit_from(&self, key: u64, size: u64) -> Option<Hole> {
        let t = self.first_from(self.root, key, size);
        (t != NIL).then(|| self.arena[t].hole)
    }

    /// The highest hole starting below `key` with at least `size` bytes.
    pub(super) fn last_fit_before(&self, key: u64, size: u64) -> Option<Hole> {
        let t = self.last_before(self.root, key, size);
        (t != NIL).then(|| self.arena[t].hole)
    }

    /// Follows the path to `key`; of the subtrees hanging off it to the right, at most one is
    /// descended (the first whose maximum fits, which then surely holds the answer), so the
    /// cost is O(depth).
    fn first_from(&self, t: usize, key: u64, size: u64) -> usize {
        if t == NIL || self.arena[t].max < size {
            return NIL;
        }
        let n = &self.arena[t];
        if n.hole.start() < key {
            return self.first_from(n.right, key, size);
        }
        let found = self.first_from(n.left, key, size);
        if found != NIL {
            found
        } else if self.size_of(t) >= size {
            t
        } else {
            self.first_in(n.right, size)
        }
    }

    /// Mirror of [`first_from`](Self::first_from).
    fn last_before(&self, t: usize, key: u64, size: u64) -> usize {
        if t == NIL || self.arena[t].max < size {
            return NIL;
        }
        let n = &self.arena[t];
        if n.hole.start() >= key {
            return self.last_before(n.left, key, size);
        }
        let found = self.last_before(n.right, key, size);
        if found != NIL {
            found
        } else if self.size_of(t) >= size {
            t
        } else {
            self.last_in(n.left, size)
        }
    }

    /// The lowest hole of subtree `t` with at least `size` bytes.
    fn first_in(&self, mut t: usize, size: u64) -> usize {
        while t != NIL && self.arena[t].max >= size {
            let n = &self.arena[t];
            if self.max_of(n.left) >= size {
                t = n.left;
            } else if self.size_of(t) >= size {
                return t;
            } else {
                t = n.right;
            }
        }
        NIL
    }

    /// The highest hole of subtree `t` with at least `size` bytes.
    fn last_in(&self, mut t: usize, size: u64) -> usize {
        while t != NIL && self.arena[t].max >= size {
            let n = &self.arena[t];
            if self.max_of(n.right) >= size {
                t = n.right;
            } else if self.size_of(t) >= size {
                return t;
            } else {
                t = n.left;
            }
        }
        NIL
    }
}

#[cfg(test)]
impl HoleTreap {
    /// Checks search order, heap order and every subtree maximum; returns (holes, height).
    pub(super) fn check(&self) -> (usize, usize) {
        fn walk(tree: &HoleTreap, t: usize, lo: u64, hi: u64, prio: u64) -> (usize, usize) {
            if t == NIL {
                return (0, 0);
            }
            let n = &tree.arena[t];
            let (start, end) = (n.hole.start(), n.hole.end());
            assert!(start >= lo && end <= hi && start < end, "order at {t}");
            assert!(n.prio <= prio, "heap order at {t}");
            let want = (end - start)
                .max(tree.max_of(n.left))
                .max(tree.max_of(n.right));
            assert_eq!(n.max, want, "subtree max at {t}");
            let (lc, lh) = walk(tree, n.left, lo, start, n.prio);
            let (rc, rh) = walk(tree, n.right, end, hi, n.prio);
            (lc + rc + 1, lh.max(rh) + 1)
        }
        let (count, height) = walk(self, self.root, 0, u64::MAX, u64::MAX);
        assert_eq!(count + self.vacant.len(), self.arena.len());
        (count, height)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn hole_treap_matches_a_sorted_map() {
        // A fixed SplitMix64 stream drives random disjoint inserts and removes; after each,
        // both searches are compared with a scan of a BTreeMap holding the same holes.
        let mut rng = HoleTreap::new();
        let mut tree = HoleTreap::new();
        let mut map: BTreeMap<u64, u64> = BTreeMap::new();
        for step in 0..3000u64 {
            let r = rng.next_prio();
            // Slots of 64 bytes; a hole takes 1..=64 bytes at the start of its slot.
            let slot = (r % 512) * 64;
            if map.remove(&slot).is_some() {
                tree.remove(slot);
            } else {
                let len = (r >> 20) % 64 + 1;
                map.insert(slot, slot + len);
                tree.insert(Hole::new(slot, len));
            }
            // Removing an absent hole changes nothing.
            tree.remove(1);
            let (count, height) = tree.check();
            assert_eq!(count, map.len());
            // Expected treap depth is about 2.99 log2 n; allow a generous margin.
            assert!(height <= 64, "height {height} for {count} holes");
            let key = rng.next_prio() % (512 * 64 + 64);
            let size = rng.next_prio() % 66;
            let first = map
                .range(key..)
                .find(|(&s, &e)| e - s >= size)
                .map(|(&s, &e)| Hole::new(s, e - s));
            assert_eq!(tree.first_fit_from(key, size), first, "step {step}");
            let last = map
                .range(..key)
                .rev()
                .find(|(&s, &e)| e - s >= size)
                .map(|(&s, &e)| Hole::new(s, e - s));
            assert_eq!(tree.last_fit_before(key, size), last, "step {step}");
        }
        // Slots are reused, not leaked.
        assert!(tree.arena.len() <= 512);
    }
}
