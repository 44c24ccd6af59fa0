//! `devmmu pt`: page tables as a driver engineer reads them.
//!
//! - `decode`: every field of one IOPTE value (the format's own `decode`, plus its named bits);
//! - `walk`: a table built from a description file (or rebuilt from a camera trace's replayed
//!   binds, `--trace`), walked for one IOVA level by level, down to the output address or the
//!   fault;
//! - `dump`: the table pages of such a table, with their raw non-empty entries.
//!
//! The description file holds one JSON object per line, each a map operation:
//! `{"iova": "0x200000", "size": "0x2000", "paddr": "0x40000000", "prot": "rw"}` (numbers may be
//! JSON numbers or strings in hex with `0x` or decimal; `prot` letters `r` `w` `x` `c` `d` `p`
//! as devmmu prints a [`Prot`]: read, write, executable, cacheable, device memory, privileged;
//! without `x` the mapping is not executable). Blank lines and lines starting with `#` are
//! skipped. Table pages sit at bus addresses from [`arena::ARENA_BASE`] (2 GiB) up.
//!
//! Every format of `devmmu-pagetable` is accepted ([`format::PtFormat`]: `ipu`, `arm-lpae-4k`,
//! `arm-lpae-16k`, `arm-lpae-64k`, `arm-lpae-s2`, `arm-v7s`, `dart1`, `dart2`, `riscv-sv39`,
//! `riscv-sv48`, `vtd-ss`, `amd-v1`), not only those of the device registry.
//!
//! This module only reads and prints; it owns no device and no DMA mapping.

pub mod arena;
pub mod fields;
pub mod format;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use devmmu_mm::device::MmuFormat;
use devmmu_pagetable::{
    DmaAddr, Entry, Format, Gather, Iova, PageTable, PageTableConfig, Prot, PteWord, TableReader,
};

use arena::Arena;
use fields::Fields;
use format::{per_format, PtFormat};

/// Arguments of `devmmu pt`.
#[derive(Args, Debug, Clone)]
pub struct PtArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PtCommand,
}

/// The `devmmu pt` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum PtCommand {
    /// Print every field of IOPTE values.
    Decode {
        /// The page-table format.
        #[arg(long, value_enum)]
        format: PtFormat,
        /// The level the entries sit at (0 = root; default: the last level, where pages are).
        #[arg(long)]
        level: Option<usize>,
        /// The IPU dummy page's bus address, to say whether a page entry points at it.
        #[arg(long, value_name = "ADDR", value_parser = parse_u64)]
        dummy_page: Option<u64>,
        /// Entry values, hex (0x...) or decimal.
        #[arg(required = true, value_name = "VALUE", value_parser = parse_u64)]
        values: Vec<u64>,
    },
    /// Build a table from a description file (or a camera trace) and walk it for one IOVA.
    Walk {
        /// The page-table format.
        #[arg(long, value_enum)]
        format: PtFormat,
        /// The description file (JSON lines of map operations; see `devmmu pt --help`).
        #[arg(long, value_name = "FILE", required_unless_present = "trace")]
        map: Option<PathBuf>,
        /// Instead of a description file, a trace of `devmmu camera --trace FILE`: its BOs and
        /// binds are replayed (on the trace's DMA ops, with this format: `ipu` or
        /// `arm-lpae-4k`), and the table is built from the leaves the VM held right after the
        /// last bind (IOVA, bus address and leaf size as the device saw them; the table pages
        /// are this tool's own).
        #[arg(long, value_name = "FILE", conflicts_with = "map")]
        trace: Option<PathBuf>,
        /// The IOVA to translate, hex (0x...) or decimal.
        #[arg(long, value_parser = parse_u64)]
        iova: u64,
    },
    /// Build a table from a description file and print its table pages' non-empty entries.
    Dump {
        /// The page-table format.
        #[arg(long, value_enum)]
        format: PtFormat,
        /// The description file (JSON lines of map operations).
        #[arg(long, value_name = "FILE")]
        map: PathBuf,
    },
}

/// Why `devmmu pt` could not do what it was asked (always bad input: exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum PtError {
    /// The description file could not be read.
    #[error("{}: cannot read: {cause}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        cause: std::io::Error,
    },
    /// A line of the description file is not a map operation.
    #[error("{}:{line}: {detail}", .path.display())]
    Description {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The page table refused a map operation of the file.
    #[error("{}:{line}: map refused: {detail}", .path.display())]
    Map {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The page table's error.
        detail: String,
    },
    /// A value or level does not fit the format.
    #[error("{0}")]
    Value(String),
}

/// Parses `0x...` hex or decimal.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number (hex with 0x, or decimal)"))
}

/// `4 KiB`, `2 MiB`, `1 GiB`: a power-of-two size in words.
pub fn size_words(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// One map operation of a description file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapOp {
    /// First IOVA.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
    /// First bus address.
    pub paddr: u64,
    /// Protection.
    pub prot: Prot,
}

/// Parses a `prot` string of the letters `r w x c d p` (`-` ignored; without `x`, NOEXEC).
pub fn parse_prot(s: &str) -> Result<Prot, String> {
    let mut p = Prot::NOEXEC;
    for c in s.chars() {
        p = match c {
            'r' => p | Prot::READ,
            'w' => p | Prot::WRITE,
            'x' => p.without(Prot::NOEXEC),
            'c' => p | Prot::CACHE,
            'd' => p | Prot::MMIO,
            'p' => p | Prot::PRIV,
            '-' => p,
            other => {
                return Err(format!(
                    "prot '{s}': unknown letter '{other}' (r w x c d p)"
                ))
            }
        };
    }
    Ok(p)
}

/// Reads a description file.
pub fn read_description(path: &Path) -> Result<Vec<MapOp>, PtError> {
    let text = std::fs::read_to_string(path).map_err(|cause| PtError::Read {
        path: path.into(),
        cause,
    })?;
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |detail: String| PtError::Description {
            path: path.into(),
            line: i + 1,
            detail,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let num = |key: &str| -> Result<u64, PtError> {
            match v.get(key) {
                Some(serde_json::Value::Number(n)) => n
                    .as_u64()
                    .ok_or_else(|| bad(format!("{key}: not a non-negative integer"))),
                Some(serde_json::Value::String(s)) => {
                    parse_u64(s).map_err(|e| bad(format!("{key}: {e}")))
                }
                _ => Err(bad(format!("{key}: missing (a number or a hex string)"))),
            }
        };
        let prot = match v.get("prot") {
            None => Prot::RW_NOEXEC,
            Some(serde_json::Value::String(s)) => parse_prot(s).map_err(bad)?,
            Some(_) => return Err(bad("prot: not a string like \"rw\"".into())),
        };
        ops.push(MapOp {
            iova: num("iova")?,
            size: num("size")?,
            paddr: num("paddr")?,
            prot,
        });
    }
    Ok(ops)
}

/// A table of format `F` built from map operations.
pub struct Built<F: Format> {
    /// The table; its allocator is the [`Arena`].
    pub table: PageTable<F, Arena>,
}

/// Builds a table of format `F` from `ops` (TLB invalidations are no-ops: no device).
pub fn build<F: Format>(path: &Path, ops: &[MapOp]) -> Result<Built<F>, PtError> {
    let mut table = PageTable::<F, Arena>::new(Arena::default(), PageTableConfig::default())
        .map_err(|e| PtError::Value(format!("cannot create a table: {e}")))?;
    let mut gather = Gather::new();
    for (i, op) in ops.iter().enumerate() {
        table
            .map(
                Iova(op.iova),
                DmaAddr(op.paddr),
                op.size,
                op.prot,
                &mut gather,
            )
            .map_err(|e| PtError::Map {
                path: path.into(),
                line: i + 1,
                detail: e.to_string(),
            })?;
        table.iotlb_sync(&mut gather, |_, _| {});
    }
    Ok(Built { table })
}

/// `devmmu pt decode`: the lines to print.
pub fn decode_lines<F: Fields>(
    name: &str,
    level: Option<usize>,
    dummy: Option<u64>,
    values: &[u64],
) -> Result<String, PtError> {
    let level = level.unwrap_or(F::LEVELS - 1);
    if level >= F::LEVELS {
        return Err(PtError::Value(format!(
            "--level {level}: {} has levels 0..={}",
            name,
            F::LEVELS - 1
        )));
    }
    let bits = <F::Pte as PteWord>::BYTES * 8;
    let mut out = String::new();
    for &raw in values {
        if bits < 64 && raw >> bits != 0 {
            return Err(PtError::Value(format!(
                "{raw:#x}: {} entries are {bits} bits",
                name
            )));
        }
        let _ = writeln!(
            out,
            "{raw:#0w$x}  ({} entry at level {level})",
            name,
            w = bits / 4 + 2
        );
        let fields = fields::describe::<F>(level, raw, dummy.map(DmaAddr));
        // The label column as wide as the longest label (at least 20 characters).
        let w = fields.iter().map(|f| f.0.len()).max().unwrap_or(0).max(20);
        for (label, value, means) in fields {
            let _ = writeln!(out, "  {label:<w$} {value:<20} {means}");
        }
    }
    Ok(out)
}

/// `devmmu pt walk`: each level's index, entry and what it points at, then the result.
pub fn walk_lines<F: Format>(name: &str, built: &Built<F>, iova: u64) -> String {
    let pt = &built.table;
    let reader = pt.table_alloc();
    let bytes = <F::Pte as PteWord>::BYTES;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "walk of IOVA {iova:#x} through {name} tables, root {}:",
        pt.root()
    );
    let mut table = pt.root();
    for level in pt.start_level()..F::LEVELS {
        let index = F::index(level, iova);
        let at = DmaAddr(table.0 + (index * bytes) as u64);
        let Some(raw) = reader.read_pte(at, bytes) else {
            let _ = writeln!(
                out,
                "  L{level} index {index}: entry at {at} cannot be read"
            );
            break;
        };
        let means = match F::decode(level, <F::Pte as PteWord>::from_u64(raw)) {
            Entry::Invalid => "invalid".to_string(),
            Entry::Table(a) => {
                table = a;
                format!("table -> {a}")
            }
            Entry::Leaf(a, p) => {
                let kind = if level + 1 == F::LEVELS {
                    "page"
                } else {
                    "block"
                };
                let dummy = if pt.dummy_page() == Some(a) {
                    " (the dummy page)"
                } else {
                    ""
                };
                format!(
                    "{} {kind} -> {a} {p}{dummy}",
                    size_words(1 << F::level_shift(level))
                )
            }
        };
        let _ = writeln!(
            out,
            "  L{level} index {index:>4}  entry at {at} = {raw:#0w$x}  {means}",
            w = bytes * 2 + 2
        );
        if !matches!(
            F::decode(level, <F::Pte as PteWord>::from_u64(raw)),
            Entry::Table(_)
        ) {
            break;
        }
    }
    match devmmu_pagetable::walk::<F, _>(reader, pt.root(), Iova(iova)) {
        Ok(t) if pt.dummy_page().is_some_and(|d| t.dma.0 & !0xfff == d.0) => {
            let _ = writeln!(
                out,
                "  -> {} on the dummy page: not mapped (the device reads and writes the dummy page)",
                t.dma
            );
        }
        Ok(t) => {
            let _ = writeln!(
                out,
                "  -> output address {} ({} {}, access {})",
                t.dma,
                size_words(t.leaf_size),
                if t.level + 1 == F::LEVELS {
                    "page"
                } else {
                    "block"
                },
                t.prot
            );
        }
        Err(devmmu_pagetable::WalkFault::Translation { level, .. }) => {
            let _ = writeln!(out, "  -> fault: translation fault at level {level}");
        }
        Err(devmmu_pagetable::WalkFault::AddressSize { .. }) => {
            let _ = writeln!(
                out,
                "  -> fault: address-size fault (beyond the {}-bit IOVA space)",
                F::IOVA_BITS
            );
        }
        Err(devmmu_pagetable::WalkFault::WalkAbort { pte_addr, .. }) => {
            let _ = writeln!(out, "  -> fault: the entry at {pte_addr} cannot be read");
        }
    }
    out
}

/// `devmmu pt dump`: every table reachable from the root with its non-empty entries (entries
/// pointing at the IPU's dummy page, or at a table holding only such entries, are empty).
pub fn dump_lines<F: Format>(name: &str, built: &Built<F>) -> String {
    let pt = &built.table;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name} page table: root {}, {} live tables{}",
        pt.root(),
        pt.table_count(),
        pt.dummy_page()
            .map(|d| format!(", dummy page {d}"))
            .unwrap_or_default()
    );
    let mut memo = std::collections::HashMap::new();
    dump_table::<F>(pt, pt.root(), pt.start_level(), 0, &mut out, &mut memo);
    out
}

/// Appends the table at `table` (level `level`, first IOVA `base`) to `out` if it holds a
/// non-empty entry; returns whether it did. `memo` remembers empty tables (the IPU's dummy L2).
fn dump_table<F: Format>(
    pt: &PageTable<F, Arena>,
    table: DmaAddr,
    level: usize,
    base: u64,
    out: &mut String,
    memo: &mut std::collections::HashMap<u64, bool>,
) -> bool {
    if memo.get(&table.0) == Some(&false) {
        return false;
    }
    let reader = pt.table_alloc();
    let bytes = <F::Pte as PteWord>::BYTES;
    let mut body = String::new();
    // Child tables are printed after this table's entries.
    let mut children = String::new();
    let mut any = false;
    for index in 0..F::entries(level) {
        let at = DmaAddr(table.0 + (index * bytes) as u64);
        let Some(raw) = reader.read_pte(at, bytes) else {
            continue;
        };
        let iova = base + ((index as u64) << F::level_shift(level));
        let line = |m: String| {
            format!(
                "  [{index:>4}] {raw:#0w$x}  iova {iova:#x}: {m}\n",
                w = bytes * 2 + 2
            )
        };
        match F::decode(level, <F::Pte as PteWord>::from_u64(raw)) {
            Entry::Invalid => {}
            Entry::Leaf(a, _) if pt.dummy_page() == Some(a) => {}
            Entry::Leaf(a, p) => {
                any = true;
                body.push_str(&line(format!(
                    "{} -> {a} {p}",
                    size_words(1 << F::level_shift(level))
                )));
            }
            Entry::Table(next) => {
                if level + 1 < F::LEVELS
                    && dump_table::<F>(pt, next, level + 1, iova, &mut children, memo)
                {
                    any = true;
                    body.push_str(&line(format!("table -> {next}")));
                }
            }
        }
    }
    memo.insert(table.0, any);
    if any {
        let _ = writeln!(
            out,
            "table at {table} (level {level}, IOVA from {base:#x}):"
        );
        out.push_str(&body);
        out.push_str(&children);
    }
    any
}

/// The map operations of a table rebuilt from a camera trace: the trace's BOs and binds replayed
/// on a device of `format` (one of the device registry's formats) with the trace's DMA ops and
/// coherence, then each leaf the VM held after the last bind, mapped one leaf at a time (so the
/// rebuilt table has the same leaves: a 4 KiB page stays a page where a block would fit), and
/// the heading line that says so.
fn trace_ops(format: PtFormat, path: &Path) -> Result<(Vec<MapOp>, String), PtError> {
    use crate::camera::DmaArg;
    use crate::trace::{read_trace, replay, Event};
    let name = format.name();
    let mmu = MmuFormat::from_name(&name).ok_or_else(|| {
        PtError::Value(format!(
            "--trace replays the trace on a device, whose MMU is ipu or arm-lpae-4k, not {name}"
        ))
    })?;
    let events = read_trace(path).map_err(|e| PtError::Value(e.to_string()))?;
    let (dma, coherent) = events
        .iter()
        .find_map(|(_, e)| match e {
            // "vfio" (a guest run's) replays behind the simulated IOMMU.
            Event::Config { dma, coherent, .. } => Some((
                clap::ValueEnum::from_str(dma, false).unwrap_or(DmaArg::Iommu),
                *coherent,
            )),
            _ => None,
        })
        .unwrap_or((DmaArg::Iommu, false));
    let replayed =
        replay(path, &events, mmu, dma, coherent).map_err(|e| PtError::Value(e.to_string()))?;
    let Some((line, runs)) = replayed.bound else {
        return Err(PtError::Value(format!(
            "{}: the trace binds nothing",
            path.display()
        )));
    };
    let mut ops = Vec::new();
    for r in &runs {
        for off in (0..r.size).step_by(r.page_size as usize) {
            ops.push(MapOp {
                iova: r.iova.0 + off,
                size: r.page_size,
                paddr: r.dma.0 + off,
                prot: r.prot,
            });
        }
    }
    let head = format!(
        "table rebuilt from {}: the leaves of the replayed VM ({}) after line {line}, its last bind\n",
        path.display(),
        replayed.replayed
    );
    Ok((ops, head))
}

/// Runs `devmmu pt`, returning what to print on stdout.
pub fn run(args: &PtArgs) -> Result<String, PtError> {
    match &args.command {
        PtCommand::Decode {
            format,
            level,
            dummy_page,
            values,
        } => {
            per_format!(format, F => decode_lines::<F>(&format.name(), *level, *dummy_page, values))
        }
        PtCommand::Walk {
            format,
            map,
            trace,
            iova,
        } => {
            let (path, ops, head) = match (map, trace) {
                (Some(map), _) => (map, read_description(map)?, String::new()),
                (None, Some(trace)) => {
                    let (ops, head) = trace_ops(*format, trace)?;
                    (trace, ops, head)
                }
                (None, None) => return Err(PtError::Value("--map or --trace is needed".into())),
            };
            per_format!(format, F => Ok(head + &walk_lines(&format.name(), &build::<F>(path, &ops)?, *iova)))
        }
        PtCommand::Dump { format, map } => {
            let ops = read_description(map)?;
            per_format!(format, F => Ok(dump_lines(&format.name(), &build::<F>(map, &ops)?)))
        }
    }
}
