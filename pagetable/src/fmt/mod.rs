//! The formats: one file each, saying only how entries are encoded.

pub mod amd_v1;
pub mod apple_dart;
pub mod arm_lpae;
pub mod arm_lpae_16k_64k;
pub mod arm_lpae_s2;
pub mod arm_v7s;
pub mod ipu;
pub mod riscv;
pub mod vtd_ss;
