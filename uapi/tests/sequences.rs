//! The fuzz target's structured sequences (devmmu_uapi::sequence), as a property test: random
//! byte strings, each read as up to 48 requests on two files and checked as they run (refused
//! requests change nothing, bound pages match a model, nothing leaks). The fuzz target in
//! uapi/fuzz runs the same checks for as long as one likes (scripts/fuzz-uapi.sh).

use proptest::prelude::*;

proptest! {
    // Bounded: a few seconds in the debug profile.
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn request_sequences_hold_their_invariants(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        devmmu_uapi::sequence::run_bytes(&data);
    }
}

/// The inputs the fuzzer found that failed once, kept as regressions (uapi/fuzz/regressions).
#[test]
fn fuzz_regressions_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        println!("{}", path.display());
        devmmu_uapi::sequence::run_bytes(&data);
    }
}
