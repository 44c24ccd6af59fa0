//! Library half of the `devmmu` command: the scenarios and their pieces.
pub mod camera;
pub mod edu;
pub mod gpu;
pub mod interrupt;
pub mod pipeline;
pub mod pt;
pub mod sensor;
pub mod summary;
pub mod trace;
pub mod vamap;
