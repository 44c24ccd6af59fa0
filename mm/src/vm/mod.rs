//! Device VMs: the device virtual address (IOVA) space of one device context;
//! [`range`] hands out its ranges.

pub mod range;
