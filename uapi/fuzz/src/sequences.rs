//! AFL++ target: each input is a sequence of requests on two files, run and checked by
//! `devmmu_uapi::sequence::run_bytes` (a failed check panics, which AFL records as a crash).
//! Run with scripts/fuzz-uapi.sh.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        devmmu_uapi::sequence::run_bytes(data);
    });
}
