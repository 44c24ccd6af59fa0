//! SVG charts of the benchmark results, embedded in docs/performance.md and written by the
//! `bench-plot` binary.
//!
//! Two charts, each horizontal bars of nanoseconds per 4 KiB page on a log axis, with the
//! physical limits of the page-table bench as vertical reference lines and every bar labelled
//! with its ratio to them:
//! - [`pagetable_chart`]: the 1 GiB cases of [`report::CASES`], in that order (the single-page
//!   cases are per operation, not per page of a bulk run, so they are left out);
//! - [`manager_chart`]: the bind/unbind cases of the manager bench and the DMA layer's
//!   `map_sg`/`unmap_sg` ([`manager_report`]), with issue 12's bind target as a third line.
//!
//! The results are read by [`report`] and [`manager_report`], never here. A case criterion has
//! no result for is left out of its chart and named in a note under it. The SVG backend needs no
//! font library: the file names the generic `sans-serif` family and the viewer draws the text.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::manager_report::{self, ManagerReportError};
use crate::report::{
    self, ReportError, GROUP_1GIB, LIMIT_STORE, LIMIT_STORE_FLUSH, MAP_2M, PAGES_1GIB, UNMAP_2M,
};

/// File name of the page-table chart.
pub const PAGETABLE_SVG: &str = "perf-pagetable.svg";
/// File name of the bind/unbind chart.
pub const MANAGER_SVG: &str = "perf-manager.svg";
/// Issue 12's target for one bind, in nanoseconds per page.
pub const BIND_TARGET_NS: f64 = 10.0;

/// What a bar is, which sets its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// A physical limit measured in the same run.
    Limit,
    /// Our code.
    Ours,
    /// A peer library measured in the same run (aarch64-paging).
    Peer,
    /// The system DMA layer alone (`map_sg`/`unmap_sg`), a component of a bind.
    DmaLayer,
}

/// One bar of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The case's name, written left of the bar.
    pub name: String,
    /// Median nanoseconds per 4 KiB page.
    pub ns: f64,
    /// What the case is.
    pub kind: BarKind,
    /// Whether the case does cache maintenance, so that it is also related to the store+flush
    /// limit (and drawn lighter).
    pub noncoherent: bool,
}

/// A chart: bars top to bottom, the limits as reference lines, notes under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Caption.
    pub title: String,
    /// The bars, top to bottom.
    pub bars: Vec<Bar>,
    /// `limit_store` per page, when it was run.
    pub store_limit: Option<f64>,
    /// `limit_store_flush` per page, when it was run.
    pub flush_limit: Option<f64>,
    /// A target line other than the limits: its legend text and its value.
    pub target: Option<(String, f64)>,
    /// Lines of text under the legend: units and what the values are.
    pub notes: Vec<String>,
    /// What is not drawn because it was not run, one line each; also under the legend.
    pub gaps: Vec<String>,
}

/// Why the charts could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The criterion directory does not exist or is not a directory.
    #[error("{path} is not a criterion results directory (run `cargo bench -p devmmu-benches --bench pagetable` and `--bench manager` first)")]
    NoDirectory {
        /// The directory given.
        path: PathBuf,
    },
    /// The directory holds no result of either bench.
    #[error("{path} holds no result of the pagetable or manager bench (run `cargo bench -p devmmu-benches --bench pagetable` and `--bench manager` first)")]
    NoResults {
        /// The directory given.
        path: PathBuf,
    },
    /// A page-table result could not be read.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A manager result could not be read.
    #[error(transparent)]
    Manager(#[from] ManagerReportError),
    /// plotters failed to draw.
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    /// A chart could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A chart written by [`write_charts`], or the reason it was not.
#[derive(Debug)]
pub enum Outcome {
    /// Written.
    Written {
        /// The file.
        path: PathBuf,
        /// Bars drawn.
        bars: usize,
        /// What was not drawn because it was not run ([`Chart::gaps`]).
        gaps: Vec<String>,
    },
    /// Not written: its bench left no result.
    Skipped {
        /// The file it would have been.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The 1 GiB page-table cases of [`report::CASES`] that criterion has results for.
///
/// # Errors
/// [`PlotError::Report`] for a result file that exists but cannot be read or parsed.
pub fn pagetable_chart(criterion_dir: &Path) -> Result<Chart, PlotError> {
    let mut bars = Vec::new();
    let mut missing = Vec::new();
    for c in report::CASES.iter().filter(|c| c.group == GROUP_1GIB) {
        match optional(report::case_per_page(criterion_dir, c))? {
            Some(m) => bars.push(Bar {
                name: c.name.to_owned(),
                ns: m.ns,
                // The case list names the limits `limit_*` and the peer's cases
                // `aarch64_paging_*`; a new case of either kind is drawn as one.
                kind: if c.name.starts_with("limit_") {
                    BarKind::Limit
                } else if c.name.starts_with("aarch64_paging") {
                    BarKind::Peer
                } else {
                    BarKind::Ours
                },
                noncoherent: c.noncoherent,
            }),
            None => missing.push(c.name),
        }
    }
    let value = |name: &str| bars.iter().find(|b| b.name == name).map(|b| b.ns);
    let (store_limit, flush_limit) = (value(LIMIT_STORE), value(LIMIT_STORE_FLUSH));
    let notes = vec![format!(
        "ns per 4 KiB page = criterion's median time of one 1 GiB operation / {PAGES_1GIB}. \
         {MAP_2M} / {UNMAP_2M}: per 4 KiB page covered by the 2 MiB blocks."
    )];
    let mut gaps = Vec::new();
    if !missing.is_empty() {
        gaps.push(format!("Not run, not drawn: {}.", missing.join(", ")));
    }
    Ok(Chart {
        title: format!(
            "{GROUP_1GIB}: ns per 4 KiB page (lower is better), ArmLpae4k vs limits and aarch64-paging"
        ),
        bars,
        store_limit,
        flush_limit,
        target: None,
        notes,
        gaps,
    })
}

/// The manager cases criterion has results for, with the limits of the page-table bench when
/// that ran too (a bind stores at least one IOPTE per page).
///
/// # Errors
/// [`PlotError::Manager`] or [`PlotError::Report`] for a result that cannot be read.
pub fn manager_chart(criterion_dir: &Path) -> Result<Chart, PlotError> {
    let cases = manager_report::per_page(criterion_dir)?;
    let bars: Vec<Bar> = cases
        .iter()
        .map(|c| Bar {
            name: format!("{}/{}", c.group, c.name),
            ns: c.per_page.ns,
            kind: if c.group == "dma" {
                BarKind::DmaLayer
            } else {
                BarKind::Ours
            },
            noncoherent: c.noncoherent,
        })
        .collect();
    let limit = |name: &str| -> Result<Option<f64>, PlotError> {
        let case = report::CASES.iter().find(|c| c.name == name);
        Ok(match case {
            Some(c) => optional(report::case_per_page(criterion_dir, c))?.map(|m| m.ns),
            None => None,
        })
    };
    let (store_limit, flush_limit) = (limit(LIMIT_STORE)?, limit(LIMIT_STORE_FLUSH)?);
    let notes = vec![
        "ns per page = criterion's median time of one operation on the 64 MiB BO / 16384. \
         Limits: from the pagetable bench of the same target directory."
            .to_owned(),
    ];
    let mut gaps = Vec::new();
    for group in manager_report::GROUPS {
        if !cases.iter().any(|c| c.group == *group) {
            gaps.push(format!("No {group}/* result: not run, not drawn."));
        }
    }
    for (name, value) in [(LIMIT_STORE, store_limit), (LIMIT_STORE_FLUSH, flush_limit)] {
        if value.is_none() {
            gaps.push(format!(
                "No {GROUP_1GIB}/{name} result (pagetable bench): its limit line is not drawn."
            ));
        }
    }
    Ok(Chart {
        title: "Bind/unbind of a 64 MiB BO: ns per 4 KiB page (lower is better)".to_owned(),
        bars,
        store_limit,
        flush_limit,
        target: Some((
            format!("issue 12 bind target, {} ns/page", sig3(BIND_TARGET_NS)),
            BIND_TARGET_NS,
        )),
        notes,
        gaps,
    })
}

/// Writes [`PAGETABLE_SVG`] and [`MANAGER_SVG`] into `out_dir` from the results under
/// `criterion_dir`. A chart without any bar is skipped, not written.
///
/// # Errors
/// [`PlotError::NoDirectory`] when `criterion_dir` is not a directory, [`PlotError::NoResults`]
/// when neither chart has a bar, a result that cannot be read, a file that cannot be written.
pub fn write_charts(criterion_dir: &Path, out_dir: &Path) -> Result<Vec<Outcome>, PlotError> {
    if !criterion_dir.is_dir() {
        return Err(PlotError::NoDirectory {
            path: criterion_dir.to_owned(),
        });
    }
    let charts = [
        (PAGETABLE_SVG, pagetable_chart(criterion_dir)?, "pagetable"),
        (MANAGER_SVG, manager_chart(criterion_dir)?, "manager"),
    ];
    if charts.iter().all(|(_, c, _)| c.bars.is_empty()) {
        return Err(PlotError::NoResults {
            path: criterion_dir.to_owned(),
        });
    }
    let mut out = Vec::new();
    for (file, chart, bench) in charts {
        let path = out_dir.join(file);
        if chart.bars.is_empty() {
            out.push(Outcome::Skipped {
                path,
                why: format!("no result of `--bench {bench}`"),
            });
            continue;
        }
        let svg = render_svg(&chart)?;
        std::fs::write(&path, svg).map_err(|source| PlotError::Write {
            path: path.clone(),
            source,
        })?;
        out.push(Outcome::Written {
            path,
            bars: chart.bars.len(),
            gaps: chart.gaps,
        });
    }
    Ok(out)
}

/// `None` for a case that was not run (its estimates file does not exist).
fn optional<T>(r: Result<T, ReportError>) -> Result<Option<T>, ReportError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ReportError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Width of the picture, pixels.
const WIDTH: u32 = 1200;
/// Height of one bar's row.
const ROW: u32 = 30;
/// Rough width in pixels of one character of a case name (`FONT`: 12.9 px), to leave room
/// left of the plot for the longest name.
const NAME_CHAR_W: f64 = 7.4;
/// Margins of the plot: left, right.
const MARGIN: (u32, u32) = (10, 20);
/// Room under the plot for the tick labels and the axis name.
const X_AXIS_AREA: u32 = 50;
/// Height of the caption.
const CAPTION: u32 = 40;
/// Font size of the labels, in plotters' unit (the SVG says `FONT / 1.24` pixels).
const FONT: u32 = 16;
/// Rough width in pixels of one character of a bar's label (`FONT - 1`: 12.1 px; measured
/// 6.5 px on average with DejaVu Sans, the viewer's usual `sans-serif`, plus a margin), used
/// to leave room right of the longest bar for its label and to put a white box under it.
const CHAR_W: f64 = 6.8;

const STORE_LINE: RGBColor = RGBColor(60, 60, 60);
const FLUSH_LINE: RGBColor = RGBColor(214, 39, 40);
const TARGET_LINE: RGBColor = RGBColor(44, 160, 44);

/// Fill colour of a bar.
fn bar_colour(kind: BarKind, noncoherent: bool) -> RGBColor {
    match (kind, noncoherent) {
        (BarKind::Limit, _) => RGBColor(150, 150, 150),
        (BarKind::Ours, false) => RGBColor(31, 119, 180),
        (BarKind::Ours, true) => RGBColor(120, 180, 225),
        (BarKind::Peer, _) => RGBColor(255, 127, 14),
        (BarKind::DmaLayer, false) => RGBColor(148, 103, 189),
        (BarKind::DmaLayer, true) => RGBColor(200, 175, 225),
    }
}

/// Legend text of a bar colour.
fn bar_legend(kind: BarKind, noncoherent: bool) -> &'static str {
    match (kind, noncoherent) {
        (BarKind::Limit, _) => "physical limit, measured in the same run",
        (BarKind::Ours, false) => "devmmu, coherent walker (no cache maintenance)",
        (BarKind::Ours, true) => "devmmu, non-coherent walker (cache lines cleaned)",
        (BarKind::Peer, _) => "peer: aarch64-paging 0.12, same run",
        (BarKind::DmaLayer, false) => "system DMA layer alone (component of a bind), coherent",
        (BarKind::DmaLayer, true) => "system DMA layer alone, non-coherent (data synced)",
    }
}

/// The text right of a bar: its value and its ratio to the limit that applies to it, the
/// store+flush limit for a case that does cache maintenance, else the plain-store limit.
fn bar_label(chart: &Chart, bar: &Bar) -> String {
    let ns = sig3(bar.ns);
    match (bar.noncoherent, chart.store_limit, chart.flush_limit) {
        (true, _, Some(flush)) => format!("{ns} ns = {}x store+flush", sig3(bar.ns / flush)),
        (_, Some(store), _) => format!("{ns} ns = {}x store", sig3(bar.ns / store)),
        _ => format!("{ns} ns"),
    }
}

/// The reference lines: short label, legend text, value, colour.
fn ref_lines(chart: &Chart) -> Vec<(String, String, f64, RGBColor)> {
    let mut v = Vec::new();
    if let Some(ns) = chart.store_limit {
        v.push((
            format!("store {}", sig3(ns)),
            format!("plain-store limit ({LIMIT_STORE}), {} ns/page", sig3(ns)),
            ns,
            STORE_LINE,
        ));
    }
    if let Some(ns) = chart.flush_limit {
        v.push((
            format!("store+flush {}", sig3(ns)),
            format!(
                "store+flush limit ({LIMIT_STORE_FLUSH}), {} ns/page",
                sig3(ns)
            ),
            ns,
            FLUSH_LINE,
        ));
    }
    if let Some((legend, ns)) = &chart.target {
        v.push((
            format!("target {}", sig3(*ns)),
            legend.clone(),
            *ns,
            TARGET_LINE,
        ));
    }
    v
}

/// The x range: from half the smallest value (so that the shortest bar shows) to where the
/// longest label still fits right of its bar or line.
fn x_range(chart: &Chart, plot_px: f64) -> (f64, f64) {
    let labelled: Vec<(f64, f64)> = chart
        .bars
        .iter()
        .map(|b| (b.ns, bar_label(chart, b).chars().count() as f64))
        .chain(
            ref_lines(chart)
                .into_iter()
                .map(|(label, _, ns, _)| (ns, label.chars().count() as f64)),
        )
        .collect();
    let min = labelled.iter().map(|l| l.0).fold(f64::INFINITY, f64::min);
    let lo = min / 2.0;
    let decades = labelled
        .iter()
        .map(|&(ns, chars)| {
            let used = (ns / lo).log10();
            let label_px = chars * CHAR_W + 20.0;
            used * plot_px / (plot_px - label_px).max(plot_px / 4.0)
        })
        .fold(1.0, f64::max);
    (lo, lo * 10f64.powf(decades))
}

/// The SVG of `chart`.
///
/// # Errors
/// [`PlotError::Draw`] when plotters fails (an empty chart among others).
pub fn render_svg(chart: &Chart) -> Result<String, PlotError> {
    if chart.bars.is_empty() {
        return Err(PlotError::Draw("no bar to draw".into()));
    }
    let lines = ref_lines(chart);
    let legend = legend_items(chart, &lines);
    let legend_rows = legend.len().div_ceil(2) as u32;
    let n = chart.bars.len();
    // Two rows above the bars hold the labels of the reference lines.
    let plot_h = (n as u32 + 2) * ROW;
    let upper_h = CAPTION + plot_h + X_AXIS_AREA + 10;
    let lower_h =
        12 + legend_rows * 22 + 8 + (chart.notes.len() + chart.gaps.len()) as u32 * 20 + 10;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, upper_h + lower_h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        let (upper, lower) = root.split_vertically(upper_h);
        draw_bars(chart, &lines, &upper)?;
        draw_legend(chart, &legend, &lower)?;
        root.present().map_err(draw)?;
    }
    Ok(svg)
}

fn draw<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

fn text_style(size: u32, colour: RGBColor, h: HPos) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(&colour)
        .pos(Pos::new(h, VPos::Center))
}

fn draw_bars<DB: DrawingBackend>(
    chart: &Chart,
    lines: &[(String, String, f64, RGBColor)],
    area: &DrawingArea<DB, Shift>,
) -> Result<(), PlotError> {
    let n = chart.bars.len();
    let longest = chart.bars.iter().map(|b| b.name.chars().count()).max();
    let name_area = (longest.unwrap_or(0) as f64 * NAME_CHAR_W) as u32 + 30;
    let plot_px = f64::from(WIDTH - name_area.min(WIDTH / 2) - MARGIN.0 - MARGIN.1);
    let (lo, hi) = x_range(chart, plot_px);
    let first_decade = lo.log10().ceil() as i32;
    let last_decade = hi.log10().floor() as i32;
    let mut cc = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 20).into_font())
        .margin_left(MARGIN.0)
        .margin_right(MARGIN.1)
        .margin_top(4)
        .x_label_area_size(X_AXIS_AREA)
        .y_label_area_size(name_area.min(WIDTH / 2))
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..(n + 2) as f64)
        .map_err(draw)?;
    let tick = |v: &f64| decade_label(*v);
    cc.configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels((last_decade - first_decade + 1).max(1) as usize)
        .x_label_formatter(&tick)
        .x_desc("ns per 4 KiB page (criterion's median; log scale)")
        .label_style(("sans-serif", FONT).into_font())
        .axis_desc_style(("sans-serif", FONT + 1).into_font())
        .bold_line_style(RGBColor(200, 200, 200))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(draw)?;

    // Reference lines, under the bars' labels; their own labels staggered on the two top rows.
    let top = (n + 2) as f64;
    for (i, (label, _, ns, colour)) in lines.iter().enumerate() {
        cc.draw_series(DashedLineSeries::new(
            [(*ns, 0.0), (*ns, top)],
            7,
            4,
            colour.stroke_width(2),
        ))
        .map_err(draw)?;
        let y = n as f64 + if i % 2 == 0 { 1.5 } else { 0.5 };
        cc.draw_series(std::iter::once(
            EmptyElement::at((*ns, y))
                + label_box(label)
                + Text::new(
                    label.clone(),
                    (6, 0),
                    text_style(FONT - 1, *colour, HPos::Left),
                ),
        ))
        .map_err(draw)?;
    }

    for (i, bar) in chart.bars.iter().enumerate() {
        let y0 = (n - 1 - i) as f64;
        let mut rect = Rectangle::new(
            [(lo, y0), (bar.ns, y0 + 1.0)],
            bar_colour(bar.kind, bar.noncoherent).filled(),
        );
        rect.set_margin(4, 4, 0, 0);
        cc.draw_series(std::iter::once(rect)).map_err(draw)?;
        let name_colour = if bar.kind == BarKind::Peer {
            RGBColor(190, 90, 0)
        } else {
            BLACK
        };
        cc.draw_series(std::iter::once(
            EmptyElement::at((lo, y0 + 0.5))
                + Text::new(
                    bar.name.clone(),
                    (-8, 0),
                    text_style(FONT, name_colour, HPos::Right),
                ),
        ))
        .map_err(draw)?;
        let label = bar_label(chart, bar);
        cc.draw_series(std::iter::once(
            EmptyElement::at((bar.ns, y0 + 0.5))
                + label_box(&label)
                + Text::new(
                    label,
                    (6, 0),
                    text_style(FONT - 1, RGBColor(20, 20, 20), HPos::Left),
                ),
        ))
        .map_err(draw)?;
    }
    Ok(())
}

/// A white box, mostly opaque, under a label drawn 6 px right of a point, so that a reference
/// line crossing the label does not cross its text.
fn label_box(label: &str) -> Rectangle<(i32, i32)> {
    let w = (label.chars().count() as f64 * CHAR_W).round() as i32 + 6;
    Rectangle::new([(3, -9), (3 + w, 9)], WHITE.mix(0.85).filled())
}

/// A legend entry: a bar colour or a reference line.
enum Legend {
    Bar(RGBColor, &'static str),
    Line(RGBColor, String),
}

fn legend_items(chart: &Chart, lines: &[(String, String, f64, RGBColor)]) -> Vec<Legend> {
    let mut kinds: Vec<(BarKind, bool)> = Vec::new();
    for b in &chart.bars {
        let k = (b.kind, b.kind != BarKind::Limit && b.noncoherent);
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let mut items: Vec<Legend> = kinds
        .into_iter()
        .map(|(k, nc)| Legend::Bar(bar_colour(k, nc), bar_legend(k, nc)))
        .collect();
    items.extend(
        lines
            .iter()
            .map(|(_, legend, _, colour)| Legend::Line(*colour, legend.clone())),
    );
    items
}

fn draw_legend<DB: DrawingBackend>(
    chart: &Chart,
    items: &[Legend],
    area: &DrawingArea<DB, Shift>,
) -> Result<(), PlotError> {
    let x0 = 20;
    let col_w = (WIDTH as i32 - 2 * x0) / 2;
    for (i, item) in items.iter().enumerate() {
        let x = x0 + (i as i32 % 2) * col_w;
        let y = 12 + (i as i32 / 2) * 22 + 8;
        let text = match item {
            Legend::Bar(colour, text) => {
                area.draw(&Rectangle::new(
                    [(x, y - 7), (x + 28, y + 7)],
                    colour.filled(),
                ))
                .map_err(draw)?;
                (*text).to_owned()
            }
            Legend::Line(colour, text) => {
                for dx in [0, 11, 22] {
                    area.draw(&PathElement::new(
                        [(x + dx, y), (x + dx + 6, y)],
                        colour.stroke_width(2),
                    ))
                    .map_err(draw)?;
                }
                text.clone()
            }
        };
        area.draw(&Text::new(
            text,
            (x + 38, y),
            text_style(FONT, BLACK, HPos::Left),
        ))
        .map_err(draw)?;
    }
    let notes_y = 12 + items.len().div_ceil(2) as i32 * 22 + 8 + 10;
    for (i, note) in chart.notes.iter().chain(&chart.gaps).enumerate() {
        area.draw(&Text::new(
            note.clone(),
            (x0, notes_y + i as i32 * 20),
            text_style(FONT - 1, RGBColor(90, 90, 90), HPos::Left),
        ))
        .map_err(draw)?;
    }
    Ok(())
}

/// `0.001`, `0.01`, ..., `1`, `10`, ... for a power of ten, else nothing.
fn decade_label(v: f64) -> String {
    let e = v.log10().round();
    if (v.log10() - e).abs() > 1e-6 {
        return String::new();
    }
    if e >= 0.0 {
        format!("{}", 10f64.powi(e as i32).round())
    } else {
        format!("{:.*}", (-e) as usize, 10f64.powi(e as i32))
    }
}

/// Three significant digits (at most three decimals).
fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
