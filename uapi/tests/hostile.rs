//! Hostile input, request by request: bad sizes, null / misaligned / wrapping pointers, counts of
//! 0, too many and overflowing, unknown flags, non-zero padding, handles and VM ids that are 0,
//! unknown, closed or another file's. Each refusal is checked to leave both files and the
//! machine exactly as they were (handles, objects, mmap offsets, brackets, VMs, bound pages,
//! live BOs).

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use common::*;
use devmmu_uapi::abi::*;
use devmmu_uapi::{ioc, Errno, File, Request};

/// `$e` fails with `$errno` and changes nothing in `$f`, `$g` or the machine `$m`.
macro_rules! refused {
    ($m:expr, $f:expr, $g:expr, $e:expr, $errno:expr) => {{
        let before = snap(&$m, &$f, &$g);
        let r = $e;
        assert_eq!(r, Err($errno), "{}", stringify!($e));
        assert_eq!(
            snap(&$m, &$f, &$g),
            before,
            "{} changed state",
            stringify!($e)
        );
    }};
}

#[test]
fn every_request_refuses_bad_numbers_and_pointers() {
    let (m, f, g) = two_files();
    let h = bo(&f, PAGE, 0);
    let v = vm(&f);
    bind(&f, v, &[map_op(h, 0, VA, PAGE)]).unwrap();
    for r in Request::ALL {
        let req = r.number();
        let d = ioc::decode(req);
        let mut buf = Buf::new();
        // SAFETY (each call below): the addresses are null, misaligned into `buf`, or outside
        // user space; the dispatcher refuses each before any access.
        refused!(m, f, g, unsafe { f.ioctl(req, 0) }, Errno::FAULT);
        // Misaligned for every struct (they are 4- or 8-aligned).
        refused!(
            m,
            f,
            g,
            ioctl_at(&f, req, d.size, &mut buf, 2),
            Errno::INVAL
        );
        refused!(
            m,
            f,
            g,
            ioctl_at(&f, req, d.size, &mut buf, 7),
            Errno::INVAL
        );
        refused!(m, f, g, unsafe { f.ioctl(req, u64::MAX - 7) }, Errno::FAULT);
        refused!(m, f, g, unsafe { f.ioctl(req, 1 << 56) }, Errno::FAULT);
        // Starts in user space, ends past it.
        let longer = ioc::with_size(req, d.size + 8);
        refused!(
            m,
            f,
            g,
            unsafe { f.ioctl(longer, (1 << 56) - 8) },
            Errno::FAULT
        );
        // Wrong direction bits, wrong type, a number past the last request.
        let wrong_dir = ioc::ioc(d.dir ^ ioc::DIR_READ, d.ty, d.nr, d.size);
        refused!(
            m,
            f,
            g,
            ioctl_at(&f, wrong_dir, d.size, &mut buf, 8),
            Errno::INVAL
        );
        let wrong_type = ioc::ioc(d.dir, u32::from(b'x'), d.nr, d.size);
        refused!(
            m,
            f,
            g,
            ioctl_at(&f, wrong_type, d.size, &mut buf, 8),
            Errno::NOTTY
        );
        // A larger struct with a non-zero byte past the known fields.
        buf.0[8 + d.size + 3] = 1;
        refused!(
            m,
            f,
            g,
            ioctl_at(&f, req, d.size + 8, &mut buf, 8),
            Errno::TOOBIG
        );
    }
    for nr in [0x00, 0x3f, 0x4d, 0xff] {
        let mut buf = Buf::new();
        let req = ioc::ioc(3, ioc::TYPE, nr, 16);
        refused!(m, f, g, ioctl_at(&f, req, 16, &mut buf, 8), Errno::NOTTY);
    }
}

#[test]
fn struct_sizes_extend_as_copy_struct_from_user() {
    let (m, f, _g) = two_files();
    // An older caller's 8-byte BO_CREATE (size only): zero-extended (flags 0), and nothing is
    // written past its 8 bytes (the handle does not fit).
    let mut buf = Buf::new();
    buf.0[16..64].fill(0xaa);
    buf.put(8, &(2 * PAGE));
    ioctl_at(&f, DEVMMU_IOCTL_BO_CREATE, 8, &mut buf, 8).unwrap();
    assert!(
        buf.0[16..64].iter().all(|&b| b == 0xaa),
        "wrote past the caller's struct"
    );
    assert_eq!(f.handle_count(), 1);
    assert_eq!(f.bo(1).unwrap().size(), 2 * PAGE);
    // A newer caller's 32-byte struct with a zero tail: accepted, the handle written back, the
    // tail left alone.
    let mut buf = Buf::new();
    buf.put(
        8,
        &DevmmuBoCreate {
            size: PAGE,
            flags: 0,
            handle: 0,
        },
    );
    ioctl_at(&f, DEVMMU_IOCTL_BO_CREATE, 32, &mut buf, 8).unwrap();
    assert_eq!(u32::from_ne_bytes(buf.0[20..24].try_into().unwrap()), 2);
    assert!(buf.0[24..40].iter().all(|&b| b == 0));
    // A zero-sized struct is all defaults: GET_PARAM of parameter 0 is refused.
    let mut buf = Buf::new();
    assert_eq!(
        ioctl_at(&f, DEVMMU_IOCTL_GET_PARAM, 0, &mut buf, 8),
        Err(Errno::INVAL)
    );
    assert_eq!(m.live_bos(), 2);
}

#[test]
fn get_param_answers_and_refuses() {
    let (m, f, g) = two_files();
    let isp = File::open(&m, DEVMMU_DEVICE_ISP, 0).unwrap();
    let get = |file: &File, param| {
        let mut a = DevmmuGetParam {
            param,
            ..Default::default()
        };
        ioctl(file, DEVMMU_IOCTL_GET_PARAM, &mut a).map(|()| a.value)
    };
    assert_eq!(get(&f, DEVMMU_PARAM_MMU_FORMAT), Ok(DEVMMU_MMU_ARM_LPAE_4K));
    assert_eq!(get(&isp, DEVMMU_PARAM_MMU_FORMAT), Ok(DEVMMU_MMU_IPU));
    assert_eq!(get(&f, DEVMMU_PARAM_VA_END), Ok(1 << 48));
    assert_eq!(get(&isp, DEVMMU_PARAM_VA_END), Ok(1 << 32));
    assert_eq!(get(&f, DEVMMU_PARAM_VA_START), Ok(PAGE));
    assert_eq!(get(&f, DEVMMU_PARAM_PAGE_SIZE), Ok(PAGE));
    assert_eq!(
        get(&f, DEVMMU_PARAM_PAGE_SIZES),
        Ok((1 << 12) | (1 << 21) | (1 << 30))
    );
    assert_eq!(get(&isp, DEVMMU_PARAM_PAGE_SIZES), Ok(PAGE));
    assert_eq!(get(&f, DEVMMU_PARAM_DMA_OPS), Ok(DEVMMU_DMA_OPS_DIRECT));
    assert_eq!(get(&isp, DEVMMU_PARAM_DMA_MASK), Ok(u64::from(u32::MAX)));
    assert_eq!(get(&f, DEVMMU_PARAM_COHERENT), Ok(0));
    assert_eq!(get(&f, DEVMMU_PARAM_COHERENT_WALK), Ok(0));
    bo(&f, PAGE, 0);
    assert_eq!(get(&g, DEVMMU_PARAM_LIVE_BOS), Ok(1));
    assert_eq!(get(&f, DEVMMU_PARAM_FILE_HANDLES), Ok(1));
    assert_eq!(get(&g, DEVMMU_PARAM_FILE_HANDLES), Ok(0));
    for param in [0, 15, 999, u32::MAX] {
        refused!(m, f, g, get(&f, param), Errno::INVAL);
    }
    let mut a = DevmmuGetParam {
        param: DEVMMU_PARAM_PAGE_SIZE,
        pad: 1,
        value: 0,
    };
    refused!(
        m,
        f,
        g,
        ioctl(&f, DEVMMU_IOCTL_GET_PARAM, &mut a),
        Errno::INVAL
    );
}

#[test]
fn bo_create_refuses_bad_sizes_and_flags() {
    let (m, f, g) = two_files();
    let create = |size, flags| {
        let mut a = DevmmuBoCreate {
            size,
            flags,
            handle: 0,
        };
        ioctl(&f, DEVMMU_IOCTL_BO_CREATE, &mut a)
    };
    for size in [0, 1, PAGE - 1, PAGE + 1, u64::MAX, u64::MAX - PAGE + 1 + 1] {
        refused!(m, f, g, create(size, 0), Errno::INVAL);
    }
    // More than the machine has: no frames.
    refused!(m, f, g, create(1 << 40, 0), Errno::NOMEM);
    refused!(m, f, g, create(u64::MAX - PAGE + 1, 0), Errno::NOMEM);
    for bit in 4..32 {
        refused!(m, f, g, create(PAGE, 1 << bit), Errno::INVAL);
    }
    refused!(m, f, g, create(PAGE, DEVMMU_BO_CACHING_MASK), Errno::INVAL);
    // Every known combination works, and BO_INFO reports it.
    for flags in [
        DEVMMU_BO_CACHED,
        DEVMMU_BO_WC,
        DEVMMU_BO_UNCACHED | DEVMMU_BO_CONTIGUOUS,
        DEVMMU_BO_WC | DEVMMU_BO_DMA32 | DEVMMU_BO_CONTIGUOUS,
    ] {
        let h = bo(&f, 4 * PAGE, flags);
        let mut info = DevmmuBoInfo {
            handle: h,
            ..Default::default()
        };
        ioctl(&f, DEVMMU_IOCTL_BO_INFO, &mut info).unwrap();
        assert_eq!((info.flags, info.size), (flags, 4 * PAGE));
    }
}

#[test]
fn handles_are_per_file_and_die_with_gem_close() {
    let (m, f, g) = two_files();
    let h = bo(&f, PAGE, 0);
    assert_eq!(h, 1);
    let gv = vm(&g);
    let closed = bo(&f, PAGE, 0);
    let mut c = DevmmuGemClose {
        handle: closed,
        pad: 0,
    };
    ioctl(&f, DEVMMU_IOCTL_GEM_CLOSE, &mut c).unwrap();
    // In `g`, `h` names nothing; in `f`, neither do 0, a closed handle nor an unknown one.
    for (file, handle) in [(&g, h), (&f, 0), (&f, closed), (&f, 77), (&f, u32::MAX)] {
        let mut info = DevmmuBoInfo {
            handle,
            ..Default::default()
        };
        refused!(
            m,
            f,
            g,
            ioctl(file, DEVMMU_IOCTL_BO_INFO, &mut info),
            Errno::NOENT
        );
        let mut mm = DevmmuBoMmap {
            handle,
            ..Default::default()
        };
        refused!(
            m,
            f,
            g,
            ioctl(file, DEVMMU_IOCTL_BO_MMAP, &mut mm),
            Errno::NOENT
        );
        let mut c = DevmmuGemClose { handle, pad: 0 };
        refused!(
            m,
            f,
            g,
            ioctl(file, DEVMMU_IOCTL_GEM_CLOSE, &mut c),
            Errno::NOENT
        );
        let mut p = DevmmuPrimeHandle {
            handle,
            flags: 0,
            fd: -1,
        };
        refused!(
            m,
            f,
            g,
            ioctl(file, DEVMMU_IOCTL_PRIME_HANDLE_TO_FD, &mut p),
            Errno::NOENT
        );
        let mut s = DevmmuBoSync {
            handle,
            flags: DEVMMU_SYNC_READ,
        };
        refused!(
            m,
            f,
            g,
            ioctl(file, DEVMMU_IOCTL_BO_SYNC, &mut s),
            Errno::NOENT
        );
        refused!(
            m,
            f,
            g,
            bind(&g, gv, &[map_op(handle, 0, VA, PAGE)]),
            Errno::NOENT
        );
    }
    let mut c = DevmmuGemClose { handle: h, pad: 1 };
    refused!(
        m,
        f,
        g,
        ioctl(&f, DEVMMU_IOCTL_GEM_CLOSE, &mut c),
        Errno::INVAL
    );
    // The lowest free number is handed out again, as GEM's idr does.
    assert_eq!(bo(&f, PAGE, 0), closed);
}

#[test]
fn vm_ids_are_per_file_and_never_reused() {
    let (m, f, g) = two_files();
    let h = bo(&f, PAGE, 0);
    let v = vm(&f);
    let gone = vm(&f);
    let mut d = DevmmuVmDestroy {
        vm_id: gone,
        pad: 0,
    };
    ioctl(&f, DEVMMU_IOCTL_VM_DESTROY, &mut d).unwrap();
    let gh = bo(&g, PAGE, 0);
    for (file, id, handle) in [(&g, v, gh), (&f, 0, h), (&f, gone, h), (&f, 99, h)] {
        let mut d = DevmmuVmDestroy { vm_id: id, pad: 0 };
        refused!(
            m,
            f,
            g,
            ioctl(file, DEVMMU_IOCTL_VM_DESTROY, &mut d),
            Errno::NOENT
        );
        refused!(
            m,
            f,
            g,
            bind(file, id, &[map_op(handle, 0, VA, PAGE)]),
            Errno::NOENT
        );
        refused!(m, f, g, dev_write(file, id, VA, b"x"), Errno::NOENT);
    }
    let mut d = DevmmuVmDestroy { vm_id: v, pad: 1 };
    refused!(
        m,
        f,
        g,
        ioctl(&f, DEVMMU_IOCTL_VM_DESTROY, &mut d),
        Errno::INVAL
    );
    let mut c = DevmmuVmCreate { flags: 1, vm_id: 0 };
    refused!(
        m,
        f,
        g,
        ioctl(&f, DEVMMU_IOCTL_VM_CREATE, &mut c),
        Errno::INVAL
    );
    assert_eq!(
        vm(&f),
        gone + 1,
        "a destroyed VM's id is not handed out again"
    );
}

#[test]
fn vm_bind_refuses_bad_arrays() {
    let (m, f, g) = two_files();
    let h = bo(&f, 4 * PAGE, 0);
    let v = vm(&f);
    bind(&f, v, &[map_op(h, 0, VA, 2 * PAGE)]).unwrap();
    let ops = [map_op(h, 2 * PAGE, VA + 8 * PAGE, PAGE); 2];
    let base = ops.as_ptr() as u64;
    let call = |vm_id, flags, op_count, op_stride, ops| {
        let mut a = DevmmuVmBind {
            vm_id,
            flags,
            op_count,
            op_stride,
            ops,
        };
        ioctl(&f, DEVMMU_IOCTL_VM_BIND, &mut a)
    };
    refused!(m, f, g, call(v, 1, 1, 40, base), Errno::INVAL);
    refused!(m, f, g, call(v, 1 << 31, 1, 40, base), Errno::INVAL);
    refused!(m, f, g, call(v, 0, 0, 40, base), Errno::INVAL);
    refused!(
        m,
        f,
        g,
        call(v, 0, DEVMMU_VM_BIND_MAX_OPS + 1, 40, base),
        Errno::INVAL
    );
    refused!(m, f, g, call(v, 0, u32::MAX, 40, base), Errno::INVAL);
    for stride in [0, 4, 12, 44, DEVMMU_VM_BIND_MAX_STRIDE + 8, u32::MAX] {
        refused!(m, f, g, call(v, 0, 1, stride, base), Errno::INVAL);
    }
    refused!(m, f, g, call(v, 0, 1, 40, 0), Errno::FAULT);
    refused!(m, f, g, call(v, 0, 1, 40, base + 4), Errno::INVAL);
    // count * stride runs off the end of the address space, or of user space.
    refused!(
        m,
        f,
        g,
        call(v, 0, 1024, 4096, u64::MAX - 4095),
        Errno::FAULT
    );
    refused!(
        m,
        f,
        g,
        call(v, 0, 1024, 4096, (1 << 56) - 4096),
        Errno::FAULT
    );
    refused!(m, f, g, call(99, 0, 1, 40, base), Errno::NOENT);
    // The array as given works.
    call(v, 0, 2, 40, base).unwrap_err(); // the same VA twice: -EEXIST
    call(v, 0, 1, 40, base).unwrap();
}

#[test]
fn vm_bind_refuses_any_bad_operation_and_applies_none() {
    let (m, f, g) = two_files();
    let h = bo(&f, 4 * PAGE, 0);
    let gh = bo(&g, PAGE, 0);
    let v = vm(&f);
    bind(&f, v, &[map_op(h, 0, VA, 2 * PAGE)]).unwrap();
    // Two good operations first, then a bad one: nothing of the array may stay.
    let good = [map_op(h, 0, VA + 16 * PAGE, PAGE), unmap_op(VA, PAGE)];
    let with = |bad: DevmmuVmBindOp| {
        let ops = [good[0], good[1], bad];
        bind(&f, v, &ops)
    };
    let ok = map_op(h, 0, VA + 32 * PAGE, PAGE);
    let cases: Vec<(DevmmuVmBindOp, Errno)> = vec![
        (DevmmuVmBindOp { op: 0, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { op: 3, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { flags: 0, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { flags: 4, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { pad: 1, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { size: 0, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { size: 100, ..ok }, Errno::INVAL),
        (
            DevmmuVmBindOp {
                va: ok.va + 1,
                ..ok
            },
            Errno::INVAL,
        ),
        (DevmmuVmBindOp { bo_offset: 1, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { va: 0, ..ok }, Errno::INVAL),
        (DevmmuVmBindOp { va: 1 << 48, ..ok }, Errno::INVAL),
        (
            DevmmuVmBindOp {
                va: (1 << 48) - PAGE,
                size: 2 * PAGE,
                ..ok
            },
            Errno::INVAL,
        ),
        (
            DevmmuVmBindOp {
                va: !(PAGE - 1),
                ..ok
            },
            Errno::INVAL,
        ),
        (
            DevmmuVmBindOp {
                bo_offset: 3 * PAGE,
                size: 2 * PAGE,
                ..ok
            },
            Errno::INVAL,
        ),
        (
            DevmmuVmBindOp {
                bo_offset: !(PAGE - 1),
                ..ok
            },
            Errno::INVAL,
        ),
        (
            DevmmuVmBindOp {
                size: !(PAGE - 1),
                ..ok
            },
            Errno::INVAL,
        ),
        (DevmmuVmBindOp { handle: 0, ..ok }, Errno::NOENT),
        (DevmmuVmBindOp { handle: 42, ..ok }, Errno::NOENT),
        (
            DevmmuVmBindOp {
                handle: gh + 5,
                ..ok
            },
            Errno::NOENT,
        ),
        (
            DevmmuVmBindOp {
                handle: 1,
                ..unmap_op(VA + PAGE, PAGE)
            },
            Errno::INVAL,
        ),
        (
            DevmmuVmBindOp {
                flags: 1,
                ..unmap_op(VA + PAGE, PAGE)
            },
            Errno::INVAL,
        ),
        (
            DevmmuVmBindOp {
                bo_offset: PAGE,
                ..unmap_op(VA + PAGE, PAGE)
            },
            Errno::INVAL,
        ),
        (
            DevmmuVmBindOp {
                pad: 1,
                ..unmap_op(VA + PAGE, PAGE)
            },
            Errno::INVAL,
        ),
        (unmap_op(VA + 100 * PAGE, PAGE), Errno::NOENT),
        // The first good op unmapped VA: unmapping it again hits nothing.
        (unmap_op(VA, PAGE), Errno::NOENT),
        // Onto the binding that stays, and onto the page the first good op mapped.
        (map_op(h, 0, VA + PAGE, PAGE), Errno::EXIST),
        (map_op(h, 0, VA + 16 * PAGE, PAGE), Errno::EXIST),
    ];
    for (bad, errno) in cases {
        refused!(m, f, g, with(bad), errno);
    }
    // An element larger than ours must be zero past it; a smaller one is zero-extended (here
    // its size field is cut off, so it reads as 0).
    let mut words = [0u64; 12];
    let op = map_op(h, 0, VA + 40 * PAGE, PAGE);
    // SAFETY: `words` holds 96 bytes; the op is 40.
    unsafe { std::ptr::copy_nonoverlapping(&op, words.as_mut_ptr().cast(), 1) };
    words[5] = 7;
    let call = |stride, words: &[u64; 12]| {
        let mut a = DevmmuVmBind {
            vm_id: v,
            flags: 0,
            op_count: 1,
            op_stride: stride,
            ops: words.as_ptr() as u64,
        };
        ioctl(&f, DEVMMU_IOCTL_VM_BIND, &mut a)
    };
    refused!(m, f, g, call(48, &words), Errno::TOOBIG);
    refused!(m, f, g, call(32, &words), Errno::INVAL);
    words[5] = 0;
    call(48, &words).unwrap();
    assert!(pages(&f, v).contains(&(VA + 40 * PAGE, 0, 3)));
}

#[test]
fn vm_bind_applies_arrays_in_order() {
    let (_m, f, _g) = two_files();
    let h = bo(&f, 8 * PAGE, 0);
    let v = vm(&f);
    // Map then unmap in one array: nothing stays.
    bind(&f, v, &[map_op(h, 0, VA, 8 * PAGE), unmap_op(VA, 8 * PAGE)]).unwrap();
    assert!(pages(&f, v).is_empty());
    // A partial unmap splits a binding; an unmap may cover holes.
    bind(&f, v, &[map_op(h, 0, VA, 8 * PAGE)]).unwrap();
    bind(&f, v, &[unmap_op(VA + 2 * PAGE, 2 * PAGE)]).unwrap();
    let bound: Vec<u64> = pages(&f, v).iter().map(|p| (p.0 - VA) / PAGE).collect();
    assert_eq!(bound, [0, 1, 4, 5, 6, 7]);
    bind(&f, v, &[unmap_op(VA + PAGE, 4 * PAGE)]).unwrap();
    let bound: Vec<u64> = pages(&f, v).iter().map(|p| (p.0 - VA) / PAGE).collect();
    assert_eq!(bound, [0, 5, 6, 7]);
    // Read-only bindings: the device may read, not write.
    bind(
        &f,
        v,
        &[DevmmuVmBindOp {
            flags: DEVMMU_VM_BIND_READ,
            ..map_op(h, 0, VA + 64 * PAGE, PAGE)
        }],
    )
    .unwrap();
    assert_eq!(dev_write(&f, v, VA + 64 * PAGE, b"x"), Err(Errno::IO));
    assert!(dev_read(&f, v, VA + 64 * PAGE, 1).is_ok());
}

#[test]
fn vm_bind_undoes_applied_operations_when_a_resource_fails() {
    // On the ISP (32-bit DMA mask, direct DMA), a BO above 4 GiB bounces through swiotlb, and a
    // physically contiguous one larger than a swiotlb segment (256 KiB) cannot be bounced: its
    // MAP fails only when it is applied, after the checks passed.
    let m = machine();
    let f = File::open(&m, DEVMMU_DEVICE_ISP, 0).unwrap();
    let g = File::open(&m, DEVMMU_DEVICE_ISP, 0).unwrap();
    let small = bo(&f, 4 * PAGE, DEVMMU_BO_DMA32);
    let big = bo(&f, 1 << 20, DEVMMU_BO_CONTIGUOUS);
    let v = vm(&f);
    bind(&f, v, &[map_op(small, 0, VA, 4 * PAGE)]).unwrap();
    dev_write(&f, v, VA + PAGE, b"kept across the failed array").unwrap();
    let before = pages(&f, v);
    let ops = [
        unmap_op(VA, 2 * PAGE),
        map_op(small, 0, VA + 16 * PAGE, PAGE),
        map_op(big, 0, VA + 256 * PAGE, 1 << 20),
    ];
    let live = m.live_bos();
    let handles = f.summary().handles;
    assert_eq!(bind(&f, v, &ops), Err(Errno::NOMEM));
    assert_eq!(
        pages(&f, v),
        before,
        "the failed array left its first operations applied"
    );
    assert_eq!((m.live_bos(), f.summary().handles), (live, handles));
    f.check_consistency().unwrap();
    assert_eq!(
        dev_read(&f, v, VA + PAGE, 28).unwrap(),
        b"kept across the failed array"
    );
    assert_eq!(dev_read(&f, v, VA + 16 * PAGE, 1), Err(Errno::IO));
    // The ISP's MMU has no permission bits: a read-only binding is refused.
    let ro = DevmmuVmBindOp {
        flags: DEVMMU_VM_BIND_READ,
        ..map_op(small, 0, VA + 32 * PAGE, PAGE)
    };
    refused!(m, f, g, bind(&f, v, &[ro]), Errno::INVAL);
}

#[test]
fn prime_refuses_what_is_not_one_of_our_bos() {
    let (m, f, g) = two_files();
    let h = bo(&f, 2 * PAGE, 0);
    let import = |fd: i32, flags: u32| {
        let mut a = DevmmuPrimeHandle {
            handle: 0,
            flags,
            fd,
        };
        ioctl(&g, DEVMMU_IOCTL_PRIME_FD_TO_HANDLE, &mut a).map(|()| a.handle)
    };
    let export = |flags: u32| {
        let mut a = DevmmuPrimeHandle {
            handle: h,
            flags,
            fd: -1,
        };
        ioctl(&f, DEVMMU_IOCTL_PRIME_HANDLE_TO_FD, &mut a).map(|()| a.fd)
    };
    refused!(m, f, g, export(1), Errno::INVAL);
    refused!(m, f, g, export(DEVMMU_CLOEXEC | 0o100), Errno::INVAL);
    // CLOEXEC is honoured either way.
    // SAFETY: each export made a new fd we now own.
    let with = unsafe { OwnedFd::from_raw_fd(export(DEVMMU_CLOEXEC).unwrap()) };
    let without = unsafe { OwnedFd::from_raw_fd(export(DEVMMU_RDWR).unwrap()) };
    assert!(rustix::io::fcntl_getfd(&with)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    assert!(!rustix::io::fcntl_getfd(&without)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    refused!(m, f, g, import(with.as_raw_fd(), 1), Errno::INVAL);
    refused!(m, f, g, import(-1, 0), Errno::BADF);
    refused!(m, f, g, import(i32::MIN, 0), Errno::BADF);
    // A number that is no open fd (opened and closed just now).
    let closed = {
        let s = std::os::unix::net::UnixStream::pair().unwrap().0;
        s.as_raw_fd()
    };
    refused!(m, f, g, import(closed, 0), Errno::BADF);
    // Not a memfd: a socket, a regular file.
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    refused!(m, f, g, import(sock.as_raw_fd(), 0), Errno::INVAL);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("prime-regular-file");
    std::fs::write(&path, vec![0u8; PAGE as usize]).unwrap();
    let regular = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    refused!(m, f, g, import(regular.as_raw_fd(), 0), Errno::INVAL);
    // A memfd not sealed against shrinking, and a sealed one of a size that is no BO.
    let memfd = |size: u64, seal: bool| {
        let fd =
            rustix::fs::memfd_create("hostile", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        if seal {
            rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
        }
        fd
    };
    let unsealed = memfd(PAGE, false);
    refused!(m, f, g, import(unsealed.as_raw_fd(), 0), Errno::INVAL);
    let odd = memfd(100, true);
    refused!(m, f, g, import(odd.as_raw_fd(), 0), Errno::INVAL);
    // A foreign memfd sealed as ours are, opened read-only: no write access, no BO.
    let foreign = memfd(PAGE, true);
    let ro = rustix::fs::open(
        format!("/proc/self/fd/{}", foreign.as_raw_fd()).as_str(),
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    refused!(m, f, g, import(ro.as_raw_fd(), 0), Errno::ACCESS);
    // Our own export: the same object in `g`, with `g`'s own handle; again: the same handle.
    let h2 = import(with.as_raw_fd(), 0).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &f.bo(h).unwrap(),
        &g.bo(h2).unwrap()
    ));
    assert_eq!(import(without.as_raw_fd(), 0), Ok(h2));
    assert_eq!(g.handle_count(), 1);
    // A foreign memfd sealed as ours are is imported as a new BO.
    let h3 = import(foreign.as_raw_fd(), 0).unwrap();
    assert_ne!(h3, h2);
    assert_eq!(m.live_bos(), 2);
}

#[test]
fn bo_sync_brackets_are_checked() {
    let (m, f, g) = two_files();
    let h = bo(&f, PAGE, 0);
    let v = vm(&f);
    bind(&f, v, &[map_op(h, 0, VA, PAGE)]).unwrap();
    let sync = |handle, flags| {
        let mut a = DevmmuBoSync { handle, flags };
        ioctl(&f, DEVMMU_IOCTL_BO_SYNC, &mut a)
    };
    for flags in [0, DEVMMU_SYNC_END, 8, 1 << 31, DEVMMU_SYNC_READ | 16] {
        refused!(m, f, g, sync(h, flags), Errno::INVAL);
    }
    refused!(
        m,
        f,
        g,
        sync(h, DEVMMU_SYNC_END | DEVMMU_SYNC_READ),
        Errno::INVAL
    );
    refused!(m, f, g, sync(9, DEVMMU_SYNC_READ), Errno::NOENT);
    // The device writes; the CPU sees it only inside a bracket (the GPU does not snoop).
    dev_write(&f, v, VA, b"device").unwrap();
    let bo = f.bo(h).unwrap();
    let mut seen = [0u8; 6];
    bo.read(0, &mut seen).unwrap();
    assert_eq!(
        &seen, &[0; 6],
        "the CPU saw the device's write without BO_SYNC"
    );
    sync(h, DEVMMU_SYNC_START | DEVMMU_SYNC_READ).unwrap();
    bo.read(0, &mut seen).unwrap();
    assert_eq!(&seen, b"device");
    refused!(m, f, g, sync(h, DEVMMU_SYNC_READ), Errno::BUSY);
    refused!(
        m,
        f,
        g,
        sync(h, DEVMMU_SYNC_END | DEVMMU_SYNC_WRITE),
        Errno::INVAL
    );
    sync(h, DEVMMU_SYNC_END | DEVMMU_SYNC_READ).unwrap();
    // A bracket left open ends with its handle.
    sync(h, DEVMMU_SYNC_START | DEVMMU_SYNC_WRITE).unwrap();
    let mut c = DevmmuGemClose { handle: h, pad: 0 };
    ioctl(&f, DEVMMU_IOCTL_GEM_CLOSE, &mut c).unwrap();
    drop(bo);
    assert_eq!(m.live_bos(), 1, "the binding keeps the BO");
    let mut d = DevmmuVmDestroy { vm_id: v, pad: 0 };
    ioctl(&f, DEVMMU_IOCTL_VM_DESTROY, &mut d).unwrap();
    assert_eq!(m.live_bos(), 0);
}

#[test]
fn device_access_refuses_bad_arguments() {
    let (m, f, g) = two_files();
    let h = bo(&f, PAGE, 0);
    let v = vm(&f);
    bind(&f, v, &[map_op(h, 0, VA, PAGE)]).unwrap();
    let mut data = vec![0u8; 64];
    let access = |op, va, addr, size| {
        let mut a = DevmmuDeviceAccess {
            vm_id: v,
            op,
            va,
            data: addr,
            size,
        };
        ioctl(&f, DEVMMU_IOCTL_DEVICE_ACCESS, &mut a)
    };
    let p = data.as_mut_ptr() as u64;
    let w = DEVMMU_ACCESS_DEVICE_WRITE;
    for op in [0, 3, u32::MAX] {
        refused!(m, f, g, access(op, VA, p, 8), Errno::INVAL);
    }
    refused!(m, f, g, access(w, VA, p, 0), Errno::INVAL);
    refused!(
        m,
        f,
        g,
        access(w, VA, p, DEVMMU_DEVICE_ACCESS_MAX + 1),
        Errno::INVAL
    );
    refused!(m, f, g, access(w, VA, p, u64::MAX), Errno::INVAL);
    refused!(m, f, g, access(w, u64::MAX - 3, p, 8), Errno::INVAL);
    refused!(m, f, g, access(w, VA, 0, 8), Errno::FAULT);
    refused!(m, f, g, access(w, VA, u64::MAX - 3, 8), Errno::FAULT);
    // Through the MMU: unbound pages and page 0 fault, a read past the binding faults.
    refused!(m, f, g, access(w, VA + PAGE, p, 8), Errno::IO);
    refused!(
        m,
        f,
        g,
        access(DEVMMU_ACCESS_DEVICE_READ, 0, p, 8),
        Errno::IO
    );
    refused!(
        m,
        f,
        g,
        access(DEVMMU_ACCESS_DEVICE_READ, VA + PAGE - 4, p, 8),
        Errno::IO
    );
    assert!(m
        .device(DEVMMU_DEVICE_GPU)
        .unwrap()
        .sim()
        .mmu()
        .faults()
        .is_empty());
}

#[test]
fn mmap_refuses_offsets_it_did_not_hand_out() {
    let (m, f, g) = two_files();
    let h = bo(&f, 2 * PAGE, 0);
    let other = bo(&g, 2 * PAGE, 0);
    let offset = |file: &File, handle| {
        let mut a = DevmmuBoMmap {
            handle,
            ..Default::default()
        };
        ioctl(file, DEVMMU_IOCTL_BO_MMAP, &mut a).map(|()| a.offset)
    };
    let off = offset(&f, h).unwrap();
    assert_eq!(offset(&f, h), Ok(off), "a BO keeps its offset");
    let g_off = offset(&g, other).unwrap();
    let mut bad = DevmmuBoMmap {
        handle: h,
        flags: 1,
        offset: 0,
    };
    refused!(
        m,
        f,
        g,
        ioctl(&f, DEVMMU_IOCTL_BO_MMAP, &mut bad),
        Errno::INVAL
    );
    let rw = DEVMMU_PROT_READ | DEVMMU_PROT_WRITE;
    for (o, len, prot) in [
        (off, PAGE, 0),
        (off, PAGE, 4),
        (off, PAGE, rw | 8),
        (off, 0, rw),
        (off, u64::MAX, rw),
        (off, 3 * PAGE, rw),
        (off + PAGE, 2 * PAGE, rw),
        (off + 1, PAGE, rw),
        (off + 2 * PAGE, PAGE, rw),
        (0, PAGE, rw),
        (off - PAGE, PAGE, rw),
        (!(PAGE - 1), PAGE, rw),
    ] {
        refused!(m, f, g, f.mmap(o, len, prot).map(|_| ()), Errno::INVAL);
    }
    // `g`'s offset means nothing in `f` (unless `f` handed out the same number for its own BO,
    // which is then what it maps).
    if g_off != off {
        refused!(m, f, g, f.mmap(g_off, PAGE, rw).map(|_| ()), Errno::INVAL);
    }
    // A mapping outlives GEM_CLOSE; the offset does not.
    let p = f.mmap(off + PAGE, 100, rw).unwrap();
    // SAFETY: a fresh read-write mapping of one page.
    unsafe { p.write(42) };
    let mut c = DevmmuGemClose { handle: h, pad: 0 };
    ioctl(&f, DEVMMU_IOCTL_GEM_CLOSE, &mut c).unwrap();
    refused!(m, f, g, f.mmap(off, PAGE, rw).map(|_| ()), Errno::INVAL);
    // SAFETY: still mapped.
    assert_eq!(unsafe { p.read() }, 42);
    // SAFETY (both): unmapping is refused unless exact; then it unmaps for real.
    assert_eq!(
        unsafe { devmmu_uapi::capi::devmmu_munmap(p.cast(), 2 * PAGE) },
        -22
    );
    assert_eq!(
        unsafe { devmmu_uapi::capi::devmmu_munmap(p.cast(), PAGE) },
        0
    );
    assert_eq!(
        unsafe { devmmu_uapi::capi::devmmu_munmap(p.cast(), PAGE) },
        -22
    );
}

#[test]
fn c_abi_refuses_bad_files_and_pointers() {
    use devmmu_uapi::capi::*;
    assert_eq!(devmmu_open(0, 0), -22);
    assert_eq!(devmmu_open(3, 0), -22);
    assert_eq!(devmmu_open(DEVMMU_DEVICE_GPU, 1), -22);
    let file = devmmu_open(DEVMMU_DEVICE_GPU, 0);
    assert!(file > 0);
    let mut p = DevmmuGetParam {
        param: DEVMMU_PARAM_PAGE_SIZE,
        ..Default::default()
    };
    let arg = (&mut p as *mut DevmmuGetParam).cast();
    // SAFETY (each call): `arg` is a live GET_PARAM struct; the other pointers are null or
    // misaligned, which are refused before any access.
    unsafe {
        assert_eq!(devmmu_ioctl(file, DEVMMU_IOCTL_GET_PARAM, arg), 0);
        assert_eq!(p.value, PAGE);
        for bad in [0, -1, i32::MAX, i32::MIN, file + 1_000_000] {
            assert_eq!(devmmu_ioctl(bad, DEVMMU_IOCTL_GET_PARAM, arg), -9);
        }
        assert_eq!(
            devmmu_ioctl(file, DEVMMU_IOCTL_GET_PARAM, std::ptr::null_mut()),
            -14
        );
        assert_eq!(devmmu_ioctl(file, 0x1234, arg), -25);
        assert_eq!(
            devmmu_mmap(file, 1 << 32, PAGE, DEVMMU_PROT_READ, std::ptr::null_mut()),
            -14
        );
        let mut slot = [0u64; 2];
        let misaligned = (slot.as_mut_ptr() as *mut u8).add(1).cast();
        assert_eq!(
            devmmu_mmap(file, 1 << 32, PAGE, DEVMMU_PROT_READ, misaligned),
            -22
        );
        assert_eq!(
            devmmu_mmap(
                file,
                1 << 32,
                PAGE,
                DEVMMU_PROT_READ,
                slot.as_mut_ptr().cast()
            ),
            -22
        );
        assert_eq!(devmmu_munmap(std::ptr::null_mut(), PAGE), -22);
    }
    assert_eq!(devmmu_close(file), 0);
    assert_eq!(devmmu_close(file), -9);
    // SAFETY: as above.
    assert_eq!(
        unsafe { devmmu_ioctl(file, DEVMMU_IOCTL_GET_PARAM, arg) },
        -9
    );
}

#[test]
fn closing_a_file_releases_what_it_held() {
    let (m, f, g) = two_files();
    let h = bo(&f, 4 * PAGE, 0);
    let v = vm(&f);
    bind(&f, v, &[map_op(h, 0, VA, 4 * PAGE)]).unwrap();
    let mut s = DevmmuBoSync {
        handle: h,
        flags: DEVMMU_SYNC_READ,
    };
    ioctl(&f, DEVMMU_IOCTL_BO_SYNC, &mut s).unwrap();
    let mut e = DevmmuPrimeHandle {
        handle: h,
        flags: DEVMMU_CLOEXEC,
        fd: -1,
    };
    ioctl(&f, DEVMMU_IOCTL_PRIME_HANDLE_TO_FD, &mut e).unwrap();
    // SAFETY: the export made this fd for us.
    let fd = unsafe { OwnedFd::from_raw_fd(e.fd) };
    let mut i = DevmmuPrimeHandle {
        handle: 0,
        flags: 0,
        fd: fd.as_raw_fd(),
    };
    ioctl(&g, DEVMMU_IOCTL_PRIME_FD_TO_HANDLE, &mut i).unwrap();
    drop(f);
    assert_eq!(m.live_bos(), 1, "g's handle keeps the BO");
    drop(g);
    assert_eq!(m.live_bos(), 0, "closing both files freed the BO");
    drop(fd);
    assert!(m
        .device(DEVMMU_DEVICE_GPU)
        .unwrap()
        .device()
        .vm_leaks()
        .is_empty());
}
