//! TransferManager: de-duplication, limits, inactivity, watchers, progress and cancellation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hoist_xfer::{Progress, TransferContext, TransferError, TransferManager};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::support::{Captured, settle};

type Manager = TransferManager<usize, String>;
type Outcome = Result<usize, TransferError<String>>;
type Job = Box<dyn FnOnce(TransferContext) -> BoxFuture<'static, Outcome>>;

/// A gate jobs wait at: released one job at a time, or opened for good.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    fn release_one(&self) {
        self.0.add_permits(1);
    }

    fn open(&self) {
        self.0.close();
    }

    async fn pass(&self) {
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    calls: HashMap<String, usize>,
    started: Vec<String>,
    running: usize,
    max_running: usize,
    holding_slot: usize,
    max_holding_slot: usize,
    cancelled: Vec<String>,
    per_key_running: HashMap<String, usize>,
    max_per_key_running: usize,
}

/// Records what jobs do.
#[derive(Clone, Default)]
struct Tracker(Arc<Mutex<State>>);

impl Tracker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn running(&self) -> usize {
        self.state().running
    }

    fn calls(&self, key: &str) -> usize {
        self.state().calls.get(key).copied().unwrap_or(0)
    }

    fn started(&self, key: &str) {
        let mut s = self.state();
        *s.calls.entry(key.to_string()).or_default() += 1;
        s.started.push(key.to_string());
        s.running += 1;
        s.max_running = s.max_running.max(s.running);
        let per_key = s.per_key_running.entry(key.to_string()).or_default();
        *per_key += 1;
        let per_key = *per_key;
        s.max_per_key_running = s.max_per_key_running.max(per_key);
        self.took_slot(&mut s);
    }

    fn took_slot(&self, s: &mut State) {
        s.holding_slot += 1;
        s.max_holding_slot = s.max_holding_slot.max(s.holding_slot);
    }

    fn stopped(&self, key: &str, cancelled: bool) {
        let mut s = self.state();
        s.running -= 1;
        s.holding_slot -= 1;
        *s.per_key_running.get_mut(key).unwrap() -= 1;
        if cancelled {
            s.cancelled.push(key.to_string());
        }
    }

    /// A job that runs until cancelled, then takes 5s (of the paused clock) to clean up.
    fn slow_to_stop(&self) -> Job {
        let tracker = self.clone();
        Box::new(move |ctx: TransferContext| {
            Box::pin(async move {
                tracker.started(ctx.key());
                ctx.cancelled().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                tracker.stopped(ctx.key(), true);
                Err(TransferError::Cancelled)
            })
        })
    }

    /// A job that waits at `gate` (or for cancellation) and then yields `value`.
    fn job(&self, value: usize, gate: &Gate) -> Job {
        self.job_with(value, gate, None)
    }

    /// Like [`Tracker::job`], first waiting at `inactive_gate` while marked inactive.
    fn job_with(&self, value: usize, gate: &Gate, inactive_gate: Option<&Gate>) -> Job {
        let tracker = self.clone();
        let gate = gate.clone();
        let inactive_gate = inactive_gate.cloned();
        Box::new(move |ctx: TransferContext| {
            Box::pin(async move {
                let key = ctx.key().to_string();
                tracker.started(&key);
                if let Some(inactive_gate) = inactive_gate {
                    tracker.state().holding_slot -= 1;
                    ctx.inactive(inactive_gate.pass()).await;
                    let mut s = tracker.state();
                    tracker.took_slot(&mut s);
                }
                let outcome = tokio::select! {
                    () = ctx.cancelled() => Err(TransferError::Cancelled),
                    () = gate.pass() => Ok(value),
                };
                tracker.stopped(&key, outcome.is_err());
                outcome
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn transfers_under_the_limit_all_start() {
    let manager = Manager::new(5);
    let tracker = Tracker::default();
    let gate = Gate::new();
    let watchers: Vec<_> = (0..3)
        .map(|i| {
            manager
                .transfer(format!("k{i}"), tracker.job(i, &gate), None)
                .1
        })
        .collect();
    settle().await;
    assert_eq!(tracker.running(), 3);
    assert_eq!(manager.active(), 3);
    assert_eq!(manager.queued(), 0);
    gate.open();
    for (i, watcher) in watchers.iter().enumerate() {
        assert_eq!(watcher.wait().await, Ok(i));
    }
}

#[tokio::test(start_paused = true)]
async fn never_more_than_three_of_eight_run_with_limit_three() {
    let manager = Manager::new(3);
    let tracker = Tracker::default();
    let gate = Gate::new();
    let watchers: Vec<_> = (0..8)
        .map(|i| {
            manager
                .transfer(format!("k{i}"), tracker.job(i, &gate), None)
                .1
        })
        .collect();
    settle().await;
    assert_eq!(tracker.running(), 3);
    assert_eq!(manager.queued(), 5);
    for finished in 1..=8 {
        gate.release_one();
        settle().await;
        assert_eq!(tracker.running(), 3.min(8 - finished));
    }
    for (i, watcher) in watchers.iter().enumerate() {
        assert_eq!(watcher.wait().await, Ok(i));
    }
    let state = tracker.state();
    assert_eq!(state.max_running, 3);
    let expected: Vec<_> = (0..8).map(|i| format!("k{i}")).collect();
    assert_eq!(state.started, expected, "queued transfers start in order");
}

#[tokio::test(start_paused = true)]
async fn inactive_transfers_give_their_slot_to_the_next_in_line() {
    let manager = Manager::new(3);
    let tracker = Tracker::default();
    let parents = Gate::new();
    let work = Gate::new();
    let watchers: Vec<_> = (0..8)
        .map(|i| {
            let job = tracker.job_with(i, &work, Some(&parents));
            manager.transfer(format!("k{i}"), job, None).1
        })
        .collect();
    settle().await;
    // All eight started, each went inactive at once and passed its slot on.
    assert_eq!(tracker.running(), 8);
    assert_eq!(manager.active(), 0);
    parents.open();
    settle().await;
    // Active again: they queue for slots like anyone else.
    assert_eq!(manager.active(), 3);
    assert_eq!(manager.queued(), 5);
    work.open();
    for (i, watcher) in watchers.iter().enumerate() {
        assert_eq!(watcher.wait().await, Ok(i));
    }
    assert_eq!(tracker.state().max_holding_slot, 3);
}

#[tokio::test(start_paused = true)]
async fn every_watcher_sees_progress_and_releasing_all_cancels() {
    let manager = Manager::new(0);
    let tracker = Tracker::default();
    let steps = Gate::new();
    let job = {
        let tracker = tracker.clone();
        let steps = steps.clone();
        move |ctx: TransferContext| async move {
            tracker.started(ctx.key());
            for n in 1..=10 {
                ctx.progress(Progress::new("x", "Step").with_bytes(n, Some(10)));
                tokio::select! {
                    () = ctx.cancelled() => {
                        tracker.stopped(ctx.key(), true);
                        return Err(TransferError::Cancelled);
                    }
                    () = steps.pass() => {}
                }
            }
            tracker.stopped(ctx.key(), false);
            Ok(10)
        }
    };
    let mut captures = Vec::new();
    let mut watchers = Vec::new();
    let (output, capture) = Captured::new();
    let (transfer, first) = manager.transfer("k", job, Some(output));
    captures.push(capture);
    watchers.push(first);
    for _ in 0..3 {
        let (output, capture) = Captured::new();
        let (same, watcher) = manager.transfer("k", |_| async { Ok(0) }, Some(output));
        assert_eq!(same.key(), transfer.key());
        captures.push(capture);
        watchers.push(watcher);
    }
    assert_eq!(transfer.watchers(), 4);
    for step in 1..=3 {
        settle().await;
        for capture in &mut captures {
            assert_eq!(capture.last().unwrap().current, step);
        }
        steps.release_one();
    }
    settle().await;

    // Releasing all but one does not cancel; the released outputs hear nothing more.
    for watcher in watchers.drain(..3) {
        watcher.release();
    }
    let heard: Vec<usize> = captures.iter_mut().map(|c| c.all().len()).collect();
    steps.release_one();
    settle().await;
    assert!(!transfer.is_cancelled());
    for (capture, before) in captures.iter_mut().zip(&heard).take(3) {
        assert_eq!(capture.all().len(), *before);
    }
    assert_eq!(captures[3].last().unwrap().current, 5);

    // Releasing the last one cancels.
    watchers.pop().unwrap().release();
    timeout(Duration::from_secs(1), transfer.released())
        .await
        .expect("released after the last watcher left");
    assert!(transfer.is_cancelled());
    assert_eq!(transfer.result(), Some(Err(TransferError::Cancelled)));
    assert_eq!(tracker.state().cancelled, vec!["k".to_string()]);
    assert!(manager.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_watcher_attached_after_completion_gets_the_result_and_can_release() {
    let manager = Manager::new(1);
    let (transfer, first) = manager.transfer(
        "k",
        |ctx| async move {
            ctx.progress(Progress::new("k", "Done"));
            Ok(7)
        },
        None,
    );
    assert_eq!(first.wait().await, Ok(7));
    assert!(transfer.is_done());

    let (output, mut capture) = Captured::new();
    let late = transfer.watch(Some(output));
    assert_eq!(late.wait().await, Ok(7));
    assert_eq!(capture.statuses("k"), vec!["Done".to_string()]);

    first.release();
    assert!(!transfer.is_released(), "the late watcher still holds it");
    late.release();
    timeout(Duration::from_secs(1), transfer.released())
        .await
        .unwrap();
    assert!(!transfer.is_cancelled());
    assert!(manager.is_empty());
}

#[tokio::test(start_paused = true)]
async fn five_requests_for_one_key_run_the_function_once() {
    let manager = Manager::new(0);
    let tracker = Tracker::default();
    let gate = Gate::new();
    let watchers: Vec<_> = (0..5)
        .map(|i| {
            manager
                .transfer("same", tracker.job(100 + i, &gate), None)
                .1
        })
        .collect();
    settle().await;
    assert_eq!(tracker.calls("same"), 1);
    assert_eq!(watchers[0].transfer().watchers(), 5);
    gate.open();
    for watcher in &watchers {
        assert_eq!(watcher.wait().await, Ok(100));
    }
    assert_eq!(tracker.calls("same"), 1);
}

#[tokio::test(start_paused = true)]
async fn raising_the_limit_starts_queued_transfers_at_once() {
    let manager = Manager::new(1);
    let tracker = Tracker::default();
    let gate = Gate::new();
    let watchers: Vec<_> = (0..4)
        .map(|i| {
            manager
                .transfer(format!("k{i}"), tracker.job(i, &gate), None)
                .1
        })
        .collect();
    settle().await;
    assert_eq!(tracker.running(), 1);
    manager.set_concurrency(3);
    settle().await;
    assert_eq!(tracker.running(), 3, "no transfer had to finish first");
    manager.set_concurrency(0);
    settle().await;
    assert_eq!(tracker.running(), 4);
    gate.open();
    for (i, watcher) in watchers.iter().enumerate() {
        assert_eq!(watcher.wait().await, Ok(i));
    }
}

#[tokio::test(start_paused = true)]
async fn a_late_watcher_first_receives_the_latest_progress() {
    let manager = Manager::new(0);
    let gate = Gate::new();
    let job = {
        let gate = gate.clone();
        move |ctx: TransferContext| async move {
            for n in 1..=3 {
                ctx.progress(Progress::new("x", "Step").with_bytes(n, None));
            }
            gate.pass().await;
            Ok(3)
        }
    };
    let (_transfer, _first) = manager.transfer("k", job, None);
    settle().await;
    let (output, mut capture) = Captured::new();
    let (_, late) = manager.transfer("k", |_| async { Ok(0) }, Some(output));
    settle().await;
    assert_eq!(capture.statuses("x"), vec!["Step 3".to_string()]);
    gate.open();
    assert_eq!(late.wait().await, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn progress_keeps_only_the_latest_state_so_watchers_never_hold_a_transfer_back() {
    let manager = Manager::new(0);
    let (output, mut capture) = Captured::new();
    let (transfer, watcher) = manager.transfer(
        "k",
        |ctx| async move {
            // A burst no watcher could keep up with, published without ever waiting.
            for n in 1..=1000 {
                ctx.progress(Progress::new("x", "Step").with_bytes(n, Some(1000)));
            }
            Ok(1000)
        },
        Some(output),
    );
    assert_eq!(watcher.wait().await, Ok(1000));
    assert!(transfer.is_done());
    let seen = capture.all().to_vec();
    assert!(seen.len() < 10, "watcher saw {} states", seen.len());
    assert_eq!(seen.last().unwrap().current, 1000);
}

#[tokio::test(start_paused = true)]
async fn the_waiting_progress_is_published_while_queued() {
    let manager = Manager::new(1);
    let gate = Gate::new();
    let tracker = Tracker::default();
    let (_, _busy) = manager.transfer("busy", tracker.job(0, &gate), None);
    let (output, mut capture) = Captured::new();
    let (_, queued) = manager.transfer(
        "queued",
        |ctx| {
            ctx.set_waiting_progress(Progress::new("q", "Waiting"));
            async move {
                ctx.progress(Progress::new("q", "Running"));
                Ok(1)
            }
        },
        Some(output),
    );
    settle().await;
    assert_eq!(capture.statuses("q"), vec!["Waiting".to_string()]);
    gate.open();
    assert_eq!(queued.wait().await, Ok(1));
    assert_eq!(capture.last().unwrap().action, "Running");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_key_is_replaced_by_a_fresh_transfer_once_the_old_one_ends() {
    let manager = Manager::new(0);
    let tracker = Tracker::default();
    let (old, watcher) = manager.transfer("k", tracker.slow_to_stop(), None);
    settle().await;
    watcher.release();
    assert!(old.is_cancelled());

    let gate = Gate::new();
    gate.open();
    let (fresh, watcher) = manager.transfer("k", tracker.job(2, &gate), None);
    assert!(!fresh.is_cancelled());
    settle().await;
    assert_eq!(
        tracker.calls("k"),
        1,
        "the fresh transfer waits for the old one"
    );
    assert!(!old.is_done());

    assert_eq!(watcher.wait().await, Ok(2));
    assert!(old.is_done());
    assert_eq!(tracker.calls("k"), 2);
    assert_eq!(tracker.state().max_per_key_running, 1);
}

#[tokio::test(start_paused = true)]
async fn a_replacement_cancelled_while_waiting_still_keeps_the_next_one_from_overlapping() {
    let manager = Manager::new(0);
    let tracker = Tracker::default();
    let gate = Gate::new();
    gate.open();
    let (first, watcher) = manager.transfer("k", tracker.slow_to_stop(), None);
    settle().await;
    watcher.release();
    let (second, watcher) = manager.transfer("k", tracker.job(2, &gate), None);
    watcher.release();
    settle().await;
    assert!(second.is_cancelled());
    assert!(
        !second.is_done(),
        "ends only after the transfer it replaced"
    );

    let (_, watcher) = manager.transfer("k", tracker.job(3, &gate), None);
    assert_eq!(watcher.wait().await, Ok(3));
    assert!(first.is_done() && second.is_done());
    assert_eq!(tracker.calls("k"), 2, "the cancelled replacement never ran");
    assert_eq!(tracker.state().max_per_key_running, 1);
}

#[tokio::test(start_paused = true)]
async fn a_transfer_survives_one_callers_cancellation_while_others_watch() {
    let manager = Manager::new(0);
    let tracker = Tracker::default();
    let gate = Gate::new();
    let caller = |manager: Manager, tracker: Tracker, gate: Gate| async move {
        let (_, watcher) = manager.transfer("k", tracker.job(1, &gate), None);
        watcher.wait().await
    };
    let quitter = tokio::spawn(caller(manager.clone(), tracker.clone(), gate.clone()));
    let stayer = tokio::spawn(caller(manager.clone(), tracker.clone(), gate.clone()));
    settle().await;
    quitter.abort();
    settle().await;
    assert!(!manager.get("k").unwrap().is_cancelled());
    gate.open();
    assert_eq!(stayer.await.unwrap(), Ok(1));
    assert_eq!(tracker.calls("k"), 1);
    assert!(tracker.state().cancelled.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_transfer_reports_the_panic_to_its_watchers() {
    let manager = Manager::new(1);
    let (_, watcher) = manager.transfer(
        "k",
        |_| async {
            if true {
                panic!("descriptor bug");
            }
            Ok(0)
        },
        None,
    );
    assert_eq!(
        watcher.wait().await,
        Err(TransferError::Panicked {
            message: "descriptor bug".to_string()
        })
    );
    // The slot came back.
    let (_, next) = manager.transfer("other", |_| async { Ok(1) }, None);
    assert_eq!(next.wait().await, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn a_released_transfer_is_forgotten_and_the_next_request_starts_afresh() {
    let manager = Manager::new(0);
    let tracker = Tracker::default();
    let gate = Gate::new();
    gate.open();
    let (_, watcher) = manager.transfer("k", tracker.job(1, &gate), None);
    assert_eq!(watcher.wait().await, Ok(1));
    assert_eq!(manager.len(), 1, "finished but still watched");
    drop(watcher);
    assert!(manager.is_empty());
    let (_, watcher) = manager.transfer("k", tracker.job(2, &gate), None);
    assert_eq!(watcher.wait().await, Ok(2));
    assert_eq!(tracker.calls("k"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_transfer_cancelled_while_queued_never_runs_and_frees_its_place() {
    let manager = Manager::new(1);
    let tracker = Tracker::default();
    let gate = Gate::new();
    let (_, busy) = manager.transfer("busy", tracker.job(0, &gate), None);
    let (queued, watcher) = manager.transfer("queued", tracker.job(1, &gate), None);
    let (_, next) = manager.transfer("next", tracker.job(2, &gate), None);
    settle().await;
    watcher.release();
    settle().await;
    assert!(queued.is_done());
    assert_eq!(queued.result(), Some(Err(TransferError::Cancelled)));
    gate.open();
    assert_eq!(busy.wait().await, Ok(0));
    assert_eq!(next.wait().await, Ok(2));
    assert_eq!(tracker.calls("queued"), 0);
}
