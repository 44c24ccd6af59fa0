//! `bench-plot` on a small criterion directory made here, in the layout criterion writes and
//! `report`/`manager_report` read: `<group>/<case>/new/estimates.json` (and `benchmark.json`
//! for the manager cases).

use std::path::Path;
use std::process::Command;

use devmmu_benches::plot::{self, Outcome, PlotError, MANAGER_SVG, PAGETABLE_SVG};
use devmmu_benches::report::{
    self, estimates_path, Case, ReportError, GROUP_1GIB, LIMIT_STORE, LIMIT_STORE_FLUSH,
    PEER_UNMAP_INVALID,
};

/// Criterion's `estimates.json` with the given median (ns per iteration).
fn estimates(median: f64) -> String {
    format!(
        r#"{{"mean":{{"point_estimate":{median}}},"median":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{},"upper_bound":{}}},"point_estimate":{median},"standard_error":1.0}}}}"#,
        median * 0.95,
        median * 1.05
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The per-page value the fixture gives a page-table case: the limits 0.2 and 0.8, the others
/// spread over four decades in an order unrelated to the case list.
fn fixture_ns(i: usize, c: &Case) -> f64 {
    match c.name {
        LIMIT_STORE => 0.2,
        LIMIT_STORE_FLUSH => 0.8,
        _ => 0.001 * 10f64.powf(((i * 7) % 13) as f64 / 3.0),
    }
}

/// The 1 GiB cases except [`PEER_UNMAP_INVALID`] (left out: "not run"), and two manager cases
/// per group.
fn fixture(dir: &Path) -> Vec<(String, f64)> {
    let mut drawn = Vec::new();
    for (i, c) in report::CASES.iter().enumerate() {
        if c.group != GROUP_1GIB || c.name == PEER_UNMAP_INVALID {
            continue;
        }
        let ns = fixture_ns(i, c);
        write(&estimates_path(dir, c), &estimates(ns * c.pages as f64));
        drawn.push((c.name.to_owned(), ns));
    }
    for (group, name, ns) in [
        ("vm", "bind/iommu/ipu/coherent", 40.0),
        ("vm", "unbind/iommu/ipu/noncoh", 120.0),
        ("dma", "map_sg/direct64/coherent", 55.0),
        ("dma", "unmap_sg/direct64/noncoh", 300.0),
    ] {
        let new = dir.join(group).join(name.replace('/', "_")).join("new");
        write(
            &new.join("benchmark.json"),
            &format!(
                r#"{{"group_id":"{group}","function_id":"{name}","value_str":null,"throughput":{{"Elements":16384}},"full_id":"{group}/{name}","directory_name":"{group}/{}","title":"{group}/{name}"}}"#,
                name.replace('/', "_")
            ),
        );
        write(&new.join("estimates.json"), &estimates(ns * 16384.0));
    }
    drawn
}

/// The contents of every `<text>` of the SVG, trimmed (plotters writes them on lines of their
/// own).
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            body.trim().to_owned()
        })
        .collect()
}

/// `(fill, width)` of every `<rect>` of the SVG, in drawing order.
fn rects(svg: &str) -> Vec<(String, f64)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].to_owned())
    };
    svg.split("<rect")
        .skip(1)
        .map(|t| {
            let tag = &t[..t.find("/>").unwrap()];
            (
                attr(tag, "fill").unwrap_or_default(),
                attr(tag, "width").unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn draws_every_case_with_the_limits_and_bars_as_long_as_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let drawn = fixture(dir.path());
    let chart = plot::pagetable_chart(dir.path()).unwrap();
    assert_eq!(chart.bars.len(), drawn.len());
    assert_eq!(chart.store_limit, Some(0.2));
    assert_eq!(chart.flush_limit, Some(0.8));
    assert_eq!(
        chart.gaps,
        [format!("Not run, not drawn: {PEER_UNMAP_INVALID}.")]
    );
    let svg = plot::render_svg(&chart).unwrap();
    let text = texts(&svg);
    let has = |t: &str| text.iter().any(|x| x == t);

    for (name, _) in &drawn {
        assert!(has(name), "{name} not drawn");
    }
    assert!(!has(PEER_UNMAP_INVALID));
    assert!(has(&format!("Not run, not drawn: {PEER_UNMAP_INVALID}.")));
    // The two limits: a labelled dashed line each (a polyline in the line's colour), and their
    // legend entries.
    assert!(has("store 0.200"));
    assert!(has("store+flush 0.800"));
    assert!(has("plain-store limit (limit_store), 0.200 ns/page"));
    assert!(has("store+flush limit (limit_store_flush), 0.800 ns/page"));
    for colour in ["#3C3C3C", "#D62728"] {
        // The legend's sample is 3 dashes; the line across the plot, many more.
        let dashes = svg.matches(&format!("stroke=\"{colour}\"")).count();
        assert!(dashes > 10, "{dashes} dashes in {colour}");
    }
    // Each bar's label relates it to its limit: map_4k_noncoherent to store+flush, map_4k to
    // the plain store.
    let nc = drawn
        .iter()
        .find(|d| d.0 == "map_4k_noncoherent")
        .unwrap()
        .1;
    assert!(has(&format!(
        "{} ns = {}x store+flush",
        sig3(nc),
        sig3(nc / 0.8)
    )));
    let map = drawn.iter().find(|d| d.0 == "map_4k").unwrap().1;
    assert!(has(&format!(
        "{} ns = {}x store",
        sig3(map),
        sig3(map / 0.2)
    )));

    // The bars are the rects of the plot with the bars' colours, drawn in case order; on a log
    // axis their lengths are ordered as the values.
    let colours = ["#969696", "#1F77B4", "#78B4E1", "#FF7F0E"];
    let bars: Vec<f64> = rects(&svg)
        .into_iter()
        .filter(|(fill, _)| colours.contains(&fill.as_str()))
        .map(|r| r.1)
        .collect();
    // Legend swatches come after the bars.
    let bars = &bars[..drawn.len()];
    for i in 0..drawn.len() {
        for j in 0..drawn.len() {
            if drawn[i].1 < drawn[j].1 {
                assert!(
                    bars[i] < bars[j],
                    "{} ({}) drawn {} px, not shorter than {} ({}) drawn {} px",
                    drawn[i].0,
                    drawn[i].1,
                    bars[i],
                    drawn[j].0,
                    drawn[j].1,
                    bars[j]
                );
            }
        }
    }
}

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

#[test]
fn writes_both_charts_and_the_manager_chart_has_its_cases_and_target() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let out = tempfile::tempdir().unwrap();
    let outcomes = plot::write_charts(dir.path(), out.path()).unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Written { .. })));
    let svg = std::fs::read_to_string(out.path().join(MANAGER_SVG)).unwrap();
    let text = texts(&svg);
    let has = |t: &str| text.iter().any(|x| x == t);
    for name in [
        "vm/bind/iommu/ipu/coherent",
        "vm/unbind/iommu/ipu/noncoh",
        "dma/map_sg/direct64/coherent",
        "dma/unmap_sg/direct64/noncoh",
    ] {
        assert!(has(name), "{name} not drawn");
    }
    assert!(has("40.0 ns = 200x store"));
    assert!(has("120 ns = 150x store+flush"));
    assert!(has("store 0.200"));
    assert!(has("target 10.0"));
    assert!(std::fs::read_to_string(out.path().join(PAGETABLE_SVG))
        .unwrap()
        .starts_with("<svg"));
}

#[test]
fn a_chart_whose_bench_was_not_run_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    std::fs::remove_dir_all(dir.path().join(GROUP_1GIB)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let outcomes = plot::write_charts(dir.path(), out.path()).unwrap();
    assert!(matches!(&outcomes[0], Outcome::Skipped { .. }));
    assert!(!out.path().join(PAGETABLE_SVG).exists());
    let Outcome::Written { gaps, .. } = &outcomes[1] else {
        panic!("manager chart not written: {outcomes:?}");
    };
    assert_eq!(
        gaps,
        &[
            "No pagetable_1GiB/limit_store result (pagetable bench): its limit line is not drawn.",
            "No pagetable_1GiB/limit_store_flush result (pagetable bench): its limit line is not \
             drawn."
        ]
    );
}

#[test]
fn refuses_a_missing_empty_or_broken_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(
        plot::write_charts(&dir.path().join("nothing"), out.path()),
        Err(PlotError::NoDirectory { .. })
    ));
    assert!(matches!(
        plot::write_charts(dir.path(), out.path()),
        Err(PlotError::NoResults { .. })
    ));
    fixture(dir.path());
    let map = report::CASES.iter().find(|c| c.name == "map_4k").unwrap();
    std::fs::write(estimates_path(dir.path(), map), "{").unwrap();
    assert!(matches!(
        plot::write_charts(dir.path(), out.path()),
        Err(PlotError::Report(ReportError::Parse { .. }))
    ));
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none());
}

#[test]
fn the_command_says_what_is_wrong_in_one_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("criterion");
    let run = Command::new(env!("CARGO_BIN_EXE_bench-plot"))
        .arg("--out")
        .arg(dir.path())
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("bench-plot: "));
    assert!(stderr.contains(&missing.display().to_string()));

    fixture(&missing);
    let run = Command::new(env!("CARGO_BIN_EXE_bench-plot"))
        .arg("--out")
        .arg(dir.path())
        .arg(&missing)
        .output()
        .unwrap();
    assert!(run.status.success());
    let stdout = String::from_utf8(run.stdout).unwrap();
    let bars = report::CASES
        .iter()
        .filter(|c| c.group == GROUP_1GIB)
        .count()
        - 1;
    assert!(
        stdout.contains(&format!("{PAGETABLE_SVG} ({bars} bars)")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("note: Not run, not drawn: {PEER_UNMAP_INVALID}.")));
    assert!(dir.path().join(MANAGER_SVG).exists());
}
