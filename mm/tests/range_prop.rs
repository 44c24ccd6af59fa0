//! Property tests of `range::RangeAllocator` against a brute-force model.
//!
//! The model keeps the nodes in a sorted `Vec` and answers an allocation by testing candidate
//! addresses one by one against the nodes and the guard gap: every multiple of the alignment in
//! the 1 MiB window, or, unaligned, every address where a fit can begin or end (window edges,
//! node edges plus or minus the guard). It knows holes only to rank best-fit candidates by the
//! size of the gap they sit in, so it shares no search logic with the allocator. Every
//! operation's result (value or exact error) and the whole state afterwards must match.

use devmmu_mm::range::{AllocMode, RangeAllocator, RangeError};
use proptest::prelude::*;

const UNIT: u64 = 0x1000;
/// Span length in units (1 MiB).
const UNITS: u64 = 256;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size_units: u64,
        align: u64,
        mode: AllocMode,
        /// Restriction in units from the span start (end may pass the span end).
        range: Option<(u64, u64)>,
    },
    Reserve {
        /// Units from the span start, minus 2 (so some starts fall below the span).
        start_units: u64,
        size_units: u64,
    },
    /// Reserve `gap_units` away from the `pick % len`-th node, above or below it: where the
    /// guard gap is tested.
    ReserveNear {
        pick: usize,
        above: bool,
        gap_units: u64,
        size_units: u64,
    },
    /// Free the `pick % len`-th node, or (when `addr_units` is set) whatever is at that address.
    Free {
        pick: usize,
        addr_units: Option<u64>,
    },
}

fn mode() -> impl Strategy<Value = AllocMode> {
    prop_oneof![
        Just(AllocMode::BestFit),
        Just(AllocMode::Lowest),
        Just(AllocMode::Highest)
    ]
}

fn align() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        1 => Just(1u64),
        8 => (0u32..=7).prop_map(|k| UNIT << k),
        1 => Just(3 * UNIT),
        1 => (2u64..=9).prop_map(|k| k * UNIT + 1),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            prop_oneof![1 => Just(0u64), 30 => 1u64..=48],
            align(),
            mode(),
            proptest::option::weighted(0.3, range()),
        )
            .prop_map(|(size_units, align, mode, range)| Op::Alloc {
                size_units,
                align,
                mode,
                range
            }),
        2 => (0..UNITS + 4, prop_oneof![1 => Just(0u64), 20 => 1u64..=24])
            .prop_map(|(start_units, size_units)| Op::Reserve { start_units, size_units }),
        1 => (any::<usize>(), any::<bool>(), 0u64..=4, 1u64..=8).prop_map(
            |(pick, above, gap_units, size_units)| Op::ReserveNear {
                pick,
                above,
                gap_units,
                size_units
            }
        ),
        3 => (any::<usize>(), proptest::option::weighted(0.2, 0..UNITS))
            .prop_map(|(pick, addr_units)| Op::Free { pick, addr_units }),
    ]
}

/// A restriction `(start, end)` in units from the span start: mostly non-empty (the end may pass
/// the span end), sometimes empty or reversed.
fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        9 => (0..UNITS, 1..=UNITS).prop_map(|(s, len)| (s, s + len)),
        1 => (0..UNITS, 0..=UNITS).prop_map(|(s, back)| (s, s.saturating_sub(back))),
    ]
}

/// Span starts: page 0, page 1, just under 2^48, and ending at u64::MAX (so the start is odd).
fn base() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(UNIT),
        Just((1u64 << 48) - UNITS * UNIT),
        Just(u64::MAX - UNITS * UNIT),
    ]
}

struct Model {
    start: u64,
    end: u64,
    guard: u64,
    /// (start, size), sorted by start.
    nodes: Vec<(u64, u64)>,
}

impl Model {
    /// Whether `[a, a + size)` is inside the span, overlaps no node and keeps the guard gap.
    fn fits(&self, a: u64, size: u64) -> bool {
        let Some(end) = a.checked_add(size) else {
            return false;
        };
        if a < self.start || end > self.end {
            return false;
        }
        let i = self.nodes.partition_point(|&(s, _)| s < a);
        if let Some(&(ps, pz)) = i.checked_sub(1).and_then(|j| self.nodes.get(j)) {
            if ps + pz > a || a - (ps + pz) < self.guard {
                return false;
            }
        }
        if let Some(&(ns, _)) = self.nodes.get(i) {
            if ns < end || ns - end < self.guard {
                return false;
            }
        }
        true
    }

    /// Size of the free gap around a free address `a` (from the node below or the span start to
    /// the node above or the span end).
    fn gap_size(&self, a: u64) -> u64 {
        let i = self.nodes.partition_point(|&(s, _)| s < a);
        let lo = i
            .checked_sub(1)
            .and_then(|j| self.nodes.get(j))
            .map_or(self.start, |&(s, z)| s + z);
        let hi = self.nodes.get(i).map_or(self.end, |&(s, _)| s);
        hi - lo
    }

    fn alloc(
        &mut self,
        size: u64,
        align: u64,
        mode: AllocMode,
        range_start: u64,
        range_end: u64,
    ) -> Result<(u64, u64), RangeError> {
        if size == 0 {
            return Err(RangeError::ZeroSize);
        }
        if range_start >= range_end {
            return Err(RangeError::EmptyRange {
                range_start,
                range_end,
            });
        }
        let lo = range_start.max(self.start);
        let hi = range_end.min(self.end);
        let mut candidates = Vec::new();
        if align > 1 {
            // Every multiple of the alignment in the window. Rounded up without forming
            // `lo + align - 1`, which overflows near the top of the address space although an
            // aligned address may still fit there (a 1-in-400 failure of this model, seen by
            // scripts/test-loop.sh).
            let mut a = match lo % align {
                0 => Some(lo),
                r => lo.checked_add(align - r),
            };
            while let Some(x) = a {
                match x.checked_add(size) {
                    Some(e) if e <= hi => {}
                    _ => break,
                }
                if self.fits(x, size) {
                    candidates.push(x);
                }
                a = x.checked_add(align);
            }
        } else {
            // Unaligned, the lowest fitting address of a gap is the window start or the end of a
            // node below plus the guard (the address just below it does not fit), and the
            // highest is the window end or the start of a node above, less guard and size.
            let mut points = vec![Some(lo), hi.checked_sub(size)];
            for &(s, z) in &self.nodes {
                points.push((s + z).checked_add(self.guard));
                points.push(s.checked_sub(self.guard).and_then(|v| v.checked_sub(size)));
            }
            candidates = points
                .into_iter()
                .flatten()
                .filter(|&a| a >= lo && a.checked_add(size).is_some_and(|e| e <= hi))
                .filter(|&a| self.fits(a, size))
                .collect();
            candidates.sort_unstable();
            candidates.dedup();
        }
        let chosen = match mode {
            AllocMode::Lowest => candidates.first().copied(),
            AllocMode::Highest => candidates.last().copied(),
            AllocMode::BestFit => candidates
                .iter()
                .copied()
                .min_by_key(|&a| (self.gap_size(a), a)),
        };
        let start = chosen.ok_or(RangeError::NoSpace {
            size,
            align,
            range_start,
            range_end,
        })?;
        self.insert(start, size);
        Ok((start, size))
    }

    fn reserve(&mut self, start: u64, size: u64) -> Result<(u64, u64), RangeError> {
        if size == 0 {
            return Err(RangeError::ZeroSize);
        }
        let end = match start.checked_add(size) {
            Some(e) if start >= self.start && e <= self.end => e,
            _ => {
                return Err(RangeError::OutOfSpan {
                    start,
                    size,
                    span_start: self.start,
                    span_end: self.end,
                })
            }
        };
        if let Some(&(s, z)) = self.nodes.iter().find(|&&(s, z)| s < end && start < s + z) {
            return Err(RangeError::Overlap {
                start,
                size,
                existing_start: s,
                existing_size: z,
            });
        }
        let too_close = |&(s, z): &(u64, u64)| RangeError::GuardViolation {
            start,
            size,
            neighbour_start: s,
            neighbour_size: z,
            guard: self.guard,
        };
        if let Some(p) = self
            .nodes
            .iter()
            .rev()
            .find(|&&(s, _)| s < start)
            .filter(|&&(s, z)| start - (s + z) < self.guard)
        {
            return Err(too_close(p));
        }
        if let Some(n) = self
            .nodes
            .iter()
            .find(|&&(s, _)| s >= end)
            .filter(|&&(s, _)| s - end < self.guard)
        {
            return Err(too_close(n));
        }
        self.insert(start, size);
        Ok((start, size))
    }

    fn free(&mut self, start: u64) -> Result<u64, RangeError> {
        let i = self
            .nodes
            .iter()
            .position(|&(s, _)| s == start)
            .ok_or(RangeError::NotAllocated { start })?;
        Ok(self.nodes.remove(i).1)
    }

    fn insert(&mut self, start: u64, size: u64) {
        let i = self.nodes.partition_point(|&(s, _)| s < start);
        self.nodes.insert(i, (start, size));
    }

    fn holes(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = self.start;
        for &(s, z) in self.nodes.iter().chain([(self.end, 0)].iter()) {
            if s > at {
                out.push((at, s - at));
            }
            at = s + z;
        }
        out
    }
}

/// Structural invariants that hold whatever the model says.
fn check_invariants(va: &RangeAllocator) -> Result<(), TestCaseError> {
    let nodes: Vec<_> = va.nodes().collect();
    for n in &nodes {
        prop_assert!(n.size() > 0 && n.start() >= va.span_start() && n.end() <= va.span_end());
    }
    for w in nodes.windows(2) {
        prop_assert!(w[0].end() <= w[1].start(), "overlap {:?}", w);
        prop_assert!(w[1].start() - w[0].end() >= va.guard(), "guard {:?}", w);
    }
    // Nodes and holes tile the span exactly, alternating, with no two holes adjacent.
    let mut pieces: Vec<(u64, u64, bool)> = nodes
        .iter()
        .map(|n| (n.start(), n.end(), true))
        .chain(va.holes().map(|h| (h.start(), h.end(), false)))
        .collect();
    pieces.sort();
    let mut at = va.span_start();
    let mut prev_was_hole = false;
    for &(s, e, is_node) in &pieces {
        prop_assert_eq!(s, at);
        prop_assert!(e > s);
        prop_assert!(is_node || !prev_was_hole, "adjacent holes at {:#x}", s);
        prev_was_hole = !is_node;
        at = e;
    }
    prop_assert_eq!(at, va.span_end());
    let used: u64 = nodes.iter().map(|n| n.size()).sum();
    prop_assert_eq!(va.used_bytes(), used);
    prop_assert_eq!(va.free_bytes(), va.span_end() - va.span_start() - used);
    prop_assert_eq!(va.is_empty(), nodes.is_empty());
    prop_assert_eq!(va.len(), nodes.len());
    Ok(())
}

fn check_reserve(
    va: &mut RangeAllocator,
    model: &mut Model,
    start: u64,
    size: u64,
) -> Result<(), TestCaseError> {
    let got = va.reserve(start, size);
    let want = model.reserve(start, size);
    prop_assert_eq!(
        got.map(|n| (n.start(), n.size())),
        want,
        "reserve {:#x} +{:#x}",
        start,
        size
    );
    Ok(())
}

proptest! {
    // Failing inputs are printed in full; persisting them would write next to a source file
    // proptest cannot locate from an integration test.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn matches_brute_force_model(
        base in base(),
        guard_units in prop_oneof![2 => Just(0u64), 1 => 1u64..=3],
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        let end = base + UNITS * UNIT;
        let guard = guard_units * UNIT;
        let mut va = RangeAllocator::with_guard(base, end, guard).unwrap();
        let mut model = Model { start: base, end, guard, nodes: Vec::new() };
        let unit_addr = |u: u64| base.saturating_add(u * UNIT);

        for op in ops {
            match op {
                Op::Alloc { size_units, align, mode, range } => {
                    let size = size_units * UNIT;
                    let (got, want) = match range {
                        None => (
                            va.alloc(size, align, mode),
                            model.alloc(size, align, mode, base, end),
                        ),
                        Some((rs, re)) => {
                            let (rs, re) = (unit_addr(rs), unit_addr(re));
                            (
                                va.alloc_in_range(size, align, mode, rs, re),
                                model.alloc(size, align, mode, rs, re),
                            )
                        }
                    };
                    prop_assert_eq!(
                        got.map(|n| (n.start(), n.size())),
                        want,
                        "alloc {:#x} align {:#x} {:?} {:?}",
                        size,
                        align,
                        mode,
                        range
                    );
                    if let Ok(n) = got {
                        prop_assert_eq!(n.start() % align.max(1), 0);
                    }
                }
                Op::Reserve { start_units, size_units } => {
                    let start = base.saturating_add(start_units * UNIT).saturating_sub(2 * UNIT);
                    check_reserve(&mut va, &mut model, start, size_units * UNIT)?;
                }
                Op::ReserveNear { pick, above, gap_units, size_units } => {
                    let size = size_units * UNIT;
                    let gap = gap_units * UNIT;
                    let start = match model.nodes.get(pick % model.nodes.len().max(1)) {
                        None => base,
                        Some(&(s, z)) if above => (s + z).saturating_add(gap),
                        Some(&(s, _)) => s.saturating_sub(gap).saturating_sub(size),
                    };
                    check_reserve(&mut va, &mut model, start, size)?;
                }
                Op::Free { pick, addr_units } => {
                    let start = match addr_units {
                        Some(u) => unit_addr(u),
                        None if model.nodes.is_empty() => base,
                        None => model.nodes[pick % model.nodes.len()].0,
                    };
                    prop_assert_eq!(va.free(start), model.free(start), "free {:#x}", start);
                }
            }
            let nodes: Vec<_> = va.nodes().map(|n| (n.start(), n.size())).collect();
            prop_assert_eq!(&nodes, &model.nodes);
            let holes: Vec<_> = va.holes().map(|h| (h.start(), h.size())).collect();
            prop_assert_eq!(holes, model.holes());
            check_invariants(&va)?;
        }

        // Freeing everything gives the whole span back as one hole.
        for (s, z) in model.nodes.clone() {
            prop_assert_eq!(va.free(s), Ok(z));
        }
        prop_assert!(va.is_empty());
        let holes: Vec<_> = va.holes().map(|h| (h.start(), h.size())).collect();
        prop_assert_eq!(holes, vec![(base, end - base)]);
    }

    /// Large spans and arbitrary byte values (sizes, alignments up to 2^63, guards, restriction
    /// ranges): no panic, no wrap, and the structural invariants hold after every call; a
    /// successful allocation honours its alignment, range and size.
    #[test]
    fn wide_values_never_break_invariants(
        span in prop_oneof![
            Just((0x1000u64, 1u64 << 32)),
            Just((0u64, 1u64 << 48)),
            Just((0u64, u64::MAX)),
            Just((u64::MAX - (1 << 40), u64::MAX)),
        ],
        guard in prop_oneof![Just(0u64), 1u64..0x10_0000, Just(u64::MAX)],
        ops in proptest::collection::vec(
            (
                prop_oneof![1u64..0x100_0000, any::<u64>(), (0u32..64).prop_map(|k| 1u64 << k)],
                prop_oneof![Just(0u64), (0u32..64).prop_map(|k| 1u64 << k), any::<u64>()],
                mode(),
                proptest::option::of((any::<u64>(), any::<u64>())),
                any::<bool>(),
                any::<u64>(),
            ),
            1..60,
        ),
    ) {
        let mut va = RangeAllocator::with_guard(span.0, span.1, guard).unwrap();
        for (size, align, mode, range, reserve, addr) in ops {
            let before: Vec<_> = va.nodes().collect();
            let res = if reserve {
                let start = span.0.wrapping_add(addr % (span.1 - span.0));
                va.reserve(start, size).map(|n| (n, span.0, span.1, 0))
            } else if let Some((rs, re)) = range {
                va.alloc_in_range(size, align, mode, rs, re).map(|n| (n, rs, re, align))
            } else {
                va.alloc(size, align, mode).map(|n| (n, span.0, span.1, align))
            };
            match res {
                Ok((n, rs, re, align)) => {
                    prop_assert_eq!(n.size(), size);
                    prop_assert!(n.start() >= rs && n.end() <= re);
                    prop_assert_eq!(n.start() % align.max(1), 0);
                    prop_assert_eq!(va.len(), before.len() + 1);
                }
                Err(_) => {
                    let after: Vec<_> = va.nodes().collect();
                    prop_assert_eq!(after, before);
                }
            }
            if addr % 3 == 0 {
                let victim = va.nodes().nth((addr as usize) % va.len().max(1));
                if let Some(n) = victim {
                    prop_assert_eq!(va.free(n.start()), Ok(n.size()));
                }
            }
            check_invariants(&va)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A fragmented span: hundreds to thousands of small holes between one-unit nodes and one
    /// big hole somewhere among them (often at either end). Lowest and Highest must find the
    /// same placement as the model, which scans every candidate address; this is the case the
    /// allocator's subtree-maximum tree exists for.
    #[test]
    fn fragmented_span_matches_brute_force_model(
        base_pick in 0usize..3,
        guard_units in prop_oneof![2 => Just(0u64), 1 => Just(1u64)],
        small in proptest::collection::vec(0u64..=2, 200..2000),
        big_units in 8u64..=40,
        big_at in prop_oneof![Just(0.0f64), Just(1.0f64), 0.0f64..1.0],
        ops in proptest::collection::vec(
            (
                1u64..=48,
                align(),
                prop_oneof![Just(AllocMode::Lowest), Just(AllocMode::Highest)],
                proptest::option::weighted(0.3, (0.0f64..1.0, 0.0f64..1.0)),
                proptest::option::weighted(0.2, any::<usize>()),
            ),
            1..25,
        ),
    ) {
        // Gaps in units, one before each node; the big one replaces the gap at `big_at`.
        let mut gaps: Vec<u64> = small.iter().map(|&g| g + guard_units.max(1)).collect();
        let big_slot = ((gaps.len() as f64) * big_at) as usize;
        let nodes = gaps.len();
        if big_slot == nodes {
            gaps.push(big_units);
        } else {
            gaps[big_slot] = big_units;
        }
        let span_units: u64 = gaps.iter().sum::<u64>() + nodes as u64;
        let len = span_units * UNIT;
        let base = [0, UNIT, u64::MAX - len][base_pick];
        let end = base + len;
        let guard = guard_units * UNIT;
        let mut va = RangeAllocator::with_guard(base, end, guard).unwrap();
        let mut model = Model { start: base, end, guard, nodes: Vec::new() };
        let mut at = base;
        for &g in gaps.iter().take(nodes) {
            at += g * UNIT;
            check_reserve(&mut va, &mut model, at, UNIT)?;
            at += UNIT;
        }
        prop_assert!(va.holes().any(|h| h.size() == big_units * UNIT));

        for (size_units, align, mode, range, free) in ops {
            let size = size_units * UNIT;
            let (got, want) = match range {
                None => (va.alloc(size, align, mode), model.alloc(size, align, mode, base, end)),
                Some((a, b)) => {
                    let rs = base + ((span_units as f64 * a) as u64) * UNIT;
                    let re = base + ((span_units as f64 * b) as u64).max(1) * UNIT;
                    (
                        va.alloc_in_range(size, align, mode, rs, re),
                        model.alloc(size, align, mode, rs, re),
                    )
                }
            };
            prop_assert_eq!(
                got.map(|n| (n.start(), n.size())),
                want,
                "alloc {:#x} align {:#x} {:?} {:?}",
                size,
                align,
                mode,
                range
            );
            if let Some(pick) = free {
                let s = model.nodes[pick % model.nodes.len()].0;
                prop_assert_eq!(va.free(s), model.free(s), "free {:#x}", s);
            }
            let holes: Vec<_> = va.holes().map(|h| (h.start(), h.size())).collect();
            prop_assert_eq!(holes, model.holes());
        }
        check_invariants(&va)?;
    }
}

/// The case the repeat loop found (1 run in ~400): an aligned allocation in a window at the top
/// of the 64-bit space, where rounding the window start up as `start + align - 1` overflows. The
/// allocator and the model agree on the placement.
#[test]
fn aligned_alloc_at_the_top_of_the_address_space() {
    let base = u64::MAX - UNITS * UNIT;
    let end = base + UNITS * UNIT;
    let mut va = RangeAllocator::with_guard(base, end, 0).unwrap();
    let mut model = Model {
        start: base,
        end,
        guard: 0,
        nodes: Vec::new(),
    };
    let (align, rs) = (9 * UNIT + 1, base + 248 * UNIT);
    let got = va
        .alloc_in_range(UNIT, align, AllocMode::BestFit, rs, end)
        .map(|n| (n.start(), n.size()));
    let want = model.alloc(UNIT, align, AllocMode::BestFit, rs, end);
    assert_eq!(got, want);
    let (start, _) = got.unwrap();
    assert_eq!(start % align, 0);
    assert!(start >= rs && start + UNIT <= end);
}
