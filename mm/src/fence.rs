//! Explicit synchronization: timelines and the fences on them.
//!
//! A [`Timeline`] is a 64-bit counter that only moves forward, like a Vulkan timeline semaphore
//! (`VK_SEMAPHORE_TYPE_TIMELINE`) or a DRM timeline syncobj (drivers/gpu/drm/drm_syncobj.c, a
//! `dma_fence_chain` per point). A [`Fence`] is one point on a timeline: it is signalled once the
//! timeline's value reaches the point. A device signals its timeline when a job completes (for
//! the simulated device: when the model's DMA returns; for a Vulkan queue: when its timeline
//! semaphore reaches the submission's value), and the next stage waits for that point before it
//! touches the buffer. Waits take a timeout, as `dma_fence_wait_timeout` does, so a lost signal
//! is an error, not a hang.
//!
//! A timeline can be *failed* ([`Timeline::fail`]): every wait on it, pending or later, returns
//! [`FenceError::Failed`], the way `dma_fence_set_error` propagates a job's error to the waiters.
//! A pipeline whose stage hits an error fails its timeline, so the other stages stop instead of
//! waiting forever.
//!
//! ```
//! use devmmu_mm::fence::Timeline;
//! use std::time::Duration;
//!
//! let camera = Timeline::new("camera");
//! let frame0 = camera.fence(1);
//! assert!(!frame0.is_signaled());
//! camera.signal(1)?;
//! frame0.wait(Duration::from_secs(1))?;
//! # Ok::<(), devmmu_mm::fence::FenceError>(())
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Why a signal or a wait failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// [`Timeline::signal`] with a point not above the current value (timelines only move
    /// forward; Vulkan makes this undefined behaviour, we refuse it).
    #[error("timeline {timeline}: signal {point} is not above its value {value}")]
    NotForward {
        /// The timeline's name.
        timeline: &'static str,
        /// The point given.
        point: u64,
        /// The value it had.
        value: u64,
    },
    /// The wait's timeout passed before the point was reached.
    #[error(
        "timeline {timeline}: point {point} not reached within {timeout_ms} ms (value {value})"
    )]
    Timeout {
        /// The timeline's name.
        timeline: &'static str,
        /// The point waited for.
        point: u64,
        /// The value when the wait gave up.
        value: u64,
        /// The timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// The timeline was failed ([`Timeline::fail`]): its producer stopped.
    #[error("timeline {timeline} failed: {reason}")]
    Failed {
        /// The timeline's name.
        timeline: &'static str,
        /// What its producer gave as the reason.
        reason: String,
    },
}

#[derive(Debug)]
struct State {
    value: u64,
    failed: Option<String>,
}

/// A monotonic 64-bit counter that fences wait on. Starts at 0. Shared with `Arc`.
#[derive(Debug)]
pub struct Timeline {
    name: &'static str,
    state: Mutex<State>,
    cond: Condvar,
}

impl Timeline {
    /// A new timeline at value 0.
    pub fn new(name: &'static str) -> Arc<Timeline> {
        Arc::new(Timeline {
            name,
            state: Mutex::new(State {
                value: 0,
                failed: None,
            }),
            cond: Condvar::new(),
        })
    }

    /// The timeline's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current value: every point up to it is signalled.
    pub fn value(&self) -> u64 {
        self.state.lock().value
    }

    /// The fence for `point` on this timeline.
    pub fn fence(self: &Arc<Self>, point: u64) -> Fence {
        Fence {
            timeline: Arc::clone(self),
            point,
        }
    }

    /// Moves the value to `point` and wakes the waiters of every point up to it.
    ///
    /// # Errors
    /// [`FenceError::NotForward`] if `point` is not above the current value (nothing changes);
    /// [`FenceError::Failed`] if the timeline was failed.
    pub fn signal(&self, point: u64) -> Result<(), FenceError> {
        let mut s = self.state.lock();
        if let Some(reason) = &s.failed {
            return Err(FenceError::Failed {
                timeline: self.name,
                reason: reason.clone(),
            });
        }
        if point <= s.value {
            return Err(FenceError::NotForward {
                timeline: self.name,
                point,
                value: s.value,
            });
        }
        s.value = point;
        self.cond.notify_all();
        Ok(())
    }

    /// Fails the timeline: every wait returns [`FenceError::Failed`] with `reason` from now on.
    /// A second call keeps the first reason.
    pub fn fail(&self, reason: impl Into<String>) {
        let mut s = self.state.lock();
        if s.failed.is_none() {
            s.failed = Some(reason.into());
        }
        self.cond.notify_all();
    }

    /// Waits until the value reaches `point`, for at most `timeout`.
    ///
    /// # Errors
    /// [`FenceError::Timeout`]; [`FenceError::Failed`] if the timeline is or becomes failed
    /// before the point is reached (a point already reached is still `Ok`).
    pub fn wait(&self, point: u64, timeout: Duration) -> Result<(), FenceError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        loop {
            if s.value >= point {
                return Ok(());
            }
            if let Some(reason) = &s.failed {
                return Err(FenceError::Failed {
                    timeline: self.name,
                    reason: reason.clone(),
                });
            }
            if self.cond.wait_until(&mut s, deadline).timed_out() && s.value < point {
                if let Some(reason) = &s.failed {
                    return Err(FenceError::Failed {
                        timeline: self.name,
                        reason: reason.clone(),
                    });
                }
                return Err(FenceError::Timeout {
                    timeline: self.name,
                    point,
                    value: s.value,
                    timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
                });
            }
        }
    }
}

/// One point on a [`Timeline`]: signalled once the timeline's value reaches it.
#[derive(Clone, Debug)]
pub struct Fence {
    timeline: Arc<Timeline>,
    point: u64,
}

impl Fence {
    /// The timeline.
    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// The point.
    pub fn point(&self) -> u64 {
        self.point
    }

    /// Whether the point is reached.
    pub fn is_signaled(&self) -> bool {
        self.timeline.value() >= self.point
    }

    /// Waits for the point, for at most `timeout`.
    ///
    /// # Errors
    /// As [`Timeline::wait`].
    pub fn wait(&self, timeout: Duration) -> Result<(), FenceError> {
        self.timeline.wait(self.point, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_wakes_a_waiter_in_another_thread() {
        let t = Timeline::new("t");
        let t2 = Arc::clone(&t);
        let waiter = std::thread::spawn(move || t2.wait(3, Duration::from_secs(30)));
        t.signal(1).unwrap();
        t.signal(3).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert!(t.fence(2).is_signaled());
        assert!(!t.fence(4).is_signaled());
    }

    #[test]
    fn signal_must_move_forward() {
        let t = Timeline::new("t");
        t.signal(2).unwrap();
        assert_eq!(
            t.signal(2),
            Err(FenceError::NotForward {
                timeline: "t",
                point: 2,
                value: 2
            })
        );
        assert_eq!(t.value(), 2);
    }

    #[test]
    fn wait_times_out_and_says_where_it_stood() {
        let t = Timeline::new("t");
        t.signal(1).unwrap();
        assert_eq!(
            t.wait(2, Duration::from_millis(10)),
            Err(FenceError::Timeout {
                timeline: "t",
                point: 2,
                value: 1,
                timeout_ms: 10
            })
        );
    }

    #[test]
    fn failure_reaches_pending_and_later_waiters_but_not_reached_points() {
        let t = Timeline::new("t");
        t.signal(1).unwrap();
        let t2 = Arc::clone(&t);
        let waiter = std::thread::spawn(move || t2.wait(5, Duration::from_secs(30)));
        t.fail("stage stopped");
        t.fail("second reason is dropped");
        let failed = Err(FenceError::Failed {
            timeline: "t",
            reason: "stage stopped".into(),
        });
        assert_eq!(waiter.join().unwrap(), failed);
        assert_eq!(t.wait(2, Duration::ZERO), failed);
        assert_eq!(t.signal(2), failed);
        assert_eq!(t.wait(1, Duration::ZERO), Ok(()));
    }
}
