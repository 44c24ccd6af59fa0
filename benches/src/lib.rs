#![warn(missing_docs)]
//! Helpers shared by the benchmarks of `benches/`.
//!
//! - [`flush_alloc`]: a table allocator whose `sync_for_device` runs real cache instructions, for
//!   the non-coherent cases;
//! - [`heap`]: keeps freed heap memory mapped, so that table allocation is not measured as
//!   page faults;
//! - [`limit`]: the physical limits (plain stores of the IOPTE values; stores + line cleaning);
//! - [`report`]: the case list and the table of docs/performance.md, rebuilt from criterion's
//!   `estimates.json` files by the `bench-table` binary;
//! - [`manager_report`]: the bind/unbind cases, read back from criterion's results;
//! - [`plot`]: the SVG charts of docs/performance.md, drawn by the `bench-plot` binary.

pub mod flush_alloc;
pub mod heap;
pub mod limit;
pub mod manager_report;
pub mod plot;
pub mod report;
