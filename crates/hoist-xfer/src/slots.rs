//! Concurrency slots: at most `limit` holders at once (0 = unlimited), waiters served first in,
//! first out.
//!
//! A [`Slot`] is released when dropped, which hands it straight to the oldest live waiter.
//! Changing the limit takes effect at once: raising it grants queued waiters immediately,
//! lowering it lets current holders finish and admits nobody until the count is below the new
//! limit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::sync::lock;

/// Shared slot accounting for one transfer manager.
#[derive(Debug)]
pub(crate) struct Scheduler {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    active: usize,
    queue: VecDeque<oneshot::Sender<Slot>>,
}

impl State {
    fn has_room(&self) -> bool {
        self.limit == 0 || self.active < self.limit
    }
}

/// Permission to run; released (and passed to the next waiter) on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    scheduler: Arc<Scheduler>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.scheduler.release();
    }
}

impl Scheduler {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                limit,
                active: 0,
                queue: VecDeque::new(),
            }),
        })
    }

    /// A slot right now, if one is free and nobody is queued ahead.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut state = lock(&self.state);
        if state.queue.is_empty() && state.has_room() {
            state.active += 1;
            Some(self.slot())
        } else {
            None
        }
    }

    /// Waits for a slot, behind everyone already waiting. Dropping the future gives up the
    /// place in the queue (or the slot, if it was granted meanwhile).
    pub(crate) async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let rx = {
                let mut state = lock(&self.state);
                if state.queue.is_empty() && state.has_room() {
                    state.active += 1;
                    return self.slot();
                }
                let (tx, rx) = oneshot::channel();
                state.queue.push_back(tx);
                rx
            };
            // A waiter's sender is only dropped unsent when its receiver is gone, so an error
            // here cannot happen while we wait; queue again if it ever does.
            if let Ok(slot) = rx.await {
                return slot;
            }
        }
    }

    pub(crate) fn set_limit(self: &Arc<Self>, limit: usize) {
        lock(&self.state).limit = limit;
        self.pump();
    }

    pub(crate) fn limit(&self) -> usize {
        lock(&self.state).limit
    }

    /// Slots currently held.
    pub(crate) fn active(&self) -> usize {
        lock(&self.state).active
    }

    /// Waiters in the queue (including ones that gave up but were not yet skipped).
    pub(crate) fn queued(&self) -> usize {
        lock(&self.state)
            .queue
            .iter()
            .filter(|w| !w.is_closed())
            .count()
    }

    fn slot(self: &Arc<Self>) -> Slot {
        Slot {
            scheduler: Arc::clone(self),
        }
    }

    fn release(self: &Arc<Self>) {
        {
            let mut state = lock(&self.state);
            state.active = state.active.saturating_sub(1);
        }
        self.pump();
    }

    /// Grants free slots to waiters in order. Slots are sent outside the lock: a send to a waiter
    /// that just gave up returns the slot, whose drop releases it and pumps again.
    fn pump(self: &Arc<Self>) {
        let grants = {
            let mut state = lock(&self.state);
            let mut grants = Vec::new();
            while state.has_room() {
                match state.queue.pop_front() {
                    Some(waiter) if waiter.is_closed() => {}
                    Some(waiter) => {
                        state.active += 1;
                        grants.push(waiter);
                    }
                    None => break,
                }
            }
            grants
        };
        for waiter in grants {
            // On failure the slot comes back inside the error and is released by its drop.
            let _ = waiter.send(self.slot());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn grants_are_first_in_first_out_and_bounded() {
        let scheduler = Scheduler::new(1);
        let first = scheduler.try_acquire().unwrap();
        assert!(scheduler.try_acquire().is_none());
        let mut second = Box::pin(scheduler.acquire());
        let mut third = Box::pin(scheduler.acquire());
        assert!((&mut second).now_or_never().is_none());
        assert!((&mut third).now_or_never().is_none());
        assert_eq!(scheduler.queued(), 2);
        drop(first);
        let second = (&mut second).now_or_never().expect("oldest waiter first");
        assert!((&mut third).now_or_never().is_none());
        assert_eq!(scheduler.active(), 1);
        drop(second);
        assert!(third.now_or_never().is_some());
    }

    #[tokio::test]
    async fn raising_the_limit_grants_waiters_at_once() {
        let scheduler = Scheduler::new(1);
        let _held = scheduler.try_acquire().unwrap();
        let mut waiting: Vec<_> = (0..3).map(|_| Box::pin(scheduler.acquire())).collect();
        for w in &mut waiting {
            assert!(w.as_mut().now_or_never().is_none());
        }
        scheduler.set_limit(3);
        let granted: Vec<Slot> = waiting
            .iter_mut()
            .filter_map(|w| w.as_mut().now_or_never())
            .collect();
        assert_eq!(granted.len(), 2);
        assert_eq!(scheduler.active(), 3);
        scheduler.set_limit(0);
        assert!(waiting[2].as_mut().now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_leak_its_slot() {
        let scheduler = Scheduler::new(1);
        let held = scheduler.try_acquire().unwrap();
        let mut quitter = Box::pin(scheduler.acquire());
        assert!(quitter.as_mut().now_or_never().is_none());
        // The slot is granted to the quitter, which then goes away without taking it.
        drop(held);
        drop(quitter);
        assert_eq!(scheduler.active(), 0);
        assert!(scheduler.try_acquire().is_some());
    }

    #[tokio::test]
    async fn lowering_the_limit_admits_nobody_until_below_it() {
        let scheduler = Scheduler::new(2);
        let a = scheduler.try_acquire().unwrap();
        let _b = scheduler.try_acquire().unwrap();
        scheduler.set_limit(1);
        let mut waiter = Box::pin(scheduler.acquire());
        assert!(waiter.as_mut().now_or_never().is_none());
        drop(a);
        assert!(waiter.as_mut().now_or_never().is_none());
        assert_eq!(scheduler.active(), 1);
    }
}
