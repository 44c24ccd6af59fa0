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

/// Decode output of `value` at `level` in `format`.
fn decode(format: &str, level: &str, value: &str) -> String {
    ok(&["pt", "decode", "--format", format, "--level", level, value])
}

/// Asserts that field `name` of `out` starts with `value` and mentions each of `words`.
fn check(out: &str, name: &str, value: &str, words: &[&str]) {
    let f = field(out, name);
    assert!(
        f.starts_with(value),
        "{name}: {f:?} should start with {value:?} in\n{out}"
    );
    for w in words {
        assert!(
            f.contains(w),
            "{name}: {f:?} should mention {w:?} in\n{out}"
        );
    }
}

#[test]
fn decode_matches_hand_worked_arm_16k_64k_and_stage_2_entries() {
    // ARM LPAE 16 KiB granule, L3 page, read-only, not executable, non-cacheable
    // (pagetable/tests/vectors_arm_16k_64k.rs "ro noexec"): type 0b11 0x3, AttrIndx 0,
    // AP_UNPRIV 0x40 | AP_RDONLY 0x80, SH_OS 0x200, AF 0x400, nG 0x800, PXN|UXN
    // 0x0060_0000_0000_0000, address [47:14] 0x8_1234_4000: 0x0060_0008_1234_4ec3.
    let out = decode("arm-lpae-16k", "3", "0x0060000812344ec3");
    assert!(
        out.starts_with("0x0060000812344ec3  (arm-lpae-16k entry at level 3)"),
        "{out}"
    );
    check(
        &out,
        "decode",
        "16 KiB page at bus address 0x812344000",
        &[],
    );
    check(&out, "type [1:0]", "0b11", &["page descriptor"]);
    check(&out, "address [47:14]", "0x812344000", &["output address"]);
    check(&out, "AttrIndx [4:2]", "0", &["non-cacheable"]);
    check(&out, "AP [7:6]", "0b11", &["read-only, any privilege"]);
    check(&out, "SH [9:8]", "0b10", &["outer shareable"]);
    check(&out, "AF [10]", "1", &[]);
    check(&out, "nG [11]", "1", &[]);
    check(&out, "PXN [53]", "1", &[]);
    check(&out, "UXN [54]", "1", &[]);
    // A 32 MiB block at L2: type 0b01, address 0x8_1200_0000 (0x409 x 32 MiB), cacheable
    // read/write executable: 0x1 | AttrIndx 1 0x4 | 0x40 | SH_IS 0x300 | 0xc00 = 0xf45.
    let out = decode("arm-lpae-16k", "2", "0x812000f45");
    check(
        &out,
        "decode",
        "32 MiB block at bus address 0x812000000",
        &[],
    );
    check(&out, "type [1:0]", "0b01", &["block descriptor"]);
    check(&out, "AttrIndx [4:2]", "1", &["write-back"]);
    // A block at L1 is reserved with the 16 KiB granule (no 64 GiB blocks without LPA2).
    let out = decode("arm-lpae-16k", "1", "0x812000f45");
    check(&out, "decode", "invalid", &[]);
    check(&out, "type [1:0]", "0b01", &["reserved"]);

    // 64 KiB granule: our level 2 is the Arm lookup level 3. A page at 0x8_1234_0000
    // ([47:16]), read/write cacheable not executable: 0x3 | 0x4 | 0x40 | 0x300 | 0xc00 = 0xf47,
    // | PXN|UXN: 0x0060_0008_1234_0f47; bits [15:12] (OA[51:48]) are 0.
    let out = decode("arm-lpae-64k", "2", "0x0060000812340f47");
    check(
        &out,
        "decode",
        "64 KiB page at bus address 0x812340000",
        &[],
    );
    check(
        &out,
        "type [1:0]",
        "0b11",
        &["page descriptor", "Arm lookup level 3"],
    );
    check(&out, "address [47:16]", "0x812340000", &[]);
    check(&out, "OA[51:48] [15:12]", "0x0", &[]);
    check(&out, "AP [7:6]", "0b01", &["read/write", "unprivileged"]);
    check(&out, "SH [9:8]", "0b11", &["inner shareable"]);
    // OA[51:48] = 1 in bits [15:12] (0x1000): a 52-bit address this format does not take.
    let out = decode("arm-lpae-64k", "2", "0x0060000812341f47");
    check(&out, "OA[51:48] [15:12]", "0x1", &["address-size fault"]);

    // Stage 2 (vectors_arm_lpae_s2.rs): an L3 page at 0x8_1234_5000, read/write cacheable
    // executable: 0x3 | MemAttr OIWB 0xf << 2 = 0x3c | S2AP R 0x40 | W 0x80 | SH_IS 0x300 |
    // AF 0x400 = 0x7ff.
    let out = decode("arm-lpae-s2", "3", "0x8123457ff");
    check(&out, "decode", "4 KiB page at bus address 0x812345000", &[]);
    check(&out, "address [47:12]", "0x812345000", &[]);
    check(
        &out,
        "MemAttr [5:2]",
        "0b1111",
        &["normal memory, outer write-back, inner write-back"],
    );
    check(&out, "S2AP [7:6]", "0b11", &["read/write"]);
    check(&out, "SH [9:8]", "0b11", &["inner shareable"]);
    check(&out, "AF [10]", "1", &[]);
    check(&out, "XN [54:53]", "0b00", &["executable"]);
    // Read-only non-cacheable not executable: 0x3 | NC 0x5 << 2 = 0x14 | R 0x40 | SH_OS 0x200
    // | AF 0x400 = 0x657, | XN 3 << 53 = 0x0060_0000_0000_0000.
    let out = decode("arm-lpae-s2-4k", "3", "0x0060000812345657");
    check(
        &out,
        "MemAttr [5:2]",
        "0b0101",
        &["outer non-cacheable, inner non-cacheable"],
    );
    check(&out, "S2AP [7:6]", "0b01", &["read-only"]);
    check(&out, "SH [9:8]", "0b10", &["outer shareable"]);
    check(&out, "XN [54:53]", "0b11", &["execute-never"]);
    // Device-nGnRE (MemAttr 0b0001 = 0x4), write-only (S2AP 0b10 = 0x80): 0x3 | 0x4 | 0x80 |
    // 0x200 | 0x400 = 0x687.
    let out = decode("arm-lpae-s2", "3", "0x812345687");
    check(&out, "MemAttr [5:2]", "0b0001", &["device-nGnRE"]);
    check(&out, "S2AP [7:6]", "0b10", &["write-only"]);
}

#[test]
fn decode_matches_hand_worked_arm_v7s_entries() {
    // Small page (vectors_arm_v7s.rs, rw cacheable executable 0xc7e) at 0x8765_4000:
    // attribute block 0xc7 at [11:4] = AF 0x1, AP[1] 0x2, TEX 0b001 at 0x4, S 0x40, nG 0x80;
    // B and C (0xc); type 0b10; XN (bit 0) clear.
    let out = decode("arm-v7s", "1", "0x87654c7e");
    assert!(
        out.starts_with("0x87654c7e  (arm-v7s entry at level 1)"),
        "{out}"
    );
    check(&out, "decode", "4 KiB page at bus address 0x87654000", &[]);
    check(&out, "type [1:0]", "0b10", &["small page"]);
    check(&out, "address [31:12]", "0x87654000", &[]);
    check(&out, "XN [0]", "0", &[]);
    check(&out, "B [2]", "1", &[]);
    check(&out, "C [3]", "1", &[]);
    check(&out, "AF (AP[0]) [4]", "1", &[]);
    check(
        &out,
        "AP[2:1] [9,5]",
        "0b01",
        &["read/write, any privilege"],
    );
    check(&out, "TEX [8:6]", "0b001", &[]);
    // TEX[0] = 1, C = 1, B = 1: remap index 7, the normal write-back region of NMRR.
    check(
        &out,
        "TEX[0]:C:B",
        "0b111",
        &["remap index 7", "write-back"],
    );
    check(&out, "S [10]", "1", &[]);
    check(&out, "nG [11]", "1", &[]);
    // Section, read-only not executable non-cacheable (0x3_9c12) at 0x8760_0000: attribute
    // block 0xe7 at [17:10] (AF, AP[1], TEX 0b001, AP[2] 0x20, S, nG), XN bit 4, type 0b10.
    let out = decode("arm-v7s", "0", "0x87639c12");
    check(&out, "decode", "1 MiB block at bus address 0x87600000", &[]);
    check(&out, "type [1:0]", "0b10", &["section"]);
    check(&out, "address [31:20]", "0x87600000", &[]);
    check(&out, "XN [4]", "1", &[]);
    check(&out, "B [2]", "0", &[]);
    check(&out, "C [3]", "0", &[]);
    check(&out, "AF (AP[0]) [10]", "1", &[]);
    check(
        &out,
        "AP[2:1] [15,11]",
        "0b11",
        &["read-only, any privilege"],
    );
    check(&out, "TEX [14:12]", "0b001", &[]);
    check(
        &out,
        "TEX[0]:C:B",
        "0b100",
        &["remap index 4", "non-cacheable"],
    );
    check(&out, "S [16]", "1", &[]);
    check(&out, "nG [17]", "1", &[]);
    check(&out, "supersection [18]", "0", &[]);
    // MMIO small page (0xc36): TEX 0, B: remap index 1, device.
    let out = decode("arm-v7s", "1", "0x87654c36");
    check(&out, "TEX[0]:C:B", "0b001", &["device"]);
    // L1 table entry: L2 table address [31:10] | 0b01.
    let out = decode("arm-v7s", "0", "0x10000401");
    check(&out, "type [1:0]", "0b01", &["page table"]);
    check(&out, "address [31:10]", "0x10000400", &["L2 table"]);
}

#[test]
fn decode_matches_hand_worked_dart_entries() {
    // DART1 (vectors_apple_dart.rs): SP_DIS 0x2 | valid 0x1, subpage end 0xfff << 40
    // (0x000f_ff00_0000_0000), address 0x8_1234_4000 in place: read/write.
    let out = decode("dart1", "1", "0x000fff0812344003");
    check(
        &out,
        "decode",
        "16 KiB page at bus address 0x812344000",
        &[],
    );
    check(&out, "valid [0]", "1", &[]);
    check(&out, "address [35:12]", "0x812344000", &[]);
    check(&out, "SP_DIS [1]", "1", &[]);
    check(&out, "NO_WRITE [7]", "0", &[]);
    check(&out, "NO_READ [8]", "0", &[]);
    check(&out, "subpage start [63:52]", "0x0", &[]);
    check(&out, "subpage end [51:40]", "0xfff", &[]);
    // + NO_WRITE 0x80: read-only. The crate's name is accepted; the output names the format
    // as `--format` spells it.
    let out = decode("apple-dart1", "1", "0x000fff0812344083");
    assert!(
        out.starts_with("0x000fff0812344083  (dart1 entry at level 1)"),
        "{out}"
    );
    check(&out, "NO_WRITE [7]", "1", &[]);
    // One column of values, however long a label ("subpage start [63:52]" is 21 characters).
    let value_column = |name: &str| {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap();
        let after = line.find(name).unwrap() + name.len();
        after + line[after..].len() - line[after..].trim_start().len()
    };
    assert_eq!(
        value_column("valid [0]"),
        value_column("subpage start [63:52]"),
        "{out}"
    );
    check(
        &out,
        "decode",
        "16 KiB page at bus address 0x812344000, access r",
        &[],
    );
    // L1 entry: the L2 table at 0x2001_0000 | valid.
    let out = decode("dart1", "0", "0x20010001");
    check(&out, "address [35:12]", "0x20010000", &["level-1 table"]);
    // DART2: 0x3_8765_4000 >> 4 = 0x3876_5400 in [37:10], NO_CACHE 0x2 | valid 0x1.
    let out = decode("dart2", "1", "0x000fff0038765403");
    check(
        &out,
        "decode",
        "16 KiB page at bus address 0x387654000",
        &[],
    );
    check(&out, "address [37:10]", "0x38765400", &["0x387654000"]);
    check(&out, "NO_CACHE [1]", "1", &[]);
    check(&out, "NO_WRITE [2]", "0", &[]);
    check(&out, "NO_READ [3]", "0", &[]);
    // Valid clear: nothing else is read.
    let out = decode("dart2", "1", "0x000fff0038765402");
    check(&out, "valid [0]", "0", &["invalid"]);
    assert!(!out.contains("NO_CACHE"), "{out}");
}

#[test]
fn decode_matches_hand_worked_riscv_vtd_and_amd_entries() {
    // RISC-V Sv39 (vectors_riscv.rs): V R W X U A D = 0xdf, PPN 0x8_1234_5000 >> 12 =
    // 0x81_2345 << 10 = 0x2_048d_1400.
    let out = decode("riscv-sv39", "2", "0x2048d14df");
    check(&out, "decode", "4 KiB page at bus address 0x812345000", &[]);
    for (name, v) in [
        ("V [0]", "1"),
        ("R [1]", "1"),
        ("W [2]", "1"),
        ("X [3]", "1"),
        ("U [4]", "1"),
        ("G [5]", "0"),
        ("A [6]", "1"),
        ("D [7]", "1"),
        ("N [63]", "0"),
    ] {
        check(&out, name, v, &[]);
    }
    check(&out, "PPN [53:10]", "0x812345", &["0x812345000"]);
    check(&out, "PBMT [62:61]", "0", &["PMA"]);
    // PBMT = 2 (IO): 2 << 61 = 0x4000_0000_0000_0000 added.
    let out = decode("riscv-sv39", "2", "0x40000002048d14df");
    check(&out, "PBMT [62:61]", "2", &["IO"]);
    // A pointer: V and PPN 0x1_0001 (table 0x1000_1000): 0x400_0401.
    let out = decode("riscv-sv39", "0", "0x4000401");
    check(&out, "R/W/X", "", &["pointer to the next-level table"]);
    check(&out, "PPN [53:10]", "0x10001", &["0x10001000"]);
    // Sv48: a 2 MiB leaf at 0x8_0020_0000 (>> 12 << 10 = 0x2_0008_0000) at level 2.
    let out = decode("riscv-sv48", "2", "0x2000800df");
    check(
        &out,
        "decode",
        "2 MiB block at bus address 0x800200000",
        &[],
    );

    // VT-d SS (vectors_vtd_ss.rs): SL-PTE R | W at 0x8_1234_5000.
    let out = decode("vtd-ss", "3", "0x812345003");
    check(&out, "decode", "4 KiB page at bus address 0x812345000", &[]);
    check(&out, "R [0]", "1", &[]);
    check(&out, "W [1]", "1", &[]);
    check(&out, "X [2]", "0", &[]);
    check(&out, "EMT [5:3]", "0", &["UC"]);
    check(&out, "IPAT [6]", "0", &[]);
    check(&out, "type", "", &["SL-PTE", "4 KiB page"]);
    check(&out, "address [51:12]", "0x812345000", &["output address"]);
    // EMT 6 (WB, 6 << 3 = 0x30) and IPAT (0x40) added: 0x8_1234_5073.
    let out = decode("vtd-ss", "3", "0x812345073");
    check(&out, "EMT [5:3]", "6", &["WB"]);
    check(&out, "IPAT [6]", "1", &[]);
    // A 2 MiB write-only SL-PDE: PS 0x80 | W 0x2 at 0x8_0020_0000.
    let out = decode("vtd-ss", "2", "0x800200082");
    check(
        &out,
        "decode",
        "2 MiB block at bus address 0x800200000, access -w",
        &[],
    );
    check(&out, "R [0]", "0", &[]);
    check(&out, "PS [7]", "1", &["SL-PDE", "2 MiB page"]);

    // AMD v1 (vectors_amd_v1.rs): a PTE, PR | IR 1 << 61 | IW 1 << 62 at 0x8_1234_5000.
    let out = decode("amd-v1", "3", "0x6000000812345001");
    check(&out, "decode", "4 KiB page at bus address 0x812345000", &[]);
    check(&out, "PR [0]", "1", &[]);
    check(&out, "Next Level [11:9]", "0", &["4 KiB page"]);
    check(&out, "address [51:12]", "0x812345000", &[]);
    check(&out, "FC [60]", "0", &[]);
    check(&out, "IR [61]", "1", &[]);
    check(&out, "IW [62]", "1", &[]);
    // A PDE from the root: NextLevel 3 (0x600), table 0x1000_1000, IR | IW.
    let out = decode("amd-v1", "0", "0x6000000010001601");
    check(&out, "Next Level [11:9]", "3", &["AMD level-3 table"]);
    check(&out, "address [51:12]", "0x10001000", &["next-level table"]);
    // A level skip (NextLevel 1 from the root, 0x200): not supported, invalid.
    let out = decode("amd-v1", "0", "0x6000000010001201");
    check(&out, "decode", "invalid", &[]);
    check(&out, "Next Level [11:9]", "1", &["not supported"]);
}

/// The walk's line for `level` (`  L2 index ...`).
fn level_line(out: &str, level: usize) -> &str {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("L{level} index")))
        .unwrap_or_else(|| panic!("no L{level} in {out}"))
}

#[test]
fn walk_and_dump_of_large_tables() {
    let s = Scratch::new("pt-large");
    // ARM LPAE 16 KiB: the root (2 entries) is a 4 KiB page at 0x80000000; the L1, L2 and L3
    // tables are 16 KiB each, at the next 16 KiB boundaries: 0x80004000, 0x80008000,
    // 0x8000c000. IOVA 0x200_d234: L2 index [35:25] = 1, L3 index [24:14] = 3, offset 0x1234.
    let m16 = s.write(
        "16k.jsonl",
        br#"{"iova": "0x200c000", "size": "0x4000", "paddr": "0x40000000", "prot": "rw"}"#,
    );
    let out = ok(&[
        "pt",
        "walk",
        "--format",
        "arm-lpae-16k",
        "--map",
        m16.to_str().unwrap(),
        "--iova",
        "0x200d234",
    ]);
    assert!(
        level_line(&out, 1).contains("entry at 0x80004000 = 0x0000000080008003"),
        "{out}"
    );
    assert!(
        level_line(&out, 2).contains("entry at 0x80008008 = 0x000000008000c003"),
        "{out}"
    );
    // rw, not executable, non-cacheable: 0x3 | 0x40 | 0x200 | 0xc00 | XN = 0x0060_..._0e43.
    assert!(
        level_line(&out, 3).contains("entry at 0x8000c018 = 0x0060000040000e43  16 KiB page"),
        "{out}"
    );
    assert!(
        out.contains("-> output address 0x40001234 (16 KiB page"),
        "{out}"
    );

    // ARM LPAE 64 KiB: root (64 entries) a 4 KiB page at 0x80000000, L1 (Arm L2) and L2
    // (Arm L3) 64 KiB tables at 0x80010000 and 0x80020000. A page at IOVA 0x2003_0000
    // (indices 0, 1, 3) and a 512 MiB block at 0x4000_0000 (level-1 index 2).
    let m64 = s.write(
        "64k.jsonl",
        br#"{"iova": "0x20030000", "size": "0x10000", "paddr": "0x50000000", "prot": "rwc"}
{"iova": "0x40000000", "size": "0x20000000", "paddr": "0x60000000", "prot": "rx"}
"#,
    );
    let m64 = m64.to_str().unwrap();
    let out = ok(&[
        "pt",
        "walk",
        "--format",
        "arm-lpae-64k",
        "--map",
        m64,
        "--iova",
        "0x2003abcd",
    ]);
    // rwc: 0x3 | AttrIndx 1 0x4 | 0x40 | SH_IS 0x300 | 0xc00 | XN: 0x0060_0000_5000_0f47.
    assert!(
        level_line(&out, 2).contains("entry at 0x80020018 = 0x0060000050000f47  64 KiB page"),
        "{out}"
    );
    assert!(
        out.contains("-> output address 0x5000abcd (64 KiB page"),
        "{out}"
    );
    let out = ok(&[
        "pt",
        "walk",
        "--format",
        "arm-lpae-64k",
        "--map",
        m64,
        "--iova",
        "0x41234567",
    ]);
    // rx: 0x1 | RDONLY 0x80 | 0x40 | SH_OS 0x200 | 0xc00 = 0xec1, executable.
    assert!(
        level_line(&out, 1).contains("entry at 0x80010010 = 0x0000000060000ec1  512 MiB block"),
        "{out}"
    );
    assert!(
        out.contains("-> output address 0x61234567 (512 MiB block"),
        "{out}"
    );
    let out = ok(&["pt", "dump", "--format", "arm-lpae-64k", "--map", m64]);
    for t in [
        "0x80000000 (level 0",
        "0x80010000 (level 1",
        "0x80020000 (level 2",
    ] {
        assert!(out.contains(&format!("table at {t}")), "{out}");
    }

    // ARMv7s: the 16 KiB L1 table is the first allocation, at 0x80000000; the L2 table a
    // 4 KiB page after it, at 0x80004000. IOVA 0x1234_5678: L1 index 0x123 (entry at
    // 0x80000000 + 0x123 x 4 = 0x8000048c), L2 index 0x45 (at 0x80004000 + 0x45 x 4 =
    // 0x80004114). rwc, not executable: block 0xc7 << 4 | XN 0x1 | B|C 0xc | 0x2 = 0xc7f.
    let v7 = s.write(
        "v7s.jsonl",
        br#"{"iova": "0x12345000", "size": "0x1000", "paddr": "0x87654000", "prot": "rwc"}
{"iova": "0x100000", "size": "0x100000", "paddr": "0x87600000", "prot": "r"}
"#,
    );
    let v7 = v7.to_str().unwrap();
    let out = ok(&[
        "pt",
        "walk",
        "--format",
        "arm-v7s",
        "--map",
        v7,
        "--iova",
        "0x12345678",
    ]);
    assert!(
        level_line(&out, 0).contains("entry at 0x8000048c = 0x80004001  table"),
        "{out}"
    );
    assert!(
        level_line(&out, 1).contains("entry at 0x80004114 = 0x87654c7f  4 KiB page"),
        "{out}"
    );
    assert!(
        out.contains("-> output address 0x87654678 (4 KiB page"),
        "{out}"
    );
    // The section, L1 index 1 (at 0x80000004): "r" = block 0xe7 << 10 | XN 0x10 | 0x2 =
    // 0x3_9c12, | 0x8760_0000.
    let out = ok(&[
        "pt", "walk", "--format", "arm-v7s", "--map", v7, "--iova", "0x123456",
    ]);
    assert!(
        level_line(&out, 0).contains("entry at 0x80000004 = 0x87639c12  1 MiB block"),
        "{out}"
    );
    assert!(
        out.contains("-> output address 0x87623456 (1 MiB block"),
        "{out}"
    );
    let out = ok(&["pt", "dump", "--format", "arm-v7s", "--map", v7]);
    assert!(out.contains("table at 0x80000000 (level 0"), "{out}");
    assert!(out.contains("table at 0x80004000 (level 1"), "{out}");
}

#[test]
fn format_names_are_checked_by_clap_and_32_bit_values_by_range() {
    let out = devmmu(&["pt", "decode", "--format", "bogus", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches('\n').count(), 1, "{stderr}");
    assert!(
        stderr.contains("invalid value 'bogus' for '--format <FORMAT>'"),
        "{stderr}"
    );
    for name in [
        "arm-lpae-16k",
        "arm-v7s",
        "dart1",
        "riscv-sv48",
        "vtd-ss",
        "amd-v1",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
    assert!(out.stdout.is_empty());
    // ARMv7s entries are 32 bits: 2^32 is refused in one line.
    let out = devmmu(&["pt", "decode", "--format", "arm-v7s", "0x100000000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "devmmu pt: 0x100000000: arm-v7s entries are 32 bits\n"
    );
    assert!(out.stdout.is_empty());
    // The help lists every format with the kernel file it follows.
    let help = ok(&["pt", "decode", "--help"]);
    for words in [
        "arm-lpae-64k",
        "io-pgtable-arm-v7s.c",
        "io-pgtable-dart.c",
        "generic_pt/fmt/riscv.h",
        "generic_pt/fmt/vtdss.h",
        "generic_pt/fmt/amdv1.h",
        "ipu6-mmu.c",
    ] {
        assert!(help.contains(words), "{help}");
    }
}

/// `walk --trace`: a camera run's trace is replayed and the table rebuilt from the VM's leaves;
/// each walk ends at the bus address the recorded run's own device table held for that IOVA
/// (its `--dump-pt` lines), for both device formats; a format no device has is refused.
#[test]
fn walk_of_a_table_rebuilt_from_a_recorded_trace() {
    let s = Scratch::new("pt-trace");
    for mmu in ["ipu", "arm-lpae-4k"] {
        let trace = s.path(&format!("{mmu}.jsonl"));
        let dump = ok(&[
            "camera",
            "--frames",
            "1",
            "--mmu",
            mmu,
            "--dump-pt",
            "--trace",
            trace.to_str().unwrap(),
        ]);
        // `  va 0x00001000-0x00153000  dma 0x00ffe00000-0x00fff52000  ...`: every run.
        let runs: Vec<(u64, u64, u64)> = dump
            .lines()
            .filter_map(|l| {
                let l = l.trim_start().strip_prefix("va ")?;
                let mut w = l.split_whitespace();
                let (va, _, dma) = (w.next()?, w.next()?, w.next()?);
                let (v0, v1) = va.split_once('-')?;
                let d0 = dma.split_once('-')?.0;
                let n = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
                Some((n(v0), n(v1), n(d0)))
            })
            .collect();
        assert_eq!(runs.len(), 4, "the camera's ring of 4 BOs: {dump}");
        for (va0, va1, dma0) in runs {
            let iova = va0 + (va1 - va0) / 2 + 0x234;
            let want = dma0 + (iova - va0);
            let out = ok(&[
                "pt",
                "walk",
                "--format",
                mmu,
                "--trace",
                trace.to_str().unwrap(),
                "--iova",
                &format!("{iova:#x}"),
            ]);
            assert!(out.starts_with("table rebuilt from "), "{out}");
            assert!(
                out.contains(&format!("-> output address {want:#x} (")),
                "{mmu} IOVA {iova:#x}: want {want:#x}\n{out}"
            );
        }
    }
    let out = devmmu(&[
        "pt",
        "walk",
        "--format",
        "dart1",
        "--trace",
        s.path("ipu.jsonl").to_str().unwrap(),
        "--iova",
        "0x1000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ipu or arm-lpae-4k"), "{err}");
}
