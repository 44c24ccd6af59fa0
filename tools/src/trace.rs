//! Trace record and replay: `devmmu camera --trace FILE` and `devmmu replay FILE`.
//!
//! A trace is JSON lines, one [`Event`] per line, in the order the driver did them: the run's
//! configuration, each BO allocated, each bind and unbind (with the IOVA it got), each CPU
//! access (a `DMA_BUF_IOCTL_SYNC`-style bracket: begin syncs for the CPU, end syncs for the
//! device, so these are the run's syncs), each device access, and the run's counters last.
//! Bytes are kept as a fill (one repeated byte) or base64; what the CPU read is kept as a
//! 64-bit FNV-1a digest.
//!
//! [`replay`] runs the same operations on a simulated machine of another configuration (MMU
//! format, system DMA ops, coherency), and checks that the CPU reads the same bytes and that the
//! device faults on the same accesses as in the recording.
//!
//! It owns the event format and the replay machine; the recording calls come from the scenario.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use devmmu_mm::bo::{Bo, BoFlags, CpuAccess};
use devmmu_mm::device::MmuFormat;
use devmmu_mm::vm::{MappedRun, Placement, Vm};
use devmmu_pagetable::Iova;
use serde::{Deserialize, Serialize};

use crate::camera::{CameraArgs, CameraError, DmaArg, PlatformArg};
use crate::pt::parse_prot;

/// Bytes as the trace keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Data {
    /// `len` copies of `fill`.
    Fill {
        /// The byte.
        fill: u8,
        /// How many.
        len: u64,
    },
    /// The bytes, base64 (standard alphabet, padded).
    Bytes {
        /// base64 text.
        base64: String,
    },
}

impl Data {
    /// `bytes` as a fill if they are all one byte, else base64.
    pub fn of(bytes: &[u8]) -> Data {
        match bytes.first() {
            Some(&b) if bytes.iter().all(|&x| x == b) => Data::Fill {
                fill: b,
                len: bytes.len() as u64,
            },
            _ => Data::Bytes {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }

    /// The bytes; `None` if the base64 is malformed or a fill is too long to hold.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Data::Fill { fill, len } if *len <= 1 << 32 => Some(vec![*fill; *len as usize]),
            Data::Fill { .. } => None,
            Data::Bytes { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .ok(),
        }
    }
}

/// 64-bit FNV-1a of `bytes` (the digest of what the CPU read).
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The counters a run ends with (as `devmmu camera --json` names them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// IOPTEs written.
    pub iopte_stores: u64,
    /// PTE cache lines cleaned.
    pub pte_lines_cleaned: u64,
    /// Device TLB invalidations.
    pub tlb_invalidations: u64,
    /// Table pages allocated.
    pub tables_allocated: u64,
    /// Bytes synced for the device.
    pub synced_bytes_for_device: u64,
    /// Bytes synced for the CPU.
    pub synced_bytes_for_cpu: u64,
    /// Bytes bounced through swiotlb.
    pub bounced_bytes: u64,
    /// Device faults.
    pub faults: u64,
}

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// The recorded run's configuration (first line).
    Config {
        /// MMU format name.
        mmu: String,
        /// `iommu` or `direct`.
        dma: String,
        /// Whether the device was coherent.
        coherent: bool,
    },
    /// BO number `bo` (counted from 0) allocated, `size` bytes.
    BoNew {
        /// The BO's number.
        bo: usize,
        /// Bytes.
        size: u64,
    },
    /// BO bytes `offset..offset + size` bound at `iova` with `prot` (as devmmu prints a Prot).
    Bind {
        /// The BO's number.
        bo: usize,
        /// Offset in the BO.
        offset: u64,
        /// Bytes.
        size: u64,
        /// Protection, e.g. `-w----`.
        prot: String,
        /// The IOVA the bind returned.
        iova: u64,
    },
    /// `size` bytes at `iova` unbound.
    Unbind {
        /// First IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
    },
    /// A CPU write bracket: begin (sync for the CPU), write `data` at `offset`, end (sync for
    /// the device).
    CpuWrite {
        /// The BO's number.
        bo: usize,
        /// Offset in the BO.
        offset: u64,
        /// What was written.
        data: Data,
    },
    /// A CPU read bracket: begin, read `len` bytes at `offset`, end; `digest` of what was read.
    CpuRead {
        /// The BO's number.
        bo: usize,
        /// Offset in the BO.
        offset: u64,
        /// Bytes read.
        len: u64,
        /// [`digest`] of the bytes read.
        digest: String,
    },
    /// The device wrote `data` at `iova`; `fault` if its MMU faulted.
    DeviceWrite {
        /// First IOVA.
        iova: u64,
        /// What the device wrote.
        data: Data,
        /// Whether the access faulted.
        fault: bool,
    },
    /// The recorded run's counters (last line).
    Counters(Counters),
}

/// Collects a run's events; [`Recorder::to_json_lines`] gives the file's text.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Vec<Event>,
}

impl Recorder {
    /// Appends an event.
    pub fn record(&mut self, e: Event) {
        self.events.push(e);
    }

    /// The events as JSON lines.
    pub fn to_json_lines(&self) -> String {
        let mut s = String::new();
        for e in &self.events {
            // serde_json cannot fail on these plain enums.
            s.push_str(&serde_json::to_string(e).unwrap_or_default());
            s.push('\n');
        }
        s
    }
}

/// Why a replay could not run (bad input: exit status 2) or failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace is unreadable or malformed (exit status 2).
    #[error("{}: {detail}", .path.display())]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// What is wrong, with the line number.
        detail: String,
    },
    /// The simulated machine refused an operation of the trace (exit status 1).
    #[error("{}:{line}: {error}", .path.display())]
    Operation {
        /// The trace file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// What failed.
        error: CameraError,
    },
}

/// The outcome of a replay.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The recorded run's configuration, as text.
    pub recorded: String,
    /// The replay's configuration, as text.
    pub replayed: String,
    /// The recorded counters, if the trace has them.
    pub recorded_counters: Option<Counters>,
    /// The replay's counters.
    pub counters: Counters,
    /// CPU reads and device accesses compared.
    pub compared: u64,
    /// Where the replay saw something else than the recording: `line N: ...`.
    pub differences: Vec<String>,
    /// The replayed VM's leaves right after the trace's last bind (`--dump-pt`'s runs), with
    /// that event's line number; `None` for a trace without a bind. What `devmmu pt walk
    /// --trace` walks.
    pub bound: Option<(usize, Vec<MappedRun>)>,
}

/// Arguments of `devmmu replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The trace (from `devmmu camera --trace FILE`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The MMU format to replay on.
    #[arg(long, default_value = MmuFormat::Ipu.name(), value_parser = crate::camera::mmu_format_parser())]
    pub mmu: MmuFormat,
    /// The system DMA ops to replay with.
    #[arg(long, value_enum, default_value_t = DmaArg::Iommu)]
    pub dma: DmaArg,
    /// Replay on a cache-coherent device.
    #[arg(long)]
    pub coherent: bool,
}

/// Reads a trace file.
pub fn read_trace(path: &Path) -> Result<Vec<(usize, Event)>, ReplayError> {
    let bad = |detail: String| ReplayError::Trace {
        path: path.into(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(line)
            .map_err(|e| bad(format!("line {}: not a trace event: {e}", i + 1)))?;
        events.push((i + 1, e));
    }
    if events.is_empty() {
        return Err(bad("no events".into()));
    }
    Ok(events)
}

fn config_text(mmu: &str, dma: &str, coherent: bool) -> String {
    format!(
        "{mmu}, {dma}, {}",
        if coherent { "coherent" } else { "non-coherent" }
    )
}

/// Replays `events` (from `path`) on a simulated machine with `mmu`, `dma` and `coherent`.
pub fn replay(
    path: &Path,
    events: &[(usize, Event)],
    mmu: MmuFormat,
    dma: DmaArg,
    coherent: bool,
) -> Result<Replayed, ReplayError> {
    let bad = |line: usize, detail: String| ReplayError::Trace {
        path: path.into(),
        detail: format!("line {line}: {detail}"),
    };
    let op = |line: usize, error: CameraError| ReplayError::Operation {
        path: path.into(),
        line,
        error,
    };
    let args = CameraArgs {
        input: None,
        frames: 1,
        mmu,
        dma,
        platform: PlatformArg::Sim,
        pci: None,
        coherent,
        rebind: false,
        output: None,
        va_map: None,
        trace: None,
        dump_pt: false,
        json: false,
        skip_frame: None,
    };
    // The swiotlb pool is sized for every BO of the trace, as the camera sizes it for its ring.
    let total: u64 = events
        .iter()
        .map(|(_, e)| match e {
            Event::BoNew { size, .. } => *size,
            _ => 0,
        })
        .sum();
    let (device, sim, sim_mmu) =
        crate::camera::attach_sim_machine(&args, total).map_err(|e| op(0, e))?;
    let phys = device.phys().clone();
    let vm = Vm::new(&device).map_err(|e| op(0, e.into()))?;
    let mut bos: Vec<Arc<Bo>> = Vec::new();
    let mut iovas: HashMap<u64, u64> = HashMap::new();
    let mut recorded = String::from("(not recorded)");
    let mut recorded_counters = None;
    let mut compared = 0;
    let mut differences = Vec::new();
    let bo_of = |bos: &[Arc<Bo>], line: usize, bo: usize| {
        bos.get(bo)
            .cloned()
            .ok_or_else(|| bad(line, format!("BO {bo} was never allocated")))
    };
    let data_of = |line: usize, d: &Data| {
        d.bytes()
            .ok_or_else(|| bad(line, "data: malformed base64 or too long".into()))
    };
    let last_bind = events
        .iter()
        .rposition(|(_, e)| matches!(e, Event::Bind { .. }));
    let mut bound = None;
    for (index, (line, e)) in events.iter().enumerate() {
        let line = *line;
        match e {
            Event::Config { mmu, dma, coherent } => {
                recorded = config_text(mmu, dma, *coherent);
            }
            Event::BoNew { size, .. } => {
                let bo =
                    Bo::new(&phys, *size, BoFlags::default()).map_err(|e| op(line, e.into()))?;
                bos.push(bo);
            }
            Event::Bind {
                bo,
                offset,
                size,
                prot,
                iova,
            } => {
                let bo = bo_of(&bos, line, *bo)?;
                let prot = parse_prot(prot).map_err(|e| bad(line, e))?;
                let got = vm
                    .bind(&bo, *offset, *size, Placement::Anywhere, prot)
                    .map_err(|e| op(line, e.into()))?;
                iovas.insert(*iova, got.0);
                if Some(index) == last_bind {
                    bound = Some((line, vm.mapped_runs()));
                }
            }
            Event::Unbind { iova, size } => {
                let at = *iovas.get(iova).unwrap_or(iova);
                vm.unbind(Iova(at), *size).map_err(|e| op(line, e.into()))?;
            }
            Event::CpuWrite { bo, offset, data } => {
                let bo = bo_of(&bos, line, *bo)?;
                let bytes = data_of(line, data)?;
                let cpu = bo
                    .begin_cpu_access(CpuAccess::WRITE)
                    .map_err(|e| op(line, e.into()))?;
                cpu.write(*offset, &bytes).map_err(|e| op(line, e.into()))?;
                cpu.end().map_err(|e| op(line, e.into()))?;
            }
            Event::CpuRead {
                bo,
                offset,
                len,
                digest: want,
            } => {
                let bo = bo_of(&bos, line, *bo)?;
                let len = usize::try_from(*len).map_err(|_| bad(line, "len too large".into()))?;
                let mut buf = vec![0u8; len];
                let cpu = bo
                    .begin_cpu_access(CpuAccess::READ)
                    .map_err(|e| op(line, e.into()))?;
                cpu.read(*offset, &mut buf)
                    .map_err(|e| op(line, e.into()))?;
                cpu.end().map_err(|e| op(line, e.into()))?;
                compared += 1;
                let got = digest(&buf);
                if got != *want {
                    differences.push(format!(
                        "line {line}: the CPU read other bytes (digest {got}, recorded {want})"
                    ));
                }
            }
            Event::DeviceWrite { iova, data, fault } => {
                let bytes = data_of(line, data)?;
                let at = translate_iova(&iovas, *iova);
                let faulted = sim.dma_write(&vm, Iova(at), &bytes).is_err();
                compared += 1;
                if faulted != *fault {
                    differences.push(format!(
                        "line {line}: the device write at {iova:#x} {} (recorded: {})",
                        if faulted { "faulted" } else { "did not fault" },
                        if *fault { "faulted" } else { "no fault" }
                    ));
                }
            }
            Event::Counters(c) => recorded_counters = Some(*c),
        }
    }
    let pt = vm.pt_stats();
    let dma_stats = device.dma_ops().stats();
    let counters = Counters {
        iopte_stores: pt.pte_stores,
        pte_lines_cleaned: pt.lines_cleaned,
        tlb_invalidations: device.tlb_invalidations(),
        tables_allocated: pt.tables_allocated,
        synced_bytes_for_device: dma_stats.bytes_synced_for_device,
        synced_bytes_for_cpu: dma_stats.bytes_synced_for_cpu,
        bounced_bytes: dma_stats.bounced_bytes,
        faults: sim_mmu.faults().len() as u64,
    };
    for b in vm.bindings() {
        vm.unbind(b.iova, b.size).map_err(|e| op(0, e.into()))?;
    }
    drop(vm);
    device.detach();
    Ok(Replayed {
        recorded,
        replayed: config_text(
            mmu.name(),
            match dma {
                DmaArg::Iommu => "iommu",
                DmaArg::Direct => "direct",
            },
            coherent,
        ),
        recorded_counters,
        counters,
        compared,
        differences,
        bound,
    })
}

/// The replay's IOVA for a recorded IOVA: the same offset into the binding that covered it.
fn translate_iova(iovas: &HashMap<u64, u64>, iova: u64) -> u64 {
    iovas
        .iter()
        .filter(|(&rec, _)| rec <= iova)
        .max_by_key(|(&rec, _)| rec)
        .map(|(&rec, &got)| got + (iova - rec))
        .unwrap_or(iova)
}

/// Reads one counter.
type CounterOf = fn(&Counters) -> u64;

/// The side-by-side table `devmmu replay` prints.
pub fn render(r: &Replayed) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<24} {:>36} {:>36}", "", "recorded", "replayed");
    let _ = writeln!(
        s,
        "{:<24} {:>36} {:>36}",
        "configuration", r.recorded, r.replayed
    );
    let rec = r.recorded_counters;
    let rows: [(&str, CounterOf); 8] = [
        ("IOPTE stores", |c| c.iopte_stores),
        ("PTE lines cleaned", |c| c.pte_lines_cleaned),
        ("TLB invalidations", |c| c.tlb_invalidations),
        ("tables allocated", |c| c.tables_allocated),
        ("synced for device (B)", |c| c.synced_bytes_for_device),
        ("synced for CPU (B)", |c| c.synced_bytes_for_cpu),
        ("bounced (B)", |c| c.bounced_bytes),
        ("faults", |c| c.faults),
    ];
    for (name, get) in rows {
        let old = rec
            .map(|c| get(&c).to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "{name:<24} {old:>36} {:>36}", get(&r.counters));
    }
    if r.differences.is_empty() {
        let _ = write!(
            s,
            "same data: {} CPU reads and device accesses matched the recording",
            r.compared
        );
    } else {
        let _ = write!(
            s,
            "DIFFERENT: {} of {} CPU reads and device accesses differ; first: {}",
            r.differences.len(),
            r.compared,
            r.differences[0]
        );
    }
    s
}
