//! Why a range allocator call failed.

use thiserror::Error;

#[cfg(doc)]
use super::RangeAllocator;

/// Why a [`RangeAllocator`] call failed. A failed call changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum RangeError {
    /// [`RangeAllocator::new`]: the span `[start, end)` holds no address (`start >= end`).
    #[error("empty span [{start:#x}, {end:#x})")]
    EmptySpan {
        /// Requested first address of the span.
        start: u64,
        /// Requested end (exclusive) of the span.
        end: u64,
    },
    /// An allocation or reservation of 0 bytes was asked for.
    #[error("zero-sized range requested")]
    ZeroSize,
    /// [`RangeAllocator::alloc_in_range`]: the restriction range `[range_start, range_end)` is
    /// empty or reversed.
    #[error("empty restriction range [{range_start:#x}, {range_end:#x})")]
    EmptyRange {
        /// Requested lowest allowed address.
        range_start: u64,
        /// Requested end (exclusive) of the allowed addresses.
        range_end: u64,
    },
    /// No free range of `size` bytes aligned to `align` (with guard gaps) exists within
    /// `[range_start, range_end)` intersected with the span (`-ENOSPC` in `drm_mm`).
    #[error(
        "no free range of {size:#x} bytes aligned to {align:#x} in [{range_start:#x}, {range_end:#x})"
    )]
    NoSpace {
        /// Requested size in bytes.
        size: u64,
        /// Requested alignment in bytes, as passed (0 and 1 both mean none).
        align: u64,
        /// Lowest allowed address (the span start for [`RangeAllocator::alloc`]).
        range_start: u64,
        /// End (exclusive) of the allowed addresses (the span end for
        /// [`RangeAllocator::alloc`]).
        range_end: u64,
    },
    /// [`RangeAllocator::reserve`]: `[start, start + size)` is not inside the span (or
    /// `start + size` overflows u64).
    #[error("[{start:#x} +{size:#x}) is outside the span [{span_start:#x}, {span_end:#x})")]
    OutOfSpan {
        /// Requested start.
        start: u64,
        /// Requested size in bytes.
        size: u64,
        /// First address of the allocator's span.
        span_start: u64,
        /// End (exclusive) of the allocator's span.
        span_end: u64,
    },
    /// [`RangeAllocator::reserve`]: the range overlaps an allocated node (the lowest one it
    /// overlaps is reported).
    #[error("[{start:#x} +{size:#x}) overlaps node [{existing_start:#x} +{existing_size:#x})")]
    Overlap {
        /// Requested start.
        start: u64,
        /// Requested size in bytes.
        size: u64,
        /// Start of the node already there.
        existing_start: u64,
        /// Size in bytes of the node already there.
        existing_size: u64,
    },
    /// [`RangeAllocator::reserve`]: the range is free but closer than the guard gap to a
    /// neighbouring node (the lower neighbour is reported when both are too close).
    #[error(
        "[{start:#x} +{size:#x}) is within the {guard:#x}-byte guard of node [{neighbour_start:#x} +{neighbour_size:#x})"
    )]
    GuardViolation {
        /// Requested start.
        start: u64,
        /// Requested size in bytes.
        size: u64,
        /// Start of the neighbouring node.
        neighbour_start: u64,
        /// Size in bytes of the neighbouring node.
        neighbour_size: u64,
        /// The allocator's guard gap in bytes.
        guard: u64,
    },
    /// [`RangeAllocator::free`]: no node starts at this address.
    #[error("no node starts at {start:#x}")]
    NotAllocated {
        /// The address passed.
        start: u64,
    },
}
