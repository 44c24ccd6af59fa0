#![no_std]
//! (in progress)
extern crate alloc;
