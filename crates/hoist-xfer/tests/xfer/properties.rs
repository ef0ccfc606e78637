//! Property test: random sequences of requests, releases, cancelled callers, late watchers,
//! limit changes and time never deadlock, never exceed the limit, and never run one key twice
//! at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_xfer::{TransferContext, TransferError, TransferManager, Watcher};
use proptest::prelude::*;
use tokio::task::JoinHandle;
use tokio::time::sleep;

use crate::support::settle;

type Manager = TransferManager<usize, String>;
type Outcome = Result<usize, TransferError<String>>;

#[derive(Clone, Debug)]
struct JobSpec {
    key: usize,
    work_ms: u64,
    inactive_ms: Option<u64>,
    /// Ignores cancellation and finishes its work anyway.
    stubborn: bool,
}

#[derive(Clone, Debug)]
enum Op {
    /// `transfer()` and keep the watcher.
    Watch(JobSpec),
    /// A caller task that requests the transfer and awaits it.
    Call(JobSpec),
    /// Release a kept watcher.
    Release(usize),
    /// Abort a caller task (its future is dropped mid-wait).
    Cancel(usize),
    /// Attach another watcher to a kept watcher's transfer.
    WatchAgain(usize),
    SetLimit(usize),
    Advance(u64),
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        0usize..3,
        1u64..40,
        proptest::option::weighted(0.3, 1u64..30),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(key, work_ms, inactive_ms, stubborn)| JobSpec {
            key,
            work_ms,
            inactive_ms,
            stubborn,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => job_spec().prop_map(Op::Watch),
        2 => job_spec().prop_map(Op::Call),
        2 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::WatchAgain),
        1 => (0usize..4).prop_map(Op::SetLimit),
        2 => (0u64..30).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Default)]
struct Invariants {
    limit: usize,
    holding: usize,
    per_key: HashMap<usize, usize>,
    violations: Vec<String>,
}

#[derive(Clone, Default)]
struct Checker(Arc<Mutex<Invariants>>);

impl Checker {
    fn take_slot(&self, what: &str) {
        let mut inv = self.0.lock().unwrap();
        inv.holding += 1;
        if inv.limit != 0 && inv.holding > inv.limit {
            let message = format!("{what}: {} hold slots, limit {}", inv.holding, inv.limit);
            inv.violations.push(message);
        }
    }

    fn give_slot(&self) {
        self.0.lock().unwrap().holding -= 1;
    }

    fn start(&self, key: usize) {
        {
            let mut inv = self.0.lock().unwrap();
            let running = inv.per_key.entry(key).or_default();
            *running += 1;
            if *running > 1 {
                let message = format!("key {key} running {running} times at once");
                inv.violations.push(message);
            }
        }
        self.take_slot("start");
    }

    fn stop(&self, key: usize, holding: bool) {
        let mut inv = self.0.lock().unwrap();
        *inv.per_key.get_mut(&key).unwrap() -= 1;
        if holding {
            inv.holding -= 1;
        }
    }

    fn job(
        &self,
        spec: &JobSpec,
    ) -> impl FnOnce(TransferContext) -> futures_util::future::BoxFuture<'static, Outcome> + use<>
    {
        let checker = self.clone();
        let spec = spec.clone();
        move |ctx: TransferContext| {
            Box::pin(async move {
                checker.start(spec.key);
                let mut holding = true;
                if let Some(ms) = spec.inactive_ms {
                    checker.give_slot();
                    ctx.inactive(sleep(Duration::from_millis(ms))).await;
                    holding = ctx.holds_slot();
                    if holding {
                        checker.take_slot("re-activation");
                    }
                }
                let work = sleep(Duration::from_millis(spec.work_ms));
                let outcome = if spec.stubborn {
                    work.await;
                    Ok(spec.key)
                } else {
                    tokio::select! {
                        () = ctx.cancelled() => Err(TransferError::Cancelled),
                        () = work => Ok(spec.key),
                    }
                };
                checker.stop(spec.key, holding);
                outcome
            })
        }
    }
}

async fn run_ops(initial_limit: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let manager = Manager::new(initial_limit);
    let checker = Checker::default();
    checker.0.lock().unwrap().limit = initial_limit;
    let mut watchers: Vec<(usize, Watcher<usize, String>)> = Vec::new();
    let mut callers: Vec<(usize, JoinHandle<Outcome>)> = Vec::new();

    for op in ops {
        match op {
            Op::Watch(spec) => {
                let (_, watcher) =
                    manager.transfer(format!("k{}", spec.key), checker.job(&spec), None);
                watchers.push((spec.key, watcher));
            }
            Op::Call(spec) => {
                let manager = manager.clone();
                let job = checker.job(&spec);
                let handle = tokio::spawn(async move {
                    let (_, watcher) = manager.transfer(format!("k{}", spec.key), job, None);
                    watcher.wait().await
                });
                callers.push((spec.key, handle));
            }
            Op::Release(i) if !watchers.is_empty() => {
                let i = i % watchers.len();
                watchers.swap_remove(i).1.release();
            }
            Op::Cancel(i) if !callers.is_empty() => {
                let i = i % callers.len();
                callers.swap_remove(i).1.abort();
            }
            Op::WatchAgain(i) if !watchers.is_empty() => {
                let (key, watcher) = &watchers[i % watchers.len()];
                let again = watcher.transfer().watch(None);
                watchers.push((*key, again));
            }
            Op::SetLimit(limit) => {
                // Let transfers already granted a slot start before the limit changes.
                settle().await;
                checker.0.lock().unwrap().limit = limit;
                manager.set_concurrency(limit);
            }
            Op::Advance(ms) => sleep(Duration::from_millis(ms)).await,
            _ => {}
        }
        settle().await;
    }

    // Everything still wanted finishes, with its value: a watched transfer is never cancelled.
    let deadline = Duration::from_secs(3600);
    for (key, watcher) in &watchers {
        let outcome = tokio::time::timeout(deadline, watcher.wait()).await;
        prop_assert!(outcome.is_ok(), "watcher of k{key} deadlocked");
        prop_assert_eq!(outcome.unwrap(), Ok(*key));
    }
    for (key, caller) in callers {
        let outcome = tokio::time::timeout(deadline, caller).await;
        prop_assert!(outcome.is_ok(), "caller of k{key} deadlocked");
        prop_assert_eq!(outcome.unwrap().unwrap(), Ok(key));
    }
    drop(watchers);
    sleep(deadline).await;

    let inv = checker.0.lock().unwrap();
    prop_assert!(inv.violations.is_empty(), "{:?}", inv.violations);
    prop_assert_eq!(inv.holding, 0);
    prop_assert!(inv.per_key.values().all(|n| *n == 0));
    prop_assert!(manager.is_empty(), "transfers left behind: {:?}", manager);
    prop_assert_eq!(manager.active(), 0);
    prop_assert_eq!(manager.queued(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_watch_release_cancel_and_limit_sequences_keep_the_invariants(
        initial_limit in 0usize..4,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run_ops(initial_limit, ops))?;
    }
}
