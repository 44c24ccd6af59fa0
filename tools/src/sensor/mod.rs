//! The camera sensor of the `devmmu camera` scenario: what the sensor produces and how its frames
//! are laid out and checked.
//!
//! This module owns the pure-data side of the scenario:
//!
//! - [`Nv12Layout`]: where the luma (Y) plane and the interleaved CbCr plane of an NV12 frame live in
//!   a buffer object (BO), with the stride and size rules of a real allocator;
//! - [`rgb_to_nv12`] / [`nv12_to_rgb`]: BT.601 limited-range conversion in 8-bit fixed point;
//! - [`test_chart`]: a deterministic built-in test chart, so the command runs with no input file;
//! - [`load_image`] / [`write_image`]: reading any image the `image` crate decodes, with the size
//!   checked before decoding, and writing PNG or JPEG without leaving a partial file behind;
//! - [`stamp_frame`] / [`read_stamp`]: the frame counter stamped into each frame, so that no two
//!   frames of a capture are alike even when the scene is a still image;
//! - [`compare_frames`]: the frame checker that says where a captured frame differs from the
//!   expected one.
//!
//! It never touches a BO, a DMA mapping or a device page table: callers copy frames into (or out
//! of) mapped BOs with the byte offsets [`Nv12Layout`] gives.

mod chart;
mod check;
mod convert;
mod error;
mod input;
mod layout;
mod output;
mod stamp;

pub use chart::{test_chart, DEFAULT_CHART_HEIGHT, DEFAULT_CHART_WIDTH};
pub use check::{compare_frames, FrameComparison, Mismatch};
pub use convert::{nv12_to_rgb, nv12_to_xrgb8888, rgb_to_nv12, rgb_to_nv12_into, Nv12Frame};
pub use error::SensorError;
pub use input::{load_image, LoadLimits};
pub use layout::{Nv12Layout, Plane, BO_ALIGN, MAX_DIMENSION, STRIDE_ALIGN};
pub use output::{
    check_output_is_not_input, check_output_path, output_format, write_bytes, write_image,
    write_png, OutputFormat, HOLD_TEMP_ENV, JPEG_QUALITY,
};
pub use stamp::{read_stamp, stamp_frame, stamp_len, STAMP_BYTES};
