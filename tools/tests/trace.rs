//! `devmmu camera --trace` and `devmmu replay`: a recorded capture replays with the same data
//! on every configuration; a trace whose recorded data was changed fails (exit 1); a malformed
//! trace is refused in one line (exit 2).

mod common;
use common::*;
use devmmu_mm::device::MmuFormat;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_devmmu");

fn devmmu(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn a_recorded_capture_replays_on_every_configuration() {
    let s = Scratch::new("trace-replay");
    let input = s.tiny_png("in.png");
    let trace = s.path("camera.jsonl");
    let (input, trace) = (input.to_str().unwrap(), trace.to_str().unwrap());
    let out = devmmu(&[
        "camera", "--input", input, "--frames", "5", "--rebind", "--trace", trace,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(trace).unwrap();
    let ops: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["op"].as_str().unwrap().to_string()
        })
        .collect();
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    assert_eq!(ops.first().map(String::as_str), Some("config"));
    assert_eq!(ops.last().map(String::as_str), Some("counters"));
    // 4 ring buffers bound, then per frame: rebind, clear, device write, read.
    assert_eq!(
        (count("bo_new"), count("bind"), count("unbind")),
        (4, 4 + 5, 5)
    );
    assert_eq!(
        (count("cpu_write"), count("device_write"), count("cpu_read")),
        (5, 5, 5)
    );

    for mmu in MmuFormat::ALL {
        for dma in ["iommu", "direct"] {
            for coherent in [false, true] {
                let mut args = vec!["replay", trace, "--mmu", mmu.name(), "--dma", dma];
                if coherent {
                    args.push("--coherent");
                }
                let out = devmmu(&args);
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}");
                assert!(
                    stdout.contains("same data: 10 CPU reads and device accesses matched"),
                    "{args:?}: {stdout}"
                );
                let row = |name: &str| -> Vec<String> {
                    let line = stdout.lines().find(|l| l.starts_with(name)).unwrap();
                    line[name.len()..]
                        .split_whitespace()
                        .map(String::from)
                        .collect()
                };
                // Side by side: recorded (ipu, iommu, non-coherent), then this configuration.
                assert_eq!(row("faults"), ["0", "0"], "{stdout}");
                let bounced = row("bounced (B)");
                assert_eq!(bounced[0], "0");
                assert_eq!(bounced[1] != "0", dma == "direct", "{stdout}");
                assert_eq!(row("PTE lines cleaned")[1] == "0", coherent, "{stdout}");
            }
        }
    }

    // The recording said the CPU read other bytes: the replay must notice and fail.
    let first = text.find("\"digest\":\"").unwrap() + "\"digest\":\"".len();
    let mut tampered = text.clone();
    let flipped = if &text[first..first + 1] == "0" {
        "1"
    } else {
        "0"
    };
    tampered.replace_range(first..first + 1, flipped);
    let bad = s.write("tampered.jsonl", tampered.as_bytes());
    let out = devmmu(&["replay", bad.to_str().unwrap(), "--mmu", "arm-lpae-4k"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("DIFFERENT: 1 of 10") && stdout.contains("the CPU read other bytes"));
}

#[test]
fn a_malformed_trace_is_one_line_and_exit_2() {
    let s = Scratch::new("trace-bad");
    let junk = s.write("junk.jsonl", b"{\"op\":\"config\",\"mmu\":\"ipu\",\"dma\":\"iommu\",\"coherent\":false}\n{\"op\":\"warp\"}\n");
    let orphan = s.write(
        "orphan.jsonl",
        b"{\"op\":\"bind\",\"bo\":3,\"offset\":0,\"size\":4096,\"prot\":\"rw\",\"iova\":4096}\n",
    );
    for (path, words) in [
        (junk.to_str().unwrap(), "line 2: not a trace event"),
        (orphan.to_str().unwrap(), "line 1: BO 3 was never allocated"),
        ("/nonexistent.jsonl", "cannot read"),
    ] {
        let out = devmmu(&["replay", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert_eq!(stderr.matches('\n').count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("devmmu replay: ") && stderr.contains(words),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}
