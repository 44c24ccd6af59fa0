/*
 * The whole flow of devmmu's C interface, as a C driver would use it: two files, a BO, a VM,
 * a bind with an operations array, a device write, BO_SYNC, a read through the CPU mapping,
 * PRIME export and import into the second file (the same object, its own handle), a partial
 * unbind, closing everything, and a leak check.
 *
 * Built and run by uapi/tests/c_flow.rs against the static library. Prints one "ok: ..." line
 * per check; exits 1 at the first mismatch, naming it.
 */
#include <devmmu.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KIB 1024ull
#define BO_SIZE (64 * KIB)
#define VA_A 0x100000ull /* first half of the BO */
#define VA_B 0x200000ull /* second half */

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAILED: %s\n", what);
        exit(1);
    }
    printf("ok: %s\n", what);
}

/* Runs a request that must succeed. */
static void req(int file, uint32_t request, void *arg, const char *what)
{
    int r = devmmu_ioctl(file, request, arg);
    if (r != 0) {
        printf("FAILED: %s returned %d\n", what, r);
        exit(1);
    }
}

static uint64_t param(int file, uint32_t which)
{
    struct devmmu_get_param p = { .param = which };
    req(file, DEVMMU_IOCTL_GET_PARAM, &p, "GET_PARAM");
    return p.value;
}

static int device_access(int file, uint32_t vm, uint32_t op, uint64_t va, void *buf, uint64_t n)
{
    struct devmmu_device_access a = {
        .vm_id = vm, .op = op, .va = va, .data = (uint64_t)(uintptr_t)buf, .size = n,
    };
    return devmmu_ioctl(file, DEVMMU_IOCTL_DEVICE_ACCESS, &a);
}

static void sync_bo(int file, uint32_t handle, uint32_t flags)
{
    struct devmmu_bo_sync s = { .handle = handle, .flags = flags };
    req(file, DEVMMU_IOCTL_BO_SYNC, &s, "BO_SYNC");
}

static uint64_t object_id(int file, uint32_t handle)
{
    struct devmmu_bo_info info = { .handle = handle };
    req(file, DEVMMU_IOCTL_BO_INFO, &info, "BO_INFO");
    check(info.size == BO_SIZE, "BO_INFO reports the BO's size");
    return info.object_id;
}

static unsigned char *map_bo(int file, uint32_t handle, uint32_t prot)
{
    struct devmmu_bo_mmap m = { .handle = handle };
    void *p = NULL;
    req(file, DEVMMU_IOCTL_BO_MMAP, &m, "BO_MMAP");
    check(devmmu_mmap(file, m.offset, BO_SIZE, prot, &p) == 0 && p != NULL, "devmmu_mmap maps the BO");
    return p;
}

int main(void)
{
    int f1 = devmmu_open(DEVMMU_DEVICE_GPU, 0);
    int f2 = devmmu_open(DEVMMU_DEVICE_GPU, 0);
    check(f1 > 0 && f2 > 0 && f1 != f2, "two files open");
    check(devmmu_open(99, 0) == -EINVAL, "an unknown device is refused");

    check(param(f1, DEVMMU_PARAM_MMU_FORMAT) == DEVMMU_MMU_ARM_LPAE_4K, "the GPU has an ARM LPAE MMU");
    check(param(f1, DEVMMU_PARAM_PAGE_SIZE) == 4096, "pages are 4 KiB");
    check(param(f1, DEVMMU_PARAM_VA_START) <= VA_A && param(f1, DEVMMU_PARAM_VA_END) > VA_B,
          "the VA range holds the chosen VAs");
    uint64_t live_before = param(f1, DEVMMU_PARAM_LIVE_BOS);

    /* A BO and a VM in file 1. */
    struct devmmu_bo_create create = { .size = BO_SIZE, .flags = DEVMMU_BO_CACHED };
    req(f1, DEVMMU_IOCTL_BO_CREATE, &create, "BO_CREATE");
    uint32_t h1 = create.handle;
    check(h1 != 0, "BO_CREATE returns a handle");
    /* An NV12 image of 1280x720 under the scanout pitch rule: the Y plane of 720 rows of
     * 1280 bytes, the CbCr plane on the next 4096-byte boundary: 921600 = 225 pages exactly. */
    struct devmmu_bo_create_image img = {
        .width = 1280, .height = 720, .fourcc = 0x3231564e /* DRM_FORMAT_NV12, 'NV12' */,
        .pitch_rule = DEVMMU_PITCH_RULE_SCANOUT, .modifier = 0 /* DRM_FORMAT_MOD_LINEAR */,
    };
    req(f1, DEVMMU_IOCTL_BO_CREATE_IMAGE, &img, "BO_CREATE_IMAGE");
    check(img.handle != 0 && img.num_planes == 2, "BO_CREATE_IMAGE: two planes");
    check(img.pitches[0] == 1280 && img.pitches[1] == 1280, "NV12 pitches");
    check(img.offsets[0] == 0 && img.offsets[1] == 921600, "NV12 offsets");
    check(img.size == 921600 + 1280 * 360 + 2048, "NV12 size, rounded up to a page (338 pages)");
    struct devmmu_gem_close imgclose = { .handle = img.handle };
    req(f1, DEVMMU_IOCTL_GEM_CLOSE, &imgclose, "GEM_CLOSE image");
    struct devmmu_bo_create_image tiled = img;
    tiled.modifier = 1ull << 56 | 1; /* I915_FORMAT_MOD_X_TILED */
    check(devmmu_ioctl(f1, DEVMMU_IOCTL_BO_CREATE_IMAGE, &tiled) == -EINVAL,
          "a tiled modifier is refused");

    struct devmmu_vm_create vmc = { 0 };
    req(f1, DEVMMU_IOCTL_VM_CREATE, &vmc, "VM_CREATE");
    uint32_t vm1 = vmc.vm_id;

    /* Bind both halves of the BO with one array of two MAP operations. */
    struct devmmu_vm_bind_op ops[2] = {
        { .op = DEVMMU_VM_BIND_OP_MAP, .flags = DEVMMU_VM_BIND_READ | DEVMMU_VM_BIND_WRITE,
          .handle = h1, .bo_offset = 0, .va = VA_A, .size = BO_SIZE / 2 },
        { .op = DEVMMU_VM_BIND_OP_MAP, .flags = DEVMMU_VM_BIND_READ | DEVMMU_VM_BIND_WRITE,
          .handle = h1, .bo_offset = BO_SIZE / 2, .va = VA_B, .size = BO_SIZE / 2 },
    };
    struct devmmu_vm_bind bind = {
        .vm_id = vm1, .op_count = 2, .op_stride = sizeof(ops[0]), .ops = (uint64_t)(uintptr_t)ops,
    };
    req(f1, DEVMMU_IOCTL_VM_BIND, &bind, "VM_BIND (2 MAPs)");
    check(param(f1, DEVMMU_PARAM_FILE_BINDINGS) == 2, "two bindings");

    /* A bad array changes nothing: the second op overlaps the first binding. */
    struct devmmu_vm_bind_op bad[2] = {
        { .op = DEVMMU_VM_BIND_OP_UNMAP, .va = VA_B, .size = BO_SIZE / 2 },
        { .op = DEVMMU_VM_BIND_OP_MAP, .flags = DEVMMU_VM_BIND_READ, .handle = h1,
          .va = VA_A, .size = 4 * KIB },
    };
    bind.ops = (uint64_t)(uintptr_t)bad;
    check(devmmu_ioctl(f1, DEVMMU_IOCTL_VM_BIND, &bind) == -EEXIST, "an overlapping MAP is -EEXIST");
    check(param(f1, DEVMMU_PARAM_FILE_BINDINGS) == 2, "the refused array unbound nothing");

    /* The device writes through its MMU at both VAs. */
    char msg_a[] = "written by the device at VA_A";
    char msg_b[] = "and this one at VA_B";
    check(device_access(f1, vm1, DEVMMU_ACCESS_DEVICE_WRITE, VA_A, msg_a, sizeof msg_a) == 0,
          "device write at VA_A");
    check(device_access(f1, vm1, DEVMMU_ACCESS_DEVICE_WRITE, VA_B, msg_b, sizeof msg_b) == 0,
          "device write at VA_B");

    /* The CPU reads them through its mapping, inside a READ bracket. */
    unsigned char *cpu1 = map_bo(f1, h1, DEVMMU_PROT_READ | DEVMMU_PROT_WRITE);
    check(param(f1, DEVMMU_PARAM_COHERENT) == 0 && cpu1[0] == 0,
          "before BO_SYNC the CPU sees stale memory (the GPU does not snoop the caches)");
    sync_bo(f1, h1, DEVMMU_SYNC_START | DEVMMU_SYNC_READ);
    check(memcmp(cpu1, msg_a, sizeof msg_a) == 0, "the CPU mapping shows the device's write at offset 0");
    check(memcmp(cpu1 + BO_SIZE / 2, msg_b, sizeof msg_b) == 0,
          "the CPU mapping shows the device's write at offset 32 KiB");
    sync_bo(f1, h1, DEVMMU_SYNC_END | DEVMMU_SYNC_READ);

    /* PRIME: export from file 1, import into file 2. */
    struct devmmu_prime_handle exp = { .handle = h1, .flags = DEVMMU_CLOEXEC | DEVMMU_RDWR };
    req(f1, DEVMMU_IOCTL_PRIME_HANDLE_TO_FD, &exp, "PRIME_HANDLE_TO_FD");
    check(exp.fd >= 0, "export gives an fd");
    struct devmmu_prime_handle imp = { .fd = exp.fd };
    req(f2, DEVMMU_IOCTL_PRIME_FD_TO_HANDLE, &imp, "PRIME_FD_TO_HANDLE");
    uint32_t h2 = imp.handle;
    check(h2 != 0, "import gives a handle in file 2");
    check(object_id(f1, h1) == object_id(f2, h2), "both handles name the same object");
    check(param(f1, DEVMMU_PARAM_LIVE_BOS) == live_before + 1, "import made no second BO");
    struct devmmu_bo_info other = { .handle = h2 + 1 };
    check(devmmu_ioctl(f2, DEVMMU_IOCTL_BO_INFO, &other) == -ENOENT, "file 2 has only its own handle");
    struct devmmu_prime_handle again = { .fd = exp.fd };
    req(f2, DEVMMU_IOCTL_PRIME_FD_TO_HANDLE, &again, "PRIME_FD_TO_HANDLE again");
    check(again.handle == h2, "importing again in file 2 gives its existing handle");

    /* File 2 sees the same bytes: through its own mapping, and through its own VM. */
    unsigned char *cpu2 = map_bo(f2, h2, DEVMMU_PROT_READ);
    sync_bo(f2, h2, DEVMMU_SYNC_START | DEVMMU_SYNC_READ);
    check(memcmp(cpu2, msg_a, sizeof msg_a) == 0, "file 2's mapping shows the same bytes");
    sync_bo(f2, h2, DEVMMU_SYNC_END | DEVMMU_SYNC_READ);
    req(f2, DEVMMU_IOCTL_VM_CREATE, &vmc, "VM_CREATE (file 2)");
    uint32_t vm2 = vmc.vm_id;
    struct devmmu_vm_bind_op whole = {
        .op = DEVMMU_VM_BIND_OP_MAP, .flags = DEVMMU_VM_BIND_READ, .handle = h2,
        .va = VA_A, .size = BO_SIZE,
    };
    struct devmmu_vm_bind bind2 = {
        .vm_id = vm2, .op_count = 1, .op_stride = sizeof whole, .ops = (uint64_t)(uintptr_t)&whole,
    };
    req(f2, DEVMMU_IOCTL_VM_BIND, &bind2, "VM_BIND (file 2)");
    char got[64] = { 0 };
    check(device_access(f2, vm2, DEVMMU_ACCESS_DEVICE_READ, VA_A + BO_SIZE / 2, got, sizeof msg_b) == 0
              && memcmp(got, msg_b, sizeof msg_b) == 0,
          "the device reads through file 2's VM what it wrote through file 1's");
    check(device_access(f2, vm2, DEVMMU_ACCESS_DEVICE_WRITE, VA_A, got, 1) == -EIO,
          "file 2's read-only binding refuses a device write");

    /* The CPU writes through file 1's mapping inside a WRITE bracket; the device reads it. */
    char cpu_msg[] = "written by the CPU";
    sync_bo(f1, h1, DEVMMU_SYNC_START | DEVMMU_SYNC_WRITE);
    memcpy(cpu1 + 4 * KIB, cpu_msg, sizeof cpu_msg);
    sync_bo(f1, h1, DEVMMU_SYNC_END | DEVMMU_SYNC_WRITE);
    memset(got, 0, sizeof got);
    check(device_access(f2, vm2, DEVMMU_ACCESS_DEVICE_READ, VA_A + 4 * KIB, got, sizeof cpu_msg) == 0
              && memcmp(got, cpu_msg, sizeof cpu_msg) == 0,
          "the device reads what the CPU wrote in the bracket");

    /* Partial unbind: the second 16 KiB of the first binding. */
    struct devmmu_vm_bind_op cut = { .op = DEVMMU_VM_BIND_OP_UNMAP, .va = VA_A + 16 * KIB, .size = 16 * KIB };
    bind.ops = (uint64_t)(uintptr_t)&cut;
    bind.op_count = 1;
    req(f1, DEVMMU_IOCTL_VM_BIND, &bind, "VM_BIND (partial UNMAP)");
    check(device_access(f1, vm1, DEVMMU_ACCESS_DEVICE_READ, VA_A + 16 * KIB, got, 1) == -EIO,
          "the unbound part faults");
    memset(got, 0, sizeof got);
    check(device_access(f1, vm1, DEVMMU_ACCESS_DEVICE_READ, VA_A, got, sizeof msg_a) == 0
              && memcmp(got, msg_a, sizeof msg_a) == 0,
          "the part before the cut is still bound");
    check(param(f1, DEVMMU_PARAM_FILE_BINDINGS) == 2, "the cut left the first piece and VA_B bound");

    /* Close everything. */
    check(devmmu_munmap(cpu1, BO_SIZE) == 0 && devmmu_munmap(cpu2, BO_SIZE) == 0, "munmap both mappings");
    check(devmmu_munmap(cpu2, BO_SIZE) == -EINVAL, "a second munmap is refused");
    close(exp.fd);
    struct devmmu_gem_close gc = { .handle = h1 };
    req(f1, DEVMMU_IOCTL_GEM_CLOSE, &gc, "GEM_CLOSE");
    check(devmmu_ioctl(f1, DEVMMU_IOCTL_GEM_CLOSE, &gc) == -ENOENT, "a closed handle is -ENOENT");
    check(param(f1, DEVMMU_PARAM_LIVE_BOS) == live_before + 1, "the bindings and file 2 keep the BO alive");
    struct devmmu_vm_destroy vd = { .vm_id = vm1 };
    req(f1, DEVMMU_IOCTL_VM_DESTROY, &vd, "VM_DESTROY");
    check(param(f1, DEVMMU_PARAM_FILE_VMS) == 0 && param(f1, DEVMMU_PARAM_FILE_HANDLES) == 0,
          "file 1 holds nothing");
    check(devmmu_close(f1) == 0, "close file 1");
    check(devmmu_close(f2) == 0, "close file 2 (its VM and handle go with it)");
    struct devmmu_get_param gp = { .param = DEVMMU_PARAM_PAGE_SIZE };
    check(devmmu_ioctl(f1, DEVMMU_IOCTL_GET_PARAM, &gp) == -EBADF, "a closed file is -EBADF");

    int f3 = devmmu_open(DEVMMU_DEVICE_ISP, 0);
    check(f3 > 0, "a third file opens");
    check(param(f3, DEVMMU_PARAM_LIVE_BOS) == live_before, "no BO leaked");
    check(param(f3, DEVMMU_PARAM_LIVE_MAPPINGS) == 0, "no mapping leaked");
    check(devmmu_close(f3) == 0, "close file 3");
    printf("flow: all checks passed\n");
    return 0;
}
