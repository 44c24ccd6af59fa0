//! Passing fds between processes over a Unix-domain socket (`SCM_RIGHTS`).
//!
//! This is how an exported BO ([`Bo::export`](crate::bo::Bo::export)) reaches another process:
//! the kernel installs a new fd, naming the same open file, in the receiver (unix(7),
//! "Ancillary messages"; cmsg(3)). It owns no state; both functions are thin, checked wrappers
//! around `sendmsg`/`recvmsg`. Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`) so that they
//! do not leak into programs the receiver starts.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::MmError;

/// Most fds one `SCM_RIGHTS` message may carry (`SCM_MAX_FD` in include/net/scm.h); the kernel
/// refuses more with `EINVAL`.
pub const SCM_MAX_FD: usize = 253;

/// Sends `payload` with `fds` attached over the connected Unix-domain socket `sock`.
///
/// The fds travel with the first byte of the payload; if a stream socket takes the payload in
/// several pieces, the rest follows in plain sends (so the receiver may need several
/// [`recv_fds`] calls to collect all of it). The caller keeps its fds; the receiver gets new
/// ones for the same open files. Interrupted calls (`EINTR`) are retried.
///
/// # Errors
/// - [`MmError::ZeroSize`]: `payload` is empty (a stream socket has no byte to carry the fds on,
///   and a zero-length message is indistinguishable from end of stream to the receiver).
/// - [`MmError::TooManyFds`]: more than [`SCM_MAX_FD`] fds.
/// - [`MmError::Os`] with `op == "sendmsg"` or `"send"`: the kernel refused (e.g. `EPIPE` when
///   the peer is gone, `ENOTSOCK`, `ETOOMANYREFS` when fds in flight exceed the limit). If the
///   first `sendmsg` failed, nothing was sent.
pub fn send_fds(
    sock: BorrowedFd<'_>,
    fds: &[BorrowedFd<'_>],
    payload: &[u8],
) -> Result<(), MmError> {
    if payload.is_empty() {
        return Err(MmError::ZeroSize);
    }
    if fds.len() > SCM_MAX_FD {
        return Err(MmError::TooManyFds {
            count: fds.len(),
            max: SCM_MAX_FD,
        });
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        // The buffer was sized for exactly this message, so this cannot happen; refuse rather
        // than send the payload without its fds.
        return Err(MmError::TooManyFds {
            count: fds.len(),
            max: SCM_MAX_FD,
        });
    }
    let mut sent = loop {
        match rustix::net::sendmsg(
            sock,
            &[IoSlice::new(payload)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(Errno::INTR) => continue,
            Err(errno) => {
                return Err(MmError::Os {
                    op: "sendmsg",
                    errno,
                })
            }
        }
    };
    while sent < payload.len() {
        match rustix::net::send(sock, &payload[sent..], SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(MmError::Os { op: "send", errno }),
        }
    }
    Ok(())
}

/// Receives one message from the Unix-domain socket `sock` into `buf`, with up to `max_fds`
/// attached fds. Returns the received fds (close-on-exec, in the order sent) and the number of
/// payload bytes written to `buf`. `(vec![], 0)` means the peer closed the connection.
/// Interrupted calls (`EINTR`) are retried; a blocking socket blocks until a message arrives.
///
/// # Errors
/// - [`MmError::TooManyFds`]: `max_fds` exceeds [`SCM_MAX_FD`].
/// - [`MmError::FdsTruncated`]: the sender attached more than `max_fds` fds. The kernel dropped
///   those that did not fit in the control buffer (`MSG_CTRUNC`); those that did are closed
///   here, so none leak.
/// - [`MmError::PayloadTruncated`]: a datagram or seqpacket message was longer than `buf`
///   (`MSG_TRUNC`); the rest of it is lost. Received fds are closed.
/// - [`MmError::Os`] with `op == "recvmsg"`: the kernel refused (e.g. `EAGAIN` on a
///   non-blocking socket with nothing queued, `ENOTSOCK`).
pub fn recv_fds(
    sock: BorrowedFd<'_>,
    max_fds: usize,
    buf: &mut [u8],
) -> Result<(Vec<OwnedFd>, usize), MmError> {
    if max_fds > SCM_MAX_FD {
        return Err(MmError::TooManyFds {
            count: max_fds,
            max: SCM_MAX_FD,
        });
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let buf_len = buf.len();
    let msg = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(Errno::INTR) => continue,
            Err(errno) => {
                return Err(MmError::Os {
                    op: "recvmsg",
                    errno,
                })
            }
        }
    };
    // Take ownership of every fd first, so that an error return below closes them all.
    let mut fds = Vec::new();
    for cmsg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = cmsg {
            fds.extend(rights);
        }
    }
    // The control buffer is rounded up for alignment and may hold a few more fds than asked
    // for; the caller's limit is what counts.
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > max_fds {
        return Err(MmError::FdsTruncated { max_fds });
    }
    if msg.flags.contains(ReturnFlags::TRUNC) {
        return Err(MmError::PayloadTruncated { buf_len });
    }
    Ok((fds, msg.bytes.min(buf_len)))
}
