//! Real-kernel tier: the main job, `devmmu camera --platform vfio`, end to end in the guest:
//! the ISP's DMA engine is edu through VFIO, every frame is written through devmmu's IOPTEs
//! (the walk fetching every entry by DMA) and checked byte for byte by the command itself.

use std::process::Command;

fn camera(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_devmmu"))
        .arg("camera")
        .args(["--platform", "vfio"])
        .args(args)
        .output()
        .expect("run devmmu");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_camera_vfio_ipu() {
    let png = std::env::temp_dir().join("devmmu-kernel-camera.png");
    let _ = std::fs::remove_file(&png);
    let (rc, out, err) = camera(&["--output", png.to_str().unwrap()]);
    print!("{out}");
    assert_eq!(rc, 0, "stderr: {err}");
    assert!(out.contains("frames matched: 8/8"), "{out}");
    assert!(out.contains("vfio DMA"), "{out}");
    let bytes = std::fs::read(&png).expect("the --output PNG");
    assert_eq!(&bytes[1..4], b"PNG");
    println!(
        "camera: --platform vfio (ipu): 8/8 frames byte-exact, PNG of {} bytes",
        bytes.len()
    );
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_camera_vfio_arm_json() {
    let (rc, out, err) = camera(&["--mmu", "arm-lpae-4k", "--frames", "4", "--json"]);
    assert_eq!(rc, 0, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["platform"], "vfio");
    assert_eq!(v["dma_ops"], "vfio");
    assert_eq!(v["frames_matched"], 4);
    assert_eq!(v["faults"], 0);
    assert!(v["device_dmas"].as_u64().unwrap() > 0);
    println!(
        "camera: --platform vfio --mmu arm-lpae-4k: 4/4 frames byte-exact, {} edu DMAs, {} \
         IOPTE stores",
        v["device_dmas"], v["iopte_stores"]
    );
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_camera_vfio_refuses_a_large_input() {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/astronaut.png");
    let (rc, out, err) = camera(&["--input", chart]);
    assert_eq!(rc, 2, "stdout: {out}");
    assert!(err.contains("too large for edu"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
