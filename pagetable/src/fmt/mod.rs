//! The formats: one file each, saying only how entries are encoded.

pub mod arm_lpae;
pub mod ipu;
