//! The GPU stage: Vulkan (through [`ash`]) importing devmmu BOs as external memory and running
//! a compute shader on them.
//!
//! A BO's exported fd becomes Vulkan memory by one of two paths, chosen at [`Gpu::new`]:
//! - dma-buf ([`ImportPath::DmaBuf`]), `VK_EXT_external_memory_dma_buf` with `VK_KHR_external_memory_fd`
//!   (`VkImportMemoryFdInfoKHR`, handle type `DMA_BUF_BIT_EXT`; the driver takes ownership of
//!   the fd it is given, so a duplicate is passed). The way a Vulkan driver imports a buffer
//!   from a camera or a display; Mesa's lavapipe (a CPU driver) maps the fd, so it accepts the
//!   sealed memfd devmmu exports where the kernel has no udmabuf.
//! - host pointer ([`ImportPath::HostPointer`]), `VK_EXT_external_memory_host`
//!   (`VkImportMemoryHostPointerInfoEXT`): the fd is mapped here and the mapping imported.
//!
//! The buffer is bound whole to a `VkBuffer` (`VkExternalMemoryBufferCreateInfo` naming the
//! handle type) used as a storage buffer. The shader ([`SHADER_WGSL`]) is WGSL compiled to
//! SPIR-V by [`naga`] when the [`Gpu`] is made, and validated by naga first.
//!
//! Synchronization is two timeline semaphores (Vulkan 1.2 core): a submission waits for the
//! *gate* to reach its value (signalled from the host, [`Gpu::open_gate`], when the inputs are
//! ready) and signals the *done* timeline when it completes ([`Gpu::wait_done`]). The driver
//! never reads a result before `wait_done` returned for it.

use std::ffi::{c_char, CStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use ash::vk;

/// The compute shader: NV12 to XRGB8888, BT.601 limited range, integer arithmetic identical
/// to [`crate::sensor::nv12_to_rgb`], so the result is byte-exact.
pub const SHADER_WGSL: &str = include_str!("nv12_to_xrgb.wgsl");

/// Workgroup size of the shader in x and y (8x8 invocations, one per pixel).
pub const WORKGROUP: u32 = 8;

/// How a BO's fd becomes Vulkan memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ImportPath {
    /// `VK_EXT_external_memory_dma_buf`: the fd itself is imported.
    #[serde(rename = "VK_EXT_external_memory_dma_buf")]
    DmaBuf,
    /// `VK_EXT_external_memory_host`: a mapping of the fd is imported.
    #[serde(rename = "VK_EXT_external_memory_host")]
    HostPointer,
}

impl ImportPath {
    /// The extension's name.
    pub fn extension(self) -> &'static str {
        match self {
            ImportPath::DmaBuf => "VK_EXT_external_memory_dma_buf",
            ImportPath::HostPointer => "VK_EXT_external_memory_host",
        }
    }
}

/// Which import path to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ImportChoice {
    /// dma-buf where the device offers it, host pointer otherwise.
    #[default]
    Auto,
    /// `VK_EXT_external_memory_dma_buf` only.
    DmaBuf,
    /// `VK_EXT_external_memory_host` only.
    Host,
}

/// Why the GPU stage failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No Vulkan loader (libvulkan.so.1) could be opened.
    #[error("no Vulkan loader: {0}")]
    NoLoader(String),
    /// No physical device has a compute queue, Vulkan 1.2 timeline semaphores and the import
    /// extension asked for.
    #[error("no Vulkan device with compute, timeline semaphores and {wanted}")]
    NoDevice {
        /// What was looked for.
        wanted: &'static str,
    },
    /// A Vulkan call failed.
    #[error("{call}: {result}")]
    Vk {
        /// The Vulkan function.
        call: &'static str,
        /// Its result.
        result: vk::Result,
    },
    /// The shader did not compile or validate (a bug in [`SHADER_WGSL`]).
    #[error("shader: {0}")]
    Shader(String),
    /// The fd cannot be imported: no memory type fits, or a host mapping failed.
    #[error("import: {0}")]
    Import(String),
    /// [`Gpu::wait_done`] timed out.
    #[error("GPU work {value} not done within {ms} ms")]
    Timeout {
        /// The value waited for.
        value: u64,
        /// The timeout, in milliseconds.
        ms: u64,
    },
}

fn vkerr(call: &'static str) -> impl Fn(vk::Result) -> GpuError {
    move |result| GpuError::Vk { call, result }
}

/// Compiles [`SHADER_WGSL`] to SPIR-V words with naga (validated first).
///
/// # Errors
/// [`GpuError::Shader`] with naga's message.
pub fn compile_shader() -> Result<Vec<u32>, GpuError> {
    let module = naga::front::wgsl::parse_str(SHADER_WGSL)
        .map_err(|e| GpuError::Shader(e.emit_to_string(SHADER_WGSL)))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::PUSH_CONSTANT,
    )
    .validate(&module)
    .map_err(|e| GpuError::Shader(e.emit_to_string(SHADER_WGSL)))?;
    let options = naga::back::spv::Options {
        lang_version: (1, 3),
        flags: naga::back::spv::WriterFlags::empty(),
        ..Default::default()
    };
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| GpuError::Shader(e.to_string()))
}

/// The shader's push constants: where the planes are, in bytes (the WGSL `Params`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ConvertParams {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Offset of the NV12 Y plane in the source BO.
    pub y_offset: u32,
    /// Stride of the Y plane.
    pub y_stride: u32,
    /// Offset of the CbCr plane.
    pub c_offset: u32,
    /// Stride of the CbCr plane.
    pub c_stride: u32,
    /// Offset of the XRGB8888 plane in the destination BO (a multiple of 4).
    pub out_offset: u32,
    /// Stride of the XRGB8888 plane (a multiple of 4).
    pub out_stride: u32,
}

impl ConvertParams {
    fn bytes(&self) -> [u8; 32] {
        let words = [
            self.width,
            self.height,
            self.y_offset,
            self.y_stride,
            self.c_offset,
            self.c_stride,
            self.out_offset,
            self.out_stride,
        ];
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        out
    }
}

/// An imported buffer, by index into the [`Gpu`]'s table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferId(usize);

/// A recorded conversion (a command buffer and its descriptor set), by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobId(usize);

struct Imported {
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    size: u64,
    // The host path's mapping: must outlive the Vulkan memory made from it.
    _map: Option<memmap2::MmapRaw>,
}

/// A Vulkan device running the NV12-to-XRGB8888 compute shader on imported BOs.
pub struct Gpu {
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    queue: vk::Queue,
    fd_ext: Option<ash::khr::external_memory_fd::Device>,
    host_ext: Option<ash::ext::external_memory_host::Device>,
    host_align: u64,
    memory_props: vk::PhysicalDeviceMemoryProperties,
    path: ImportPath,
    device_name: String,
    driver_info: String,
    shader: vk::ShaderModule,
    set_layout: vk::DescriptorSetLayout,
    pipeline_layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
    descriptor_pool: vk::DescriptorPool,
    command_pool: vk::CommandPool,
    gate: vk::Semaphore,
    done: vk::Semaphore,
    buffers: Vec<Imported>,
    jobs: Vec<vk::CommandBuffer>,
}

/// The most jobs (descriptor sets) one [`Gpu`] records.
pub const MAX_JOBS: u32 = 64;

impl Gpu {
    /// Opens the Vulkan loader, picks the first device that offers a compute queue, timeline
    /// semaphores and the import path `choice` asks for, and builds the compute pipeline.
    ///
    /// # Errors
    /// [`GpuError::NoLoader`], [`GpuError::NoDevice`], [`GpuError::Shader`], [`GpuError::Vk`].
    pub fn new(choice: ImportChoice) -> Result<Gpu, GpuError> {
        // SAFETY: loading libvulkan runs its initialisers; the Vulkan loader is a well-behaved
        // library meant to be dlopen'ed, and the Entry keeps it loaded while any handle lives.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| GpuError::NoLoader(e.to_string()))?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"devmmu")
            .api_version(vk::API_VERSION_1_2);
        let create = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: the create info and what it points to live across the call.
        let instance =
            unsafe { entry.create_instance(&create, None) }.map_err(vkerr("vkCreateInstance"))?;
        // SAFETY (for the destroy calls below): nothing else was created from the instance.
        let picked = match pick_device(&instance, choice) {
            Ok(p) => p,
            Err(e) => {
                unsafe { instance.destroy_instance(None) };
                return Err(e);
            }
        };
        let ext_names: Vec<*const c_char> = match picked.path {
            ImportPath::DmaBuf => vec![
                ash::khr::external_memory_fd::NAME.as_ptr(),
                ash::ext::external_memory_dma_buf::NAME.as_ptr(),
            ],
            ImportPath::HostPointer => vec![ash::ext::external_memory_host::NAME.as_ptr()],
        };
        let priorities = [1.0f32];
        let queue_info = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(picked.family)
            .queue_priorities(&priorities)];
        let mut features12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
        let device_info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queue_info)
            .enabled_extension_names(&ext_names)
            .push_next(&mut features12);
        // SAFETY: the create info and everything it points to live across the call.
        let device = match unsafe { instance.create_device(picked.pdev, &device_info, None) } {
            Ok(d) => d,
            Err(e) => {
                // SAFETY: nothing else was created from the instance.
                unsafe { instance.destroy_instance(None) };
                return Err(vkerr("vkCreateDevice")(e));
            }
        };
        // SAFETY: pdev comes from this instance.
        let memory_props = unsafe { instance.get_physical_device_memory_properties(picked.pdev) };
        // SAFETY: the family was created with one queue.
        let queue = unsafe { device.get_device_queue(picked.family, 0) };
        let (fd_ext, host_ext) = match picked.path {
            ImportPath::DmaBuf => (
                Some(ash::khr::external_memory_fd::Device::new(
                    &instance, &device,
                )),
                None,
            ),
            ImportPath::HostPointer => (
                None,
                Some(ash::ext::external_memory_host::Device::new(
                    &instance, &device,
                )),
            ),
        };
        let mut gpu = Gpu {
            _entry: entry,
            instance,
            device,
            queue,
            fd_ext,
            host_ext,
            host_align: picked.host_align,
            memory_props,
            path: picked.path,
            device_name: picked.device_name,
            driver_info: picked.driver_info,
            shader: vk::ShaderModule::null(),
            set_layout: vk::DescriptorSetLayout::null(),
            pipeline_layout: vk::PipelineLayout::null(),
            pipeline: vk::Pipeline::null(),
            descriptor_pool: vk::DescriptorPool::null(),
            command_pool: vk::CommandPool::null(),
            gate: vk::Semaphore::null(),
            done: vk::Semaphore::null(),
            buffers: Vec::new(),
            jobs: Vec::new(),
        };
        // On error, `gpu`'s Drop destroys whatever was made (null handles are skipped by
        // Vulkan's destroy functions), then the device and the instance.
        gpu.build(picked.family)?;
        Ok(gpu)
    }

    fn build(&mut self, family: u32) -> Result<(), GpuError> {
        let d = &self.device;
        let code = compile_shader()?;
        let info = vk::ShaderModuleCreateInfo::default().code(&code);
        // SAFETY: valid device; the SPIR-V was validated by naga.
        self.shader = unsafe { d.create_shader_module(&info, None) }
            .map_err(vkerr("vkCreateShaderModule"))?;
        let bindings = [0, 1].map(|b| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(b)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        });
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: valid device and create info.
        self.set_layout = unsafe { d.create_descriptor_set_layout(&info, None) }
            .map_err(vkerr("vkCreateDescriptorSetLayout"))?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .size(32)];
        let layouts = [self.set_layout];
        let info = vk::PipelineLayoutCreateInfo::default()
            .set_layouts(&layouts)
            .push_constant_ranges(&ranges);
        // SAFETY: as above.
        self.pipeline_layout = unsafe { d.create_pipeline_layout(&info, None) }
            .map_err(vkerr("vkCreatePipelineLayout"))?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(self.shader)
            .name(c"main");
        let info = [vk::ComputePipelineCreateInfo::default()
            .stage(stage)
            .layout(self.pipeline_layout)];
        // SAFETY: as above.
        self.pipeline =
            unsafe { d.create_compute_pipelines(vk::PipelineCache::null(), &info, None) }
                .map_err(|(_, e)| vkerr("vkCreateComputePipelines")(e))?[0];
        let sizes = [vk::DescriptorPoolSize::default()
            .ty(vk::DescriptorType::STORAGE_BUFFER)
            .descriptor_count(2 * MAX_JOBS)];
        let info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(MAX_JOBS)
            .pool_sizes(&sizes);
        // SAFETY: as above.
        self.descriptor_pool = unsafe { d.create_descriptor_pool(&info, None) }
            .map_err(vkerr("vkCreateDescriptorPool"))?;
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(family);
        // SAFETY: as above.
        self.command_pool =
            unsafe { d.create_command_pool(&info, None) }.map_err(vkerr("vkCreateCommandPool"))?;
        for sem in [&mut self.gate, &mut self.done] {
            let mut ty = vk::SemaphoreTypeCreateInfo::default()
                .semaphore_type(vk::SemaphoreType::TIMELINE)
                .initial_value(0);
            let info = vk::SemaphoreCreateInfo::default().push_next(&mut ty);
            // SAFETY: as above.
            *sem =
                unsafe { d.create_semaphore(&info, None) }.map_err(vkerr("vkCreateSemaphore"))?;
        }
        Ok(())
    }
}

struct Picked {
    pdev: vk::PhysicalDevice,
    path: ImportPath,
    family: u32,
    device_name: String,
    driver_info: String,
    host_align: u64,
}

/// The first physical device with Vulkan 1.2, a compute queue and the import path `choice` asks
/// for.
fn pick_device(instance: &ash::Instance, choice: ImportChoice) -> Result<Picked, GpuError> {
    let wanted = match choice {
        ImportChoice::Auto => "VK_EXT_external_memory_dma_buf or VK_EXT_external_memory_host",
        ImportChoice::DmaBuf => "VK_EXT_external_memory_dma_buf",
        ImportChoice::Host => "VK_EXT_external_memory_host",
    };
    // SAFETY: the instance is valid.
    let pdevs = unsafe { instance.enumerate_physical_devices() }
        .map_err(vkerr("vkEnumeratePhysicalDevices"))?;
    for pdev in pdevs {
        // SAFETY: pdev comes from this instance (and below).
        let props = unsafe { instance.get_physical_device_properties(pdev) };
        if props.api_version < vk::API_VERSION_1_2 {
            continue;
        }
        // SAFETY: as above.
        let exts =
            unsafe { instance.enumerate_device_extension_properties(pdev) }.unwrap_or_default();
        let has = |name: &CStr| exts.iter().any(|e| e.extension_name_as_c_str() == Ok(name));
        let dma_buf =
            has(ash::ext::external_memory_dma_buf::NAME) && has(ash::khr::external_memory_fd::NAME);
        let host = has(ash::ext::external_memory_host::NAME);
        let path = match choice {
            ImportChoice::Auto if dma_buf => ImportPath::DmaBuf,
            ImportChoice::Auto if host => ImportPath::HostPointer,
            ImportChoice::DmaBuf if dma_buf => ImportPath::DmaBuf,
            ImportChoice::Host if host => ImportPath::HostPointer,
            _ => continue,
        };
        // SAFETY: as above.
        let families = unsafe { instance.get_physical_device_queue_family_properties(pdev) };
        let Some(family) = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
        else {
            continue;
        };
        let mut driver_props = vk::PhysicalDeviceDriverProperties::default();
        let mut host_props = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver_props);
        if path == ImportPath::HostPointer {
            props2 = props2.push_next(&mut host_props);
        }
        // SAFETY: the chain's structs live across the call; the host-properties struct is only
        // chained when the extension exists.
        unsafe { instance.get_physical_device_properties2(pdev, &mut props2) };
        let text = |s: Result<&CStr, _>| {
            s.map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        return Ok(Picked {
            pdev,
            path,
            family: family as u32,
            device_name: text(props.device_name_as_c_str()),
            driver_info: format!(
                "{} {}",
                text(driver_props.driver_name_as_c_str()),
                text(driver_props.driver_info_as_c_str())
            ),
            host_align: host_props.min_imported_host_pointer_alignment.max(1),
        });
    }
    Err(GpuError::NoDevice { wanted })
}

impl Gpu {
    /// The import path in use.
    pub fn import_path(&self) -> ImportPath {
        self.path
    }

    /// The Vulkan device's name (`VkPhysicalDeviceProperties::deviceName`), e.g.
    /// `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The driver's name and version (`VkPhysicalDeviceDriverProperties`).
    pub fn driver_info(&self) -> &str {
        &self.driver_info
    }

    /// Imports `size` bytes of the memory `fd` names (a BO's exported fd) and binds them to a
    /// storage buffer. `size` is in bytes, a multiple of 4 KiB (a BO's size). The fd is not
    /// consumed: a duplicate goes to the driver (dma-buf path) or it is mapped here (host path).
    ///
    /// # Errors
    /// [`GpuError::Import`] if the fd is smaller than `size`, no memory type accepts it or the
    /// mapping fails;
    /// [`GpuError::Vk`] if a Vulkan call fails. Nothing is left allocated on error.
    pub fn import(&mut self, fd: BorrowedFd<'_>, size: u64) -> Result<BufferId, GpuError> {
        // Checked before anything is trusted: a mapping past the end of a memfd maps, and the
        // first access to it is a SIGBUS. `lseek(SEEK_END)` gives the size of a memfd and of a
        // dma-buf alike (the dma-buf's file position is left at the end; nothing reads it).
        let fd_size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| GpuError::Import(format!("the fd's size: {e}")))?;
        if fd_size < size {
            return Err(GpuError::Import(format!(
                "the fd holds {fd_size} bytes, {size} were asked for"
            )));
        }
        let d = &self.device;
        let handle_type = match self.path {
            ImportPath::DmaBuf => vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT,
            ImportPath::HostPointer => vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
        };
        let mut ext_info = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle_type);
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::STORAGE_BUFFER)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut ext_info);
        // SAFETY: valid device and create info.
        let buffer = unsafe { d.create_buffer(&info, None) }.map_err(vkerr("vkCreateBuffer"))?;
        let result = self.import_memory(fd, size, buffer);
        match result {
            Ok((memory, map)) => {
                self.buffers.push(Imported {
                    buffer,
                    memory,
                    size,
                    _map: map,
                });
                Ok(BufferId(self.buffers.len() - 1))
            }
            Err(e) => {
                // SAFETY: the buffer is unbound and unused.
                unsafe { self.device.destroy_buffer(buffer, None) };
                Err(e)
            }
        }
    }

    fn import_memory(
        &self,
        fd: BorrowedFd<'_>,
        size: u64,
        buffer: vk::Buffer,
    ) -> Result<(vk::DeviceMemory, Option<memmap2::MmapRaw>), GpuError> {
        let d = &self.device;
        // SAFETY: valid buffer.
        let reqs = unsafe { d.get_buffer_memory_requirements(buffer) };
        if reqs.size > size {
            return Err(GpuError::Import(format!(
                "the buffer needs {} bytes, the fd has {size}",
                reqs.size
            )));
        }
        let (memory, map) = match self.path {
            ImportPath::DmaBuf => {
                let ext = self
                    .fd_ext
                    .as_ref()
                    .ok_or(GpuError::Import("no fd extension".into()))?;
                let mut fd_props = vk::MemoryFdPropertiesKHR::default();
                // SAFETY: fd is open for the call.
                unsafe {
                    ext.get_memory_fd_properties(
                        vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT,
                        fd.as_raw_fd(),
                        &mut fd_props,
                    )
                }
                .map_err(vkerr("vkGetMemoryFdPropertiesKHR"))?;
                let type_index =
                    self.memory_type(reqs.memory_type_bits & fd_props.memory_type_bits)?;
                // The driver owns the fd it is given once the import succeeds, and (lavapipe)
                // closes it even when the import fails: give it a duplicate, never ours.
                let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)
                    .map_err(|e| GpuError::Import(format!("dup: {e}")))?;
                let mut import = vk::ImportMemoryFdInfoKHR::default()
                    .handle_type(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT)
                    .fd(std::os::fd::IntoRawFd::into_raw_fd(dup));
                let info = vk::MemoryAllocateInfo::default()
                    .allocation_size(size)
                    .memory_type_index(type_index)
                    .push_next(&mut import);
                // SAFETY: valid device; the imported fd is a duplicate the driver now owns.
                let memory = unsafe { d.allocate_memory(&info, None) }
                    .map_err(vkerr("vkAllocateMemory(dma-buf import)"))?;
                (memory, None)
            }
            ImportPath::HostPointer => {
                let ext = self
                    .host_ext
                    .as_ref()
                    .ok_or(GpuError::Import("no host-memory extension".into()))?;
                if !size.is_multiple_of(self.host_align) {
                    return Err(GpuError::Import(format!(
                        "{size} bytes is not a multiple of the host-pointer alignment {}",
                        self.host_align
                    )));
                }
                let map = memmap2::MmapOptions::new()
                    .len(size as usize)
                    .map_raw(&fd)
                    .map_err(|e| GpuError::Import(format!("mmap: {e}")))?;
                let ptr = map.as_mut_ptr().cast::<std::ffi::c_void>();
                let mut host_props = vk::MemoryHostPointerPropertiesEXT::default();
                // SAFETY: ptr is a live mapping of `size` bytes, page-aligned; ash has no
                // wrapper for this function, so its pointer is called with the device handle.
                unsafe {
                    (ext.fp().get_memory_host_pointer_properties_ext)(
                        ext.device(),
                        vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
                        ptr,
                        &mut host_props,
                    )
                }
                .result()
                .map_err(vkerr("vkGetMemoryHostPointerPropertiesEXT"))?;
                let type_index =
                    self.memory_type(reqs.memory_type_bits & host_props.memory_type_bits)?;
                let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
                    .handle_type(vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT)
                    .host_pointer(ptr);
                let info = vk::MemoryAllocateInfo::default()
                    .allocation_size(size)
                    .memory_type_index(type_index)
                    .push_next(&mut import);
                // SAFETY: the mapping lives in `Imported` as long as the memory does.
                let memory = unsafe { d.allocate_memory(&info, None) }
                    .map_err(vkerr("vkAllocateMemory(host-pointer import)"))?;
                (memory, Some(map))
            }
        };
        // SAFETY: buffer and memory are valid, the memory is at least reqs.size bytes.
        if let Err(e) = unsafe { d.bind_buffer_memory(buffer, memory, 0) } {
            // SAFETY: the memory is unbound.
            unsafe { d.free_memory(memory, None) };
            return Err(vkerr("vkBindBufferMemory")(e));
        }
        Ok((memory, map))
    }

    fn memory_type(&self, bits: u32) -> Result<u32, GpuError> {
        (0..self.memory_props.memory_type_count)
            .find(|i| bits & (1 << i) != 0)
            .ok_or_else(|| GpuError::Import(format!("no memory type in mask {bits:#x}")))
    }

    /// Records the conversion of the NV12 image in `src` to XRGB8888 in `dst`, as described by
    /// `params`, into a reusable command buffer: dispatch, then a barrier making the shader's
    /// writes available to the host.
    ///
    /// # Errors
    /// [`GpuError::Import`] if the planes do not fit the buffers; [`GpuError::Vk`].
    pub fn record(
        &mut self,
        src: BufferId,
        dst: BufferId,
        params: ConvertParams,
    ) -> Result<JobId, GpuError> {
        let (s, t) = (&self.buffers[src.0], &self.buffers[dst.0]);
        let src_end = u64::from(params.c_offset)
            + u64::from(params.c_stride) * u64::from(params.height.div_ceil(2));
        let dst_end =
            u64::from(params.out_offset) + u64::from(params.out_stride) * u64::from(params.height);
        if src_end > s.size || dst_end > t.size || !params.out_stride.is_multiple_of(4) {
            return Err(GpuError::Import(format!(
                "planes end at {src_end} and {dst_end} bytes, buffers are {} and {}",
                s.size, t.size
            )));
        }
        let d = &self.device;
        let layouts = [self.set_layout];
        let info = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(self.descriptor_pool)
            .set_layouts(&layouts);
        // SAFETY: valid pool (at most MAX_JOBS sets; the call fails beyond).
        let set = unsafe { d.allocate_descriptor_sets(&info) }
            .map_err(vkerr("vkAllocateDescriptorSets"))?[0];
        let infos = [s.buffer, t.buffer].map(|b| {
            [vk::DescriptorBufferInfo::default()
                .buffer(b)
                .offset(0)
                .range(vk::WHOLE_SIZE)]
        });
        let writes = [0, 1].map(|i| {
            vk::WriteDescriptorSet::default()
                .dst_set(set)
                .dst_binding(i as u32)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .buffer_info(&infos[i])
        });
        // SAFETY: the set and buffers are valid.
        unsafe { d.update_descriptor_sets(&writes, &[]) };
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: valid pool.
        let cb = unsafe { d.allocate_command_buffers(&info) }
            .map_err(vkerr("vkAllocateCommandBuffers"))?[0];
        // SAFETY: the command buffer is new and recorded once, here, on this thread.
        unsafe {
            d.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default())
                .map_err(vkerr("vkBeginCommandBuffer"))?;
            d.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, self.pipeline);
            d.cmd_bind_descriptor_sets(
                cb,
                vk::PipelineBindPoint::COMPUTE,
                self.pipeline_layout,
                0,
                &[set],
                &[],
            );
            d.cmd_push_constants(
                cb,
                self.pipeline_layout,
                vk::ShaderStageFlags::COMPUTE,
                0,
                &params.bytes(),
            );
            d.cmd_dispatch(
                cb,
                params.width.div_ceil(WORKGROUP),
                params.height.div_ceil(WORKGROUP),
                1,
            );
            let barrier = [vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::SHADER_WRITE)
                .dst_access_mask(vk::AccessFlags::HOST_READ)];
            d.cmd_pipeline_barrier(
                cb,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &barrier,
                &[],
                &[],
            );
            d.end_command_buffer(cb)
                .map_err(vkerr("vkEndCommandBuffer"))?;
        }
        self.jobs.push(cb);
        Ok(JobId(self.jobs.len() - 1))
    }

    /// Submits `job`: it starts once the gate reaches `gate` (if given) and signals the done
    /// timeline to `done` when it completes. `done` must be above every value signalled before;
    /// the job must not still be running from an earlier submission (wait for its `done` first).
    ///
    /// # Errors
    /// [`GpuError::Vk`] (`vkQueueSubmit`).
    pub fn submit(&mut self, job: JobId, gate: Option<u64>, done: u64) -> Result<(), GpuError> {
        let cbs = [self.jobs[job.0]];
        let signal = [self.done];
        let signal_values = [done];
        let wait = [self.gate];
        let wait_values = [gate.unwrap_or(0)];
        let stages = [vk::PipelineStageFlags::COMPUTE_SHADER];
        let n_wait = usize::from(gate.is_some());
        let mut timeline = vk::TimelineSemaphoreSubmitInfo::default()
            .wait_semaphore_values(&wait_values[..n_wait])
            .signal_semaphore_values(&signal_values);
        let submit = [vk::SubmitInfo::default()
            .command_buffers(&cbs)
            .wait_semaphores(&wait[..n_wait])
            .wait_dst_stage_mask(&stages[..n_wait])
            .signal_semaphores(&signal)
            .push_next(&mut timeline)];
        // SAFETY: `&mut self` serialises queue access; the command buffer is not pending
        // (the caller's contract, documented above).
        unsafe {
            self.device
                .queue_submit(self.queue, &submit, vk::Fence::null())
        }
        .map_err(vkerr("vkQueueSubmit"))
    }

    /// Signals the gate to `value` from the host (`vkSignalSemaphore`): submissions waiting for
    /// it may start.
    ///
    /// # Errors
    /// [`GpuError::Vk`].
    pub fn open_gate(&self, value: u64) -> Result<(), GpuError> {
        let info = vk::SemaphoreSignalInfo::default()
            .semaphore(self.gate)
            .value(value);
        // SAFETY: valid timeline semaphore; values only grow (the caller's frame numbers).
        unsafe { self.device.signal_semaphore(&info) }.map_err(vkerr("vkSignalSemaphore"))
    }

    /// Waits until the done timeline reaches `value` (`vkWaitSemaphores`), for at most
    /// `timeout`: the jobs submitted with done values up to `value` have completed and their
    /// writes are visible to the host.
    ///
    /// # Errors
    /// [`GpuError::Timeout`]; [`GpuError::Vk`].
    pub fn wait_done(&self, value: u64, timeout: Duration) -> Result<(), GpuError> {
        let sems = [self.done];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default()
            .semaphores(&sems)
            .values(&values);
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: valid semaphore.
        match unsafe { self.device.wait_semaphores(&info, ns) } {
            Ok(()) => Ok(()),
            Err(vk::Result::TIMEOUT) => Err(GpuError::Timeout {
                value,
                ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            }),
            Err(e) => Err(vkerr("vkWaitSemaphores")(e)),
        }
    }

    /// The done timeline's current value (`vkGetSemaphoreCounterValue`).
    ///
    /// # Errors
    /// [`GpuError::Vk`].
    pub fn done_value(&self) -> Result<u64, GpuError> {
        // SAFETY: valid semaphore.
        unsafe { self.device.get_semaphore_counter_value(self.done) }
            .map_err(vkerr("vkGetSemaphoreCounterValue"))
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: after the device is idle no handle is in use; each was made from this device
        // (or is null, which every vkDestroy*/vkFree* accepts), and is destroyed once.
        unsafe {
            let d = &self.device;
            let _ = d.device_wait_idle();
            if !self.jobs.is_empty() {
                d.free_command_buffers(self.command_pool, &self.jobs);
            }
            for b in self.buffers.drain(..) {
                d.destroy_buffer(b.buffer, None);
                d.free_memory(b.memory, None);
            }
            d.destroy_semaphore(self.gate, None);
            d.destroy_semaphore(self.done, None);
            d.destroy_command_pool(self.command_pool, None);
            d.destroy_descriptor_pool(self.descriptor_pool, None);
            d.destroy_pipeline(self.pipeline, None);
            d.destroy_pipeline_layout(self.pipeline_layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
            d.destroy_shader_module(self.shader, None);
            d.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shader_compiles_and_validates() {
        let words = compile_shader().unwrap();
        assert_eq!(words[0], 0x0723_0203, "SPIR-V magic number");
    }
}
