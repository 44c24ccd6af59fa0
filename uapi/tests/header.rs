//! The committed C header is what cbindgen generates from the crate now, and it compiles as
//! strict C11.
//!
//! Regenerate it after changing uapi/src/abi.rs or uapi/src/capi.rs with
//! `DEVMMU_BLESS=1 cargo test -p devmmu-uapi --test header`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("include/devmmu.h")
}

/// The header as cbindgen generates it from abi.rs and capi.rs, with uapi/cbindgen.toml.
fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/abi.rs"))
        .with_src(dir.join("src/capi.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen writes UTF-8")
}

#[test]
fn header_is_current() {
    let want = generate();
    let path = header_path();
    if std::env::var_os("DEVMMU_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write the header");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "{} is not what cbindgen generates from the crate (first difference at line {}:\n  \
             committed: {:?}\n  generated: {:?}).\nRegenerate it with\n  \
             DEVMMU_BLESS=1 cargo test -p devmmu-uapi --test header\nand commit the result.",
            path.display(),
            first + 1,
            have.lines().nth(first).unwrap_or("<end of file>"),
            want.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

/// The C compiler: `$CC`, else `cc`.
fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

fn compile_strict(src: &Path, extra: &[&str]) {
    let out = Command::new(cc())
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .args(extra)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(src)
        .output()
        .expect("run the C compiler (cc)");
    assert!(
        out.status.success(),
        "{} does not compile as strict C11:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_compiles_as_strict_c11() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("header-check");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("include_only.c");
    std::fs::write(
        &src,
        "#include <devmmu.h>\n#include <devmmu.h>\n\
         _Static_assert(sizeof(struct devmmu_vm_bind_op) == 40, \"op size\");\n\
         _Static_assert(sizeof(struct devmmu_prime_handle) == 12, \"prime size\");\n\
         _Static_assert(sizeof(struct devmmu_bo_create_image) == 80, \"image size\");\n\
         int main(void) { return (int)(DEVMMU_IOCTL_VM_BIND & 0); }\n",
    )
    .unwrap();
    compile_strict(&src, &[]);
}
