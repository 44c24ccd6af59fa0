//! The device VA space of a VM as an SVG picture (`devmmu camera --va-map FILE`; `devmmu
//! pipeline --va-map FILE` stacks the camera's and the display's).
//!
//! Two bars: the whole VA space to scale (where the bindings sit in it), and the same space
//! cut into its pieces in IOVA order (the guard page at 0, each binding with its BO, the holes
//! between them), with the binding's leaves under it: 4 KiB pages and 2 MiB / 1 GiB blocks in
//! their own colours. It reads a [`Vm`]; it never changes one.

use devmmu_mm::vm::{Vm, VA_START};
use devmmu_pagetable::{Iova, Prot};
use svg::node::element::{Line, Rectangle, Text};
use svg::Document;

use crate::summary::bytes;

/// One binding as the picture shows it.
#[derive(Debug, Clone)]
pub struct VaBinding {
    /// First IOVA.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
    /// The BO's name in the picture (e.g. `BO 2`).
    pub bo: String,
    /// The binding's protection.
    pub prot: Prot,
    /// Its leaves merged into runs: (first IOVA, bytes, leaf size in bytes).
    pub runs: Vec<(u64, u64, u64)>,
}

/// What the picture shows.
#[derive(Debug, Clone)]
pub struct VaSpace {
    /// The heading.
    pub title: String,
    /// Width of the VA space in bits.
    pub iova_bits: u32,
    /// First usable IOVA: below it, the guard page that makes a NULL device pointer fault.
    pub guard: u64,
    /// The bindings, in IOVA order.
    pub bindings: Vec<VaBinding>,
}

impl VaSpace {
    /// The VA space of `vm`; `bo_name` names the BO bound at an IOVA.
    pub fn of_vm(vm: &Vm, bo_name: impl Fn(Iova) -> String) -> VaSpace {
        let ctx = vm.context();
        let runs = vm.mapped_runs();
        let bindings = vm
            .bindings()
            .into_iter()
            .map(|b| {
                let (start, end) = (b.iova.0, b.iova.0 + b.size);
                VaBinding {
                    iova: start,
                    size: b.size,
                    bo: bo_name(b.iova),
                    prot: b.prot,
                    runs: runs
                        .iter()
                        .filter(|r| r.iova.0 < end && r.iova.0 + r.size > start)
                        .map(|r| {
                            let s = r.iova.0.max(start);
                            (s, (r.iova.0 + r.size).min(end) - s, r.page_size)
                        })
                        .collect(),
                }
            })
            .collect();
        VaSpace {
            title: format!(
                "device VA space of VM {} ({} MMU, {}-bit IOVA, root {})",
                ctx.asid,
                ctx.format.name(),
                ctx.format.iova_bits(),
                ctx.root
            ),
            iova_bits: ctx.format.iova_bits(),
            guard: VA_START,
            bindings,
        }
    }
}

const WIDTH: f64 = 1200.0;
const MARGIN: f64 = 20.0;
const GUARD: &str = "#d62728";
const HOLE: &str = "#e8e8e8";
const BINDING: [&str; 4] = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"];
const PAGE_4K: &str = "#9ecae1";
const BLOCK: &str = "#fd8d3c";

fn rect(x: f64, y: f64, w: f64, h: f64, fill: &str) -> Rectangle {
    Rectangle::new()
        .set("x", x)
        .set("y", y)
        .set("width", w.max(1.0))
        .set("height", h)
        .set("fill", fill)
        .set("stroke", "#333")
        .set("stroke-width", 0.5)
}

fn text(x: f64, y: f64, s: impl Into<String>, size: u32) -> Text {
    Text::new(s.into())
        .set("x", x)
        .set("y", y)
        .set("font-family", "DejaVu Sans, sans-serif")
        .set("font-size", size)
}

/// A piece of the VA space in IOVA order.
enum Piece<'a> {
    Guard(u64),
    Hole(u64, u64),
    Binding(usize, &'a VaBinding),
}

/// Height of one picture in SVG user units.
const HEIGHT: f64 = 330.0;

/// The picture, as SVG text.
pub fn render_svg(space: &VaSpace) -> String {
    picture(space).to_string()
}

/// Several VA spaces (e.g. the camera's and the display's VMs of `devmmu pipeline`), one
/// picture each, stacked from top to bottom in one SVG document.
pub fn render_svg_stack(spaces: &[VaSpace]) -> String {
    let height = HEIGHT * spaces.len() as f64;
    let mut doc = Document::new()
        .set("xmlns", "http://www.w3.org/2000/svg")
        .set("width", WIDTH)
        .set("height", height)
        .set("viewBox", (0, 0, WIDTH as u32, height as u32));
    for (i, space) in spaces.iter().enumerate() {
        doc = doc.add(picture(space).set("x", 0).set("y", HEIGHT * i as f64));
    }
    doc.to_string()
}

/// One picture: a 1200 x 330 SVG element.
fn picture(space: &VaSpace) -> Document {
    let end = 1u128 << space.iova_bits;
    let inner = WIDTH - 2.0 * MARGIN;
    let mut doc = Document::new()
        .set("xmlns", "http://www.w3.org/2000/svg")
        .set("width", WIDTH)
        .set("height", 330)
        .set("viewBox", (0, 0, WIDTH as u32, 330))
        .add(rect(0.0, 0.0, WIDTH, 330.0, "white").set("stroke", "none"))
        .add(text(MARGIN, 24.0, space.title.clone(), 16).set("font-weight", "bold"));

    // The whole space to scale.
    let scale = |iova: u64| MARGIN + inner * (iova as f64 / end as f64);
    doc = doc
        .add(text(MARGIN, 50.0, "to scale:", 12))
        .add(rect(MARGIN, 56.0, inner, 22.0, HOLE))
        .add(rect(
            MARGIN,
            56.0,
            (scale(space.guard) - MARGIN).max(2.0),
            22.0,
            GUARD,
        ));
    for (i, b) in space.bindings.iter().enumerate() {
        let x = scale(b.iova);
        doc = doc.add(rect(
            x,
            56.0,
            (scale(b.iova + b.size) - x).max(2.0),
            22.0,
            BINDING[i % 4],
        ));
    }
    doc = doc
        .add(text(MARGIN, 92.0, "0", 11))
        .add(text(WIDTH - MARGIN, 92.0, bytes_u128(end), 11).set("text-anchor", "end"));

    // The pieces in order: holes get a fixed width, bindings share the rest by size.
    let mut pieces = vec![Piece::Guard(space.guard)];
    let mut at = space.guard;
    for (i, b) in space.bindings.iter().enumerate() {
        if b.iova > at {
            pieces.push(Piece::Hole(at, b.iova - at));
        }
        pieces.push(Piece::Binding(i, b));
        at = b.iova + b.size;
    }
    if u128::from(at) < end {
        pieces.push(Piece::Hole(
            at,
            (end - u128::from(at)).min(u64::MAX as u128) as u64,
        ));
    }
    const FIXED: f64 = 90.0;
    let fixed = pieces
        .iter()
        .filter(|p| !matches!(p, Piece::Binding(..)))
        .count() as f64;
    let bound: u64 = space.bindings.iter().map(|b| b.size).sum();
    let share = (inner - FIXED * fixed).max(0.0);
    let n = space.bindings.len().max(1) as f64;
    let min_w = (share / n).min(120.0);
    let extra = share - min_w * n;
    let (y, h) = (130.0, 40.0);
    doc = doc.add(text(
        MARGIN,
        y - 12.0,
        "in IOVA order (holes not to scale):",
        12,
    ));
    let mut x = MARGIN;
    for p in &pieces {
        match p {
            Piece::Guard(size) => {
                doc = doc
                    .add(rect(x, y, FIXED, h, GUARD))
                    .add(text(x + 4.0, y + 56.0, "guard page", 11))
                    .add(text(
                        x + 4.0,
                        y + 70.0,
                        format!("0x0, {}", bytes(*size)),
                        10,
                    ));
                x += FIXED;
            }
            Piece::Hole(start, size) => {
                doc = doc
                    .add(rect(x, y, FIXED, h, HOLE))
                    .add(text(x + 4.0, y + 56.0, "hole", 11))
                    .add(text(x + 4.0, y + 70.0, format!("{start:#x}"), 10))
                    .add(text(x + 4.0, y + 84.0, bytes(*size), 10));
                x += FIXED;
            }
            Piece::Binding(i, b) => {
                // Each binding gets room for its labels, then a share of the rest by size.
                let w = min_w
                    + if bound == 0 {
                        0.0
                    } else {
                        extra * b.size as f64 / bound as f64
                    };
                doc = doc
                    .add(rect(x, y, w, h, BINDING[i % 4]))
                    .add(
                        text(x + 4.0, y + 25.0, b.bo.clone(), 13)
                            .set("fill", "white")
                            .set("font-weight", "bold"),
                    )
                    .add(text(
                        x + 4.0,
                        y + 56.0,
                        format!("{} at {:#x}", b.bo, b.iova),
                        11,
                    ))
                    .add(text(
                        x + 4.0,
                        y + 70.0,
                        format!("{}, {}", bytes(b.size), b.prot),
                        10,
                    ));
                // The leaves under the binding.
                let ly = y + 92.0;
                let mut pages = 0u64;
                let mut blocks = 0u64;
                let mut block_size = 0u64;
                for &(start, size, leaf) in &b.runs {
                    let lx = x + w * ((start - b.iova) as f64 / b.size as f64);
                    let lw = w * (size as f64 / b.size as f64);
                    let fill = if leaf == 4096 { PAGE_4K } else { BLOCK };
                    doc = doc.add(rect(lx, ly, lw, 16.0, fill));
                    if leaf == 4096 {
                        pages += size / leaf;
                    } else {
                        blocks += size / leaf;
                        block_size = leaf;
                    }
                }
                let mut leaves = format!("{pages} x 4 KiB pages");
                if blocks > 0 {
                    let size = crate::pt::size_words(block_size);
                    leaves.push_str(&format!(", {blocks} x {size} blocks"));
                }
                doc = doc.add(text(x + 4.0, ly + 30.0, leaves, 10));
                x += w;
            }
        }
        doc = doc.add(
            Line::new()
                .set("x1", x)
                .set("y1", y - 4.0)
                .set("x2", x)
                .set("y2", y + h + 4.0)
                .set("stroke", "#333"),
        );
    }

    // The legend.
    let ly = 290.0;
    let legend = [
        (GUARD, "guard page (NULL faults)"),
        (HOLE, "hole (unmapped)"),
        (BINDING[0], "binding (colour per binding)"),
        (PAGE_4K, "4 KiB pages"),
        (BLOCK, "2 MiB / 1 GiB blocks"),
    ];
    let mut lx = MARGIN;
    for (fill, what) in legend {
        doc = doc
            .add(rect(lx, ly, 14.0, 14.0, fill))
            .add(text(lx + 20.0, ly + 12.0, what, 12));
        lx += 220.0;
    }
    doc
}

fn bytes_u128(b: u128) -> String {
    match u64::try_from(b) {
        Ok(b) => bytes(b),
        Err(_) => format!("2^{}", 127 - b.leading_zeros()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A space with a hole between two bindings and a binding of 2 MiB blocks and pages: every
    /// kind of piece is drawn, blocks in their own colour.
    #[test]
    fn holes_pages_and_blocks_are_drawn() {
        let space = VaSpace {
            title: "test space".into(),
            iova_bits: 32,
            guard: 0x1000,
            bindings: vec![
                VaBinding {
                    iova: 0x1000,
                    size: 0x4000,
                    bo: "BO 0".into(),
                    prot: Prot::RW,
                    runs: vec![(0x1000, 0x4000, 0x1000)],
                },
                VaBinding {
                    iova: 0x40_0000,
                    size: 0x40_2000,
                    bo: "BO 1".into(),
                    prot: Prot::RW_NOEXEC,
                    runs: vec![
                        (0x40_0000, 0x40_0000, 0x20_0000),
                        (0x80_0000, 0x2000, 0x1000),
                    ],
                },
            ],
        };
        let svg = render_svg(&space);
        if let Some(path) = std::env::var_os("DEVMMU_VAMAP_TEST_SVG") {
            std::fs::write(path, &svg).unwrap();
        }
        assert!(svg.contains("BO 0 at 0x1000") && svg.contains("BO 1 at 0x400000"));
        // The hole between the bindings, and the one after the last.
        assert!(svg.contains("0x5000") && svg.contains("0x802000"), "{svg}");
        assert_eq!(svg.matches("\nhole\n").count(), 2, "{svg}");
        assert!(
            svg.contains("4 x 4 KiB pages") && svg.contains("2 x 4 KiB pages, 2 x 2 MiB blocks")
        );
        assert!(svg.contains(BLOCK));
    }
}
