//! Range allocation in the manner of the kernel's `drm_mm` (drivers/gpu/drm/drm_mm.c,
//! include/drm/drm_mm.h): hands out ranges of one address span, placed best-fit, lowest or
//! highest at any alignment, claims fixed ranges and keeps guard gaps between them.
//!
//! A shared building block below the address spaces that use it: a device VM
//! ([`crate::vm::Vm`]) and a system IOMMU domain ([`crate::dma::IommuDomain`]) each own a
//! [`RangeAllocator`] over their IOVAs.
//!
//! This module owns only the bookkeeping of which ranges of a span are taken. It must never
//! touch page tables, `DmaAddr`s or memory, nor depend on the layers above it (nothing here
//! uses `crate::vm` or `crate::dma`): the owner of a [`RangeAllocator`] maps what it gets from
//! here and unmaps before it calls [`RangeAllocator::free`].
//!
//! All addresses and sizes are in **bytes**. The allocator is byte-granular: it does not round
//! sizes up to a granule; callers that map whole pages pass page-multiple sizes and at least
//! granule alignment.
//!
//! What follows `drm_mm`:
//! - three placements ([`AllocMode`]): smallest fitting hole (`DRM_MM_INSERT_BEST`), lowest
//!   address (`DRM_MM_INSERT_LOW`), highest address with the node at the top of its hole
//!   (`DRM_MM_INSERT_HIGH`);
//! - an optional restriction range per allocation (`drm_mm_insert_node_in_range`);
//! - claiming a fixed range ([`RangeAllocator::reserve`], `drm_mm_reserve_node`), refused when
//!   any part of it is taken;
//! - guard gaps between nodes, the use drivers make of `drm_mm`'s `color_adjust` hook (i915 keeps
//!   a guard page between nodes of different cache colour); here the gap is one per-allocator
//!   value applied between every two nodes, not between a node and the edge of the span.
//!
//! Alignment may be any value, as in `drm_mm` (old i915 fence regions used non-power-of-two
//! ones): a node starts at a multiple of it (0 and 1 mean none). Where it differs: failures are
//! typed [`RangeError`]s rather than `-ENOSPC`; nodes are identified by their start address.
//!
//! # Files
//! - `allocator.rs`: [`RangeAllocator`], its placements ([`AllocMode`]) and the handle of an
//!   allocated range ([`RangeNode`]);
//! - `hole.rs`: [`Hole`], the one record of a free gap, shared by the three hole indices;
//! - `by_size.rs`: the holes by (size, start), best fit's index (`drm_mm`'s `holes_size`);
//! - `treap.rs`: the holes by address in a treap augmented with each subtree's largest hole,
//!   for lowest / highest (`drm_mm`'s `holes_addr` with `subtree_max_hole`);
//! - `error.rs`: [`RangeError`].

mod allocator;
mod by_size;
mod error;
mod hole;
mod treap;

pub use allocator::{AllocMode, RangeAllocator, RangeNode};
pub use error::RangeError;
pub use hole::Hole;
