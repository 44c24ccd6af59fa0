//! The C program uapi/tests/c/flow.c, compiled with `cc` (strict C11) against the generated
//! header and linked against this crate's static library, runs the whole flow and passes.
//!
//! The static library (package devmmu-uapi-c in uapi/clib, `libdevmmu_c.a`) is built by a nested
//! `cargo build -p devmmu-uapi-c` into this test's own target directory and profile (cargo does
//! not build a `staticlib` for a test run), so the test works on a fresh clone where
//! `cargo test --workspace` is the only command run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of this test binary (`target/<profile>/deps/c_flow-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Builds the static library for this profile; returns its path.
fn static_lib() -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "devmmu-uapi-c"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(crate_dir());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .expect("run cargo build for the static library");
    assert!(status.success(), "building libdevmmu_c.a failed");
    let lib = profile_dir.join("libdevmmu_c.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

#[test]
fn c_program_runs_the_whole_flow() {
    let lib = static_lib();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-flow");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join("flow");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(cc)
        .args([
            "-std=c11",
            "-D_DEFAULT_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
        ])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/flow.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C compiler (cc)");
    assert!(
        out.status.success(),
        "flow.c does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "flow exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout.ends_with("flow: all checks passed\n"),
        "unexpected output:\n{stdout}"
    );
    assert!(stdout.matches("ok: ").count() >= 30, "{stdout}");
}
