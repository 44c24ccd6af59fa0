//! Real-kernel tier: `devmmu pipeline` in the guest, where the kernel has udmabuf, so every BO
//! travels as a real dma-buf: exported by devmmu through `/dev/udmabuf`, imported by Mesa's
//! lavapipe with `VK_EXT_external_memory_dma_buf` (and, for the host path, mapped through the
//! dma-buf's own mmap), each frame checked byte for byte.

use devmmu_tools::gpu::ImportChoice;
use devmmu_tools::pipeline::{run_pipeline, PipelineArgs};

fn tiny_input() -> std::path::PathBuf {
    let p = std::env::temp_dir().join("devmmu-kernel-pipeline.png");
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
    })
    .save(&p)
    .expect("write the input");
    p
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_pipeline_with_real_dma_bufs() {
    for import in [ImportChoice::DmaBuf, ImportChoice::Host] {
        let args = PipelineArgs {
            input: Some(tiny_input()),
            frames: 4,
            mmu: devmmu_mm::device::MmuFormat::Ipu,
            coherent: false,
            import,
            output: None,
            va_map: None,
            json: false,
            omit: None,
        };
        let r = run_pipeline(&args).expect("the pipeline runs in the guest");
        assert_eq!(r.fd_kind, "dma-buf", "udmabuf is in the guest's kernel");
        assert!(
            r.all_match && r.faults == 0,
            "{}/{}: {:?}",
            r.frames_matched,
            r.frames,
            r.first_mismatch
        );
        println!(
            "pipeline: {} frames of {}x{} byte-exact, BOs shared as real dma-bufs (udmabuf), \
             imported by {} with {}",
            r.frames,
            r.width,
            r.height,
            r.vulkan_device,
            r.import_path.extension()
        );
    }
}
