//! Counters of one page table, read by tests and the command line.

use serde::Serialize;

/// What a page table has done since it was created. All counts are cumulative.
///
/// Serializes (serde) as a map of its field names to counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// IOPTEs written by map, unmap, block splits and dirty clears
    /// ([`PageTable::read_and_clear_dirty`](crate::PageTable::read_and_clear_dirty)): leaves,
    /// table pointers and cleared entries (not the initial fill of a new table).
    pub pte_stores: u64,
    /// Table pages allocated (including the dummy page and dummy tables of formats that use them).
    pub tables_allocated: u64,
    /// Table pages given back to the allocator.
    pub tables_freed: u64,
    /// CPU cache lines (64 bytes) cleaned for a non-coherent walker.
    pub lines_cleaned: u64,
    /// Runs of lines handed to the allocator to clean: one per `sync_for_device` call (one per
    /// contiguous run of written entries of a table), and one per table of a
    /// `sync_tables_for_device` call (the new tables of a map, cleaned whole with one barrier).
    pub sync_calls: u64,
    /// IOVA ranges handed to the TLB invalidation callback by `iotlb_sync`.
    pub inval_ranges: u64,
    /// Blocks replaced by a next-level table by [`PageTable::unmap_split`]: each live block
    /// split with break-before-make, plus each block of the new tables split further before
    /// they were linked.
    ///
    /// [`PageTable::unmap_split`]: crate::PageTable::unmap_split
    pub blocks_split: u64,
}
