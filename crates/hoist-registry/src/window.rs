//! The plan of a windowed blob download (no I/O): which closed range to ask for next, and when.
//!
//! A large blob is fetched as consecutive windows of [`WindowConfig::window`] bytes (the last
//! one shorter), each its own `Range` request, consumed in order. The next window is requested
//! once the bytes requested but not yet consumed (the *outstanding* bytes) have fallen to
//! [`WindowConfig::lead`] or fewer, so that its request's latency overlaps the end of the current
//! window. Hence at most `window + lead` bytes are ever requested and unconsumed: that is all a
//! process killed mid-download can have made the registry send in vain for that blob.
//!
//! [`WindowPlan`] tracks the consumed and requested positions; the I/O layer
//! ([`crate::windowed`]) sends what it says and reports what it consumed.

use crate::range::ByteRange;

/// The default [`WindowConfig::window`]: 16 MiB. On loopback a registry takes a few ms per
/// request, as long as a few MiB take to arrive: smaller windows cost measurably more time there.
pub const DEFAULT_WINDOW: u64 = 16 << 20;
/// The default [`WindowConfig::lead`]: half the default window.
pub const DEFAULT_LEAD: u64 = DEFAULT_WINDOW / 2;

/// How a blob download is split into ranged windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Bytes per ranged request; 0 fetches the blob with one request.
    pub window: u64,
    /// The next window is requested when the current one has at most this many bytes left
    /// (less than `window`, or windows would pile up).
    pub lead: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window: DEFAULT_WINDOW,
            lead: DEFAULT_LEAD,
        }
    }
}

impl WindowConfig {
    /// Windows of `window` bytes with the next requested `lead` bytes ahead; `lead` is capped at
    /// half a window. A `window` of 0 means one request for the whole blob.
    pub fn new(window: u64, lead: u64) -> Self {
        WindowConfig {
            window,
            lead: lead.min(window / 2),
        }
    }

    /// One request for the whole blob, as without windows.
    pub fn disabled() -> Self {
        WindowConfig { window: 0, lead: 0 }
    }

    /// Windows of `window` bytes with the next requested half a window ahead: the most lead
    /// allowed, which hides a request's latency best (on loopback a registry takes 2 to 5 ms to
    /// answer, the time a few MiB take to arrive).
    pub fn with_window(window: u64) -> Self {
        Self::new(window, window / 2)
    }

    /// The most bytes requested and not yet consumed at any time: `window + lead`.
    pub fn max_outstanding(&self) -> u64 {
        self.window + self.lead.min(self.window / 2)
    }
}

/// Where a windowed download of bytes `offset..size` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    window: u64,
    lead: u64,
    /// One past the last byte to fetch: the blob's size.
    end: u64,
    /// One past the last byte requested so far.
    requested: u64,
    /// One past the last byte consumed so far.
    consumed: u64,
}

impl WindowPlan {
    /// A plan for bytes `offset..size` in windows of `config`, or `None` when they are better
    /// fetched with one request: windows disabled, or fewer than two windows' worth of bytes.
    pub fn new(offset: u64, size: u64, config: WindowConfig) -> Option<WindowPlan> {
        let window = config.window;
        if window == 0 || size.saturating_sub(offset) < window.saturating_mul(2) {
            return None;
        }
        Some(WindowPlan {
            window,
            lead: config.lead.min(window / 2),
            end: size,
            requested: offset,
            consumed: offset,
        })
    }

    /// The next window to request now, if one is due: when the outstanding bytes are at most the
    /// lead and bytes remain unrequested. Call it until it says `None` after every change.
    pub fn next_request(&mut self) -> Option<ByteRange> {
        if self.requested >= self.end || self.outstanding() > self.lead {
            return None;
        }
        let first = self.requested;
        let last = first.saturating_add(self.window).min(self.end) - 1;
        let range = ByteRange::new(first, last).ok()?;
        self.requested = last + 1;
        Some(range)
    }

    /// Records that `n` more bytes were consumed (never more than were requested).
    pub fn consumed(&mut self, n: u64) {
        self.consumed = self.consumed.saturating_add(n).min(self.requested);
    }

    /// Bytes requested and not yet consumed.
    pub fn outstanding(&self) -> u64 {
        self.requested - self.consumed
    }

    /// Whether every byte up to the end was consumed.
    pub fn is_done(&self) -> bool {
        self.consumed >= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange::new(first, last).unwrap()
    }

    #[test]
    fn fewer_than_two_windows_or_no_window_is_one_plain_request() {
        let cfg = WindowConfig::new(4 * MIB, MIB);
        assert!(WindowPlan::new(0, 8 * MIB - 1, cfg).is_none());
        assert!(WindowPlan::new(MIB, 9 * MIB - 1, cfg).is_none());
        assert!(WindowPlan::new(0, 8 * MIB, cfg).is_some());
        assert!(WindowPlan::new(0, 100 * MIB, WindowConfig::disabled()).is_none());
    }

    #[test]
    fn the_next_window_is_asked_for_once_the_current_has_only_the_lead_left() {
        let mut plan = WindowPlan::new(0, 10 * MIB, WindowConfig::new(4 * MIB, MIB)).unwrap();
        assert_eq!(plan.next_request(), Some(r(0, 4 * MIB - 1)));
        assert_eq!(plan.next_request(), None);
        plan.consumed(3 * MIB - 1);
        assert_eq!(plan.next_request(), None, "1 MiB + 1 byte left");
        plan.consumed(1);
        assert_eq!(plan.next_request(), Some(r(4 * MIB, 8 * MIB - 1)));
        assert_eq!(plan.next_request(), None);
        assert_eq!(plan.outstanding(), 5 * MIB);
        plan.consumed(4 * MIB);
        assert_eq!(
            plan.next_request(),
            Some(r(8 * MIB, 10 * MIB - 1)),
            "last is shorter"
        );
        plan.consumed(3 * MIB);
        assert_eq!(plan.next_request(), None);
        assert!(plan.is_done());
    }

    #[test]
    fn windows_start_at_the_offset() {
        let mut plan = WindowPlan::new(5, 5 + 2 * MIB, WindowConfig::with_window(MIB)).unwrap();
        assert_eq!(plan.next_request(), Some(r(5, MIB + 4)));
    }

    #[test]
    fn the_lead_is_capped_at_half_a_window() {
        let cfg = WindowConfig::new(MIB, 10 * MIB);
        assert_eq!(cfg.lead, MIB / 2);
        assert_eq!(cfg.max_outstanding(), MIB + MIB / 2);
        assert_eq!(WindowConfig::with_window(MIB).lead, MIB / 2);
        assert_eq!(WindowConfig::with_window(16 * MIB).lead, 8 * MIB);
    }

    proptest! {
        /// Consuming in arbitrary steps, the requested windows cover `offset..size` exactly once,
        /// in order, each at most a window long, and never more than `window + lead` bytes are
        /// outstanding.
        #[test]
        fn windows_cover_the_bytes_once_in_order_within_the_outstanding_bound(
            offset in 0u64..10_000,
            len in 0u64..200_000,
            window in 1u64..20_000,
            lead in 0u64..20_000,
            steps in proptest::collection::vec(1u64..30_000, 1..400),
        ) {
            let size = offset + len;
            let cfg = WindowConfig::new(window, lead);
            let Some(mut plan) = WindowPlan::new(offset, size, cfg) else {
                prop_assert!(len < 2 * window);
                return Ok(());
            };
            let mut windows: Vec<ByteRange> = Vec::new();
            let mut consumed = offset;
            let mut step = steps.iter().cycle();
            loop {
                while let Some(w) = plan.next_request() {
                    windows.push(w);
                    prop_assert!(plan.outstanding() <= cfg.max_outstanding());
                }
                if plan.is_done() {
                    break;
                }
                let requested_end = windows.last().map_or(offset, |w| w.last() + 1);
                prop_assert!(requested_end > consumed, "nothing to consume: stuck");
                // Consume within the window being read (as a body would yield).
                let current = windows.iter().find(|w| w.last() >= consumed).copied().unwrap();
                let n = (*step.next().unwrap()).min(current.last() + 1 - consumed);
                plan.consumed(n);
                consumed += n;
            }
            prop_assert_eq!(consumed, size);
            let mut next = offset;
            for w in &windows {
                prop_assert_eq!(w.first(), next);
                prop_assert!(w.len() <= window);
                next = w.last() + 1;
            }
            prop_assert_eq!(next, size);
        }
    }
}
