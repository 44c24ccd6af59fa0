//! Fd passing over Unix-domain sockets, and a BO shared with a second process through it.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use devmmu_mm::bo::{Bo, BoFlags, ExportOptions, FdKind};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem, PAGE_SIZE};
use devmmu_mm::share::{recv_fds, send_fds, SCM_MAX_FD};
use devmmu_mm::MmError;
use rustix::fs::MemfdFlags;
use rustix::io::{Errno, FdFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

fn memfd_with(content: &[u8]) -> OwnedFd {
    let fd = rustix::fs::memfd_create("share-test", MemfdFlags::CLOEXEC).unwrap();
    rustix::io::write(&fd, content).unwrap();
    fd
}

fn content_of(fd: &OwnedFd, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    assert_eq!(rustix::io::pread(fd, &mut buf[..], 0).unwrap(), len);
    buf
}

fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    let (sa, sb) = (rustix::fs::fstat(a).unwrap(), rustix::fs::fstat(b).unwrap());
    (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
}

#[test]
fn fds_and_payload_arrive_together() {
    let (tx, rx) = UnixStream::pair().unwrap();
    let a = memfd_with(b"first");
    let b = memfd_with(b"second");
    send_fds(tx.as_fd(), &[a.as_fd(), b.as_fd()], b"two fds").unwrap();

    let mut buf = [0u8; 32];
    let (fds, n) = recv_fds(rx.as_fd(), 4, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"two fds");
    assert_eq!(fds.len(), 2);
    // New fds for the same open files, in the order sent, close-on-exec.
    assert!(same_file(&fds[0], &a) && same_file(&fds[1], &b));
    assert_eq!(content_of(&fds[0], 5), b"first");
    assert_eq!(content_of(&fds[1], 6), b"second");
    for fd in &fds {
        assert!(rustix::io::fcntl_getfd(fd)
            .unwrap()
            .contains(FdFlags::CLOEXEC));
    }

    // A message without fds.
    send_fds(tx.as_fd(), &[], b"plain").unwrap();
    let (fds, n) = recv_fds(rx.as_fd(), 4, &mut buf).unwrap();
    assert!(fds.is_empty());
    assert_eq!(&buf[..n], b"plain");

    // End of stream. Under the spawn lock, so no half-spawned child keeps a copy of `tx` open
    // (the recv would then wait for that child's exec).
    let _no_spawn = spawn_lock();
    drop(tx);
    let (fds, n) = recv_fds(rx.as_fd(), 4, &mut buf).unwrap();
    assert!(fds.is_empty());
    assert_eq!(n, 0);
}

#[test]
fn truncated_control_messages_are_errors() {
    let (tx, rx) = UnixStream::pair().unwrap();
    let fds: Vec<OwnedFd> = (0..3).map(|_| memfd_with(b"x")).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    send_fds(tx.as_fd(), &borrowed, b"three").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        recv_fds(rx.as_fd(), 1, &mut buf).unwrap_err(),
        MmError::FdsTruncated { max_fds: 1 }
    );

    send_fds(tx.as_fd(), &borrowed[..1], b"one").unwrap();
    assert_eq!(
        recv_fds(rx.as_fd(), 0, &mut buf).unwrap_err(),
        MmError::FdsTruncated { max_fds: 0 }
    );

    // Far more than the control buffer holds: the kernel truncates (MSG_CTRUNC).
    let many: Vec<OwnedFd> = (0..20).map(|_| memfd_with(b"m")).collect();
    let many_b: Vec<BorrowedFd<'_>> = many.iter().map(|f| f.as_fd()).collect();
    send_fds(tx.as_fd(), &many_b, b"twenty").unwrap();
    assert_eq!(
        recv_fds(rx.as_fd(), 1, &mut buf).unwrap_err(),
        MmError::FdsTruncated { max_fds: 1 }
    );

    // The stream is still usable afterwards.
    send_fds(tx.as_fd(), &borrowed[..1], b"again").unwrap();
    let (got, n) = recv_fds(rx.as_fd(), 1, &mut buf).unwrap();
    assert_eq!((got.len(), &buf[..n]), (1, &b"again"[..]));
}

#[test]
fn truncated_datagrams_are_errors() {
    let (tx, rx) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let fd = memfd_with(b"y");
    send_fds(tx.as_fd(), &[fd.as_fd()], b"0123456789").unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        recv_fds(rx.as_fd(), 1, &mut small).unwrap_err(),
        MmError::PayloadTruncated { buf_len: 4 }
    );
    assert_eq!(&small, b"0123");
}

#[test]
fn bad_arguments_are_refused() {
    let (tx, rx) = UnixStream::pair().unwrap();
    let fd = memfd_with(b"z");
    assert_eq!(
        send_fds(tx.as_fd(), &[fd.as_fd()], b""),
        Err(MmError::ZeroSize)
    );
    let many = vec![fd.as_fd(); SCM_MAX_FD + 1];
    assert_eq!(
        send_fds(tx.as_fd(), &many, b"too many"),
        Err(MmError::TooManyFds {
            count: SCM_MAX_FD + 1,
            max: SCM_MAX_FD
        })
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        recv_fds(rx.as_fd(), SCM_MAX_FD + 1, &mut buf).unwrap_err(),
        MmError::TooManyFds {
            count: SCM_MAX_FD + 1,
            max: SCM_MAX_FD
        }
    );
    // Not a socket.
    assert_eq!(
        send_fds(fd.as_fd(), &[], b"x"),
        Err(MmError::Os {
            op: "sendmsg",
            errno: Errno::NOTSOCK
        })
    );
    assert_eq!(
        recv_fds(fd.as_fd(), 1, &mut buf).unwrap_err(),
        MmError::Os {
            op: "recvmsg",
            errno: Errno::NOTSOCK
        }
    );
    // Nothing queued on a non-blocking socket.
    rx.set_nonblocking(true).unwrap();
    assert_eq!(
        recv_fds(rx.as_fd(), 1, &mut buf).unwrap_err(),
        MmError::Os {
            op: "recvmsg",
            errno: Errno::AGAIN
        }
    );
}

/// Held while this binary spawns a child and while a test needs to know every copy of a
/// descriptor is gone. Between fork and exec a child holds a copy of every descriptor of the
/// process (close-on-exec ones included, until the exec), so a socket end dropped here while
/// another test spawns is still open in the child for a moment. `Command::spawn` returns only
/// after the child's exec (std waits for it on a close-on-exec pipe), so once the lock is
/// released no half-spawned child holds our descriptors.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

fn spawn_lock() -> MutexGuard<'static, ()> {
    // A test that panicked while holding the lock leaves nothing half-done that matters here.
    SPAWN_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn send_to_a_closed_peer_is_epipe_not_sigpipe() {
    let fd = memfd_with(b"z");
    // The pair is created and its receiving end closed under the spawn lock, so no child holds a
    // copy of `rx` and the close really is the last one.
    let _no_spawn = spawn_lock();
    let (tx, rx) = UnixStream::pair().unwrap();
    drop(rx);
    // Without MSG_NOSIGNAL this would raise SIGPIPE and kill the test binary.
    assert_eq!(
        send_fds(tx.as_fd(), &[fd.as_fd()], b"x"),
        Err(MmError::Os {
            op: "sendmsg",
            errno: Errno::PIPE
        })
    );
}

// ---------------------------------------------------------------- across processes

/// Set in the child's environment to the abstract socket name it must connect to.
const CHILD_ENV: &str = "DEVMMU_SHARE_TEST_CHILD";
/// What the child writes at offset `PATTERN_OFFSET` of the shared BO.
const PATTERN_OFFSET: u64 = PAGE_SIZE - 3;

fn child_pattern() -> Vec<u8> {
    (0..2 * PAGE_SIZE as usize)
        .map(|i| (i as u8).wrapping_mul(13) ^ 0x5a)
        .collect()
}

/// The child's side of `bo_crosses_a_process_boundary`. Run as an ordinary test (no variable
/// set) it does nothing.
#[test]
fn share_child_entry() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut sock = UnixStream::connect_addr(&addr).unwrap();
    let mut size = [0u8; 8];
    let (mut fds, n) = recv_fds(sock.as_fd(), 1, &mut size).unwrap();
    assert_eq!((fds.len(), n), (1, 8));
    let size = u64::from_le_bytes(size);

    // A process of its own: its own physical memory, importing the parent's buffer.
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let bo = Bo::import(&phys, fds.remove(0), Some(size)).unwrap();
    let mut hello = [0u8; 6];
    bo.read(0, &mut hello).unwrap();
    assert_eq!(&hello, b"parent");
    bo.write(PATTERN_OFFSET, &child_pattern()).unwrap();
    sock.write_all(b"done").unwrap();
}

/// Kills and reaps the child if the test fails or times out, so nothing outlives it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn bo_crosses_a_process_boundary() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let bo: Arc<Bo> = Bo::new(&phys, 4 * PAGE_SIZE, BoFlags::default()).unwrap();
    bo.write(0, b"parent").unwrap();
    let exported = bo
        .export_with(&ExportOptions {
            udmabuf: None,
            fallback_to_memfd: true,
        })
        .unwrap();
    assert_eq!(exported.kind, FdKind::Memfd);

    // An abstract socket: no file to clean up.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("devmmu-share-test-{}-{nanos}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();

    let child = {
        let _spawning = spawn_lock();
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "share_child_entry", "--test-threads=1"])
            .env(CHILD_ENV, &name)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = ChildGuard(child);

    let mut sock = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    child.0.try_wait().unwrap().is_none(),
                    "child exited before connecting"
                );
                assert!(Instant::now() < deadline, "child did not connect in time");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))
        .unwrap();

    send_fds(
        sock.as_fd(),
        &[exported.fd.as_fd()],
        &bo.size().to_le_bytes(),
    )
    .unwrap();
    drop(exported);
    let mut ack = [0u8; 4];
    sock.read_exact(&mut ack).expect("no answer from the child");
    assert_eq!(&ack, b"done");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child failed: {status}");

    let expect = child_pattern();
    let mut got = vec![0u8; expect.len()];
    bo.read(PATTERN_OFFSET, &mut got).unwrap();
    assert_eq!(got, expect);
    let mut hello = [0u8; 6];
    bo.read(0, &mut hello).unwrap();
    assert_eq!(&hello, b"parent");
}
