//! `devmmu pt` as a user runs it: decode checked against entries worked out by hand from the
//! specs (not produced by the code under test), walk and dump over a table built from a
//! description file, and bad input refused in one line with exit status 2.

mod common;
use common::*;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_devmmu");

fn devmmu(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = devmmu(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert_eq!(stderr, "");
    String::from_utf8(out.stdout).unwrap()
}

/// The value column and meaning of field `name` in decode output.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim_start()[name.len()..]
        .trim()
}

#[test]
fn decode_matches_hand_worked_arm_lpae_entries() {
    // An L3 page, read-write for the device, not executable, normal non-cacheable, as
    // io-pgtable-arm.c's arm_lpae_prot_to_pte writes IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC
    // (Arm ARM DDI 0487 D8.3):
    //   [1:0]   0b11 page descriptor at L3                      0x003
    //   [4:2]   AttrIndx 0 (MAIR 0x44, normal non-cacheable)     0x000
    //   [7:6]   AP = 0b01: AP[1] unprivileged, AP[2] 0 writable  0x040
    //   [9:8]   SH = 0b10 outer shareable                        0x200
    //   [10]    AF                                               0x400
    //   [11]    nG                                               0x800
    //   [47:12] output address 0x40001000
    //   [53]    PXN, [54] UXN                                    0x0060_0000_0000_0000
    //   sum: 0x0060_0000_4000_1E43
    let out = ok(&[
        "pt",
        "decode",
        "--format",
        "arm-lpae-4k",
        "0x0060000040001E43",
    ]);
    assert!(
        out.starts_with("0x0060000040001e43  (arm-lpae-4k entry at level 3)"),
        "{out}"
    );
    assert!(
        field(&out, "decode").starts_with("4 KiB page at bus address 0x40001000"),
        "{out}"
    );
    assert!(field(&out, "type [1:0]").starts_with("0b11") && out.contains("page descriptor"));
    assert!(
        field(&out, "address [47:12]").starts_with("0x40001000"),
        "{out}"
    );
    let attr = field(&out, "AttrIndx [4:2]");
    assert!(attr.starts_with('0') && attr.contains("0x44") && attr.contains("non-cacheable"));
    let ap = field(&out, "AP [7:6]");
    assert!(ap.starts_with("0b01") && ap.contains("read/write") && ap.contains("unprivileged"));
    assert!(field(&out, "SH [9:8]").starts_with("0b10") && out.contains("outer shareable"));
    assert!(field(&out, "AF [10]").starts_with('1'));
    assert!(field(&out, "nG [11]").starts_with('1'));
    assert!(field(&out, "PXN [53]").starts_with('1'));
    assert!(field(&out, "UXN [54]").starts_with('1'));

    // An L2 block of 2 MiB at 0x80200000, read-only, cacheable, executable
    // (IOMMU_READ | IOMMU_CACHE):
    //   [1:0] 0b01 block 0x001, AttrIndx 1 (MAIR 0xff) 0x004, AP 0b11 read-only any EL 0x0C0,
    //   SH 0b11 inner shareable 0x300, AF 0x400, nG 0x800, no XN: 0xFC5 | 0x80200000.
    let out = ok(&[
        "pt",
        "decode",
        "--format",
        "arm-lpae-4k",
        "--level",
        "2",
        "0x80200FC5",
    ]);
    assert!(field(&out, "decode").starts_with("2 MiB block at bus address 0x80200000"));
    assert!(field(&out, "type [1:0]").starts_with("0b01"));
    let attr = field(&out, "AttrIndx [4:2]");
    assert!(attr.starts_with('1') && attr.contains("0xff") && attr.contains("write-back"));
    assert!(field(&out, "AP [7:6]").starts_with("0b11") && out.contains("read-only"));
    assert!(field(&out, "SH [9:8]").starts_with("0b11") && out.contains("inner shareable"));
    assert!(field(&out, "PXN [53]").starts_with('0') && field(&out, "UXN [54]").starts_with('0'));

    // A table descriptor at L1: 0b11 with the next table at 0x80001000; 0 is invalid.
    let out = ok(&[
        "pt",
        "decode",
        "--format",
        "arm-lpae-4k",
        "--level",
        "1",
        "0x80001003",
        "0",
    ]);
    assert!(
        out.contains("table: the level-2 table is at bus address 0x80001000"),
        "{out}"
    );
    assert!(out.contains("invalid: a walk faults here"), "{out}");
}

#[test]
fn decode_matches_hand_worked_ipu_entries() {
    // IPU: entry = bus address >> 12. 0x12345 is the page at 0x12345000; given the dummy page
    // at 0x12345000 it is that page, and 0x40001 (0x40001000) is not.
    let out = ok(&[
        "pt",
        "decode",
        "--format",
        "ipu",
        "--dummy-page",
        "0x12345000",
        "0x12345",
        "0x40001",
    ]);
    let mut entries = out.split("(ipu entry at level 1)");
    let _ = entries.next();
    let first = entries.next().unwrap();
    assert!(
        field(first, "page number [31:0]").starts_with("0x12345"),
        "{out}"
    );
    assert!(first.contains("page at bus address 0x12345000"), "{out}");
    assert!(field(first, "dummy page").starts_with("yes"), "{out}");
    let second = entries.next().unwrap();
    assert!(second.contains("page at bus address 0x40001000"), "{out}");
    assert!(field(second, "dummy page").starts_with("no"), "{out}");
    // At L1 (level 0) an entry always points at a table.
    let out = ok(&["pt", "decode", "--format", "ipu", "--level", "0", "0x80003"]);
    assert!(
        out.contains("the level-1 table is at bus address 0x80003000"),
        "{out}"
    );
}

const MAP: &str = r#"# a 2-page buffer and a 2 MiB block
{"iova": "0x200000", "size": "0x2000", "paddr": "0x40000000", "prot": "rw"}
{"iova": 1073741824, "size": "0x200000", "paddr": "0x80200000", "prot": "rxc"}
"#;

#[test]
fn walk_shows_every_level_down_to_the_address_or_the_fault() {
    let s = Scratch::new("pt-walk");
    let map = s.write("map.jsonl", MAP.as_bytes());
    let map = map.to_str().unwrap();
    // 0x201234: L0 index 0, L1 index 0, L2 index 1 (0x201234 >> 21), L3 index 1 (bits 20:12).
    let out = ok(&[
        "pt",
        "walk",
        "--format",
        "arm-lpae-4k",
        "--map",
        map,
        "--iova",
        "0x201234",
    ]);
    let levels: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with('L'))
        .collect();
    assert_eq!(levels.len(), 4, "{out}");
    assert!(levels[2].trim_start().starts_with("L2 index    1"), "{out}");
    assert!(levels[3].trim_start().starts_with("L3 index    1"), "{out}");
    assert!(levels[3].contains("4 KiB page -> 0x40001000"), "{out}");
    assert!(out.contains("-> output address 0x40001234"), "{out}");
    // The block: L1 index 1, L2 index 0 is a 2 MiB block; offset 0x12345.
    let out = ok(&[
        "pt",
        "walk",
        "--format",
        "arm-lpae-4k",
        "--map",
        map,
        "--iova",
        "0x40012345",
    ]);
    assert!(out.contains("2 MiB block -> 0x80200000"), "{out}");
    assert!(out.contains("-> output address 0x80212345"), "{out}");
    // Unmapped: the L3 entry at index 256 is invalid.
    let out = ok(&[
        "pt",
        "walk",
        "--format",
        "arm-lpae-4k",
        "--map",
        map,
        "--iova",
        "0x300000",
    ]);
    assert!(
        out.contains("L3 index  256") && out.contains("invalid"),
        "{out}"
    );
    assert!(
        out.contains("-> fault: translation fault at level 3"),
        "{out}"
    );
    // IPU: L1 index 0 (0x201234 >> 22), L2 index 513 (bits 21:12); unmapped is the dummy page.
    let out = ok(&[
        "pt", "walk", "--format", "ipu", "--map", map, "--iova", "0x201234",
    ]);
    assert!(
        out.contains("L1 index  513") && out.contains("= 0x00040001"),
        "{out}"
    );
    assert!(out.contains("-> output address 0x40001234"), "{out}");
    let out = ok(&[
        "pt", "walk", "--format", "ipu", "--map", map, "--iova", "0x300000",
    ]);
    assert!(
        out.contains("(the dummy page)") && out.contains("not mapped"),
        "{out}"
    );
}

#[test]
fn dump_prints_every_table_with_its_non_empty_entries() {
    let s = Scratch::new("pt-dump");
    let map = s.write("map.jsonl", MAP.as_bytes());
    let out = ok(&[
        "pt",
        "dump",
        "--format",
        "arm-lpae-4k",
        "--map",
        map.to_str().unwrap(),
    ]);
    // Root, L1, two L2 tables, one L3 table.
    assert_eq!(out.matches("\ntable at ").count(), 5, "{out}");
    assert!(
        out.contains("0x0060000040000e43  iova 0x200000: 4 KiB -> 0x40000000"),
        "{out}"
    );
    assert!(
        out.contains("0x0000000080200fc5  iova 0x40000000: 2 MiB -> 0x80200000"),
        "{out}"
    );
    let out = ok(&[
        "pt",
        "dump",
        "--format",
        "ipu",
        "--map",
        map.to_str().unwrap(),
    ]);
    // 2 + 512 pages, no dummy entries.
    assert_eq!(out.matches(": 4 KiB -> ").count(), 2 + 512, "{out}");
    assert!(out.contains("dummy page 0x"), "{out}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let s = Scratch::new("pt-bad");
    let dup = s.write(
        "dup.jsonl",
        b"{\"iova\":4096,\"size\":4096,\"paddr\":0}\n{\"iova\":4096,\"size\":4096,\"paddr\":0}\n",
    );
    let junk = s.write(
        "junk.jsonl",
        b"{\"iova\": \"zz\", \"size\": 1, \"paddr\": 0}\n",
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["pt", "decode", "--format", "ipu", "0x100000000"],
            "32 bits",
        ),
        (
            vec!["pt", "decode", "--format", "ipu", "--level", "2", "1"],
            "levels 0..=1",
        ),
        (
            vec!["pt", "decode", "--format", "ipu", "zz"],
            "not a number",
        ),
        (
            vec![
                "pt",
                "dump",
                "--format",
                "ipu",
                "--map",
                dup.to_str().unwrap(),
            ],
            "dup.jsonl:2: map refused",
        ),
        (
            vec![
                "pt",
                "dump",
                "--format",
                "ipu",
                "--map",
                junk.to_str().unwrap(),
            ],
            "junk.jsonl:1: iova",
        ),
        (
            vec!["pt", "dump", "--format", "ipu", "--map", "/nonexistent"],
            "cannot read",
        ),
    ];
    for (args, words) in cases {
        let out = devmmu(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.matches('\n').count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}
