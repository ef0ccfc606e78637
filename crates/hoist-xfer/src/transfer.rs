//! Keyed, de-duplicated, watched transfers under a concurrency limit.
//!
//! A [`TransferManager`] runs *transfers*: futures identified by a string key whose result of
//! type `T` (or error `E`) is shared by everyone interested. [`TransferManager::transfer`] either
//! starts a transfer for a key or attaches to the one already running, and returns a
//! [`Watcher`]: a handle that forwards the transfer's progress to the caller's output and
//! yields its result. A transfer lives until it ends; when the **last** watcher goes away
//! (released or dropped) before that, the transfer is cancelled.
//!
//! # Lifecycle of one transfer
//! 1. `transfer(key, do_fn, output)` with no live transfer for `key` registers a new one and
//!    calls `do_fn(ctx)` synchronously. `do_fn` may do cheap set-up (for example start
//!    transfers it depends on, so they queue in a deterministic order) and returns the future
//!    that does the work. That future is not polled until the transfer holds a slot.
//! 2. The transfer waits for a slot (FIFO, see [`TransferManager::set_concurrency`]), publishing
//!    the progress set with [`TransferContext::set_waiting_progress`] while it queues.
//! 3. The future runs. It reports progress through the [`TransferContext`], watches
//!    [`TransferContext::cancelled`], and may give its slot back while it only waits, with
//!    [`TransferContext::inactive`].
//! 4. Its result is stored and every watcher's [`Watcher::wait`] returns a clone of it. The
//!    transfer stays attachable (later callers get the same result at once) until it is
//!    *released*: ended with no watcher left. Then it is forgotten and the next request for
//!    the key starts afresh.
//!
//! Cancellation is cooperative: the future sees the token fire and should return promptly
//! (usually with [`TransferError::Cancelled`]); the engine never drops a running transfer
//! future, so the future can finish a step that must not be interrupted. A transfer that is
//! cancelled while still queued never runs. A request for a key whose transfer was cancelled
//! but has not ended yet gets a fresh transfer that starts only after the old one has ended,
//! so one key never runs twice at once.

use std::any::Any;
use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::SharedError;
use crate::progress::{Progress, ProgressOutput, SharedProgress};
use crate::slots::{Scheduler, Slot};
use crate::sync::lock;

/// Why a transfer produced no value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError<E> {
    /// The transfer was cancelled (every watcher released it) before it produced a value.
    Cancelled,
    /// The transfer's future panicked; the message is the panic payload, if it was a string.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The transfer itself failed.
    Failed(E),
}

impl<E> TransferError<E> {
    /// Whether this is [`TransferError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// The transfer's own error, if it failed.
    pub fn failure(&self) -> Option<&E> {
        match self {
            Self::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Converts the transfer's own error, keeping cancellation and panics.
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> TransferError<F> {
        match self {
            Self::Cancelled => TransferError::Cancelled,
            Self::Panicked { message } => TransferError::Panicked { message },
            Self::Failed(e) => TransferError::Failed(f(e)),
        }
    }
}

impl<E: fmt::Display> fmt::Display for TransferError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("transfer cancelled"),
            Self::Panicked { message } => write!(f, "transfer task panicked: {message}"),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for TransferError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            // Transparent: the failure's own message is this error's message.
            Self::Failed(e) => e.source(),
            _ => None,
        }
    }
}

/// Progress published by a transfer: only the latest report is kept, so a slow watcher skips
/// intermediate states instead of holding the transfer back.
#[derive(Debug)]
struct Broadcast {
    tx: watch::Sender<Option<Progress>>,
}

impl ProgressOutput for Broadcast {
    fn update(&self, progress: Progress) {
        self.tx.send_replace(Some(progress));
    }
}

type Registry<T, E> = Mutex<HashMap<String, Transfer<T, E>>>;

static NEXT_TRANSFER_ID: AtomicU64 = AtomicU64::new(1);

struct Shared<T, E> {
    id: u64,
    key: String,
    token: CancellationToken,
    progress: Arc<Broadcast>,
    attachments: Mutex<Attachments>,
    outcome: OnceLock<Result<T, TransferError<E>>>,
    done: watch::Sender<bool>,
    released: watch::Sender<bool>,
    registry: Weak<Registry<T, E>>,
}

#[derive(Debug)]
struct Attachments {
    watchers: usize,
    done: bool,
}

impl<T, E> Shared<T, E> {
    /// Adds a watcher unless the transfer is cancelled or already released.
    fn try_attach(&self) -> bool {
        let mut attachments = lock(&self.attachments);
        if self.token.is_cancelled() || (attachments.done && attachments.watchers == 0) {
            return false;
        }
        attachments.watchers += 1;
        true
    }

    fn attach(&self) {
        lock(&self.attachments).watchers += 1;
    }

    fn detach(&self) {
        let released = {
            let mut attachments = lock(&self.attachments);
            attachments.watchers = attachments.watchers.saturating_sub(1);
            if attachments.watchers > 0 {
                false
            } else if attachments.done {
                true
            } else {
                // Cancel under the lock, so no new watcher can attach to a dying transfer.
                self.token.cancel();
                false
            }
        };
        if released {
            self.mark_released();
        }
    }

    fn finish(&self, outcome: Result<T, TransferError<E>>) {
        // The first outcome wins; a later one can only come from the drop guard.
        let _ = self.outcome.set(outcome);
        let released = {
            let mut attachments = lock(&self.attachments);
            attachments.done = true;
            attachments.watchers == 0
        };
        self.done.send_replace(true);
        if released {
            self.mark_released();
        }
    }

    fn mark_released(&self) {
        self.released.send_replace(true);
        if let Some(registry) = self.registry.upgrade() {
            let removed = {
                let mut map = lock(&registry);
                match map.get(&self.key) {
                    Some(current) if current.shared.id == self.id => map.remove(&self.key),
                    _ => None,
                }
            };
            // Dropped outside the lock: the last handle may drop the result, running user code.
            drop(removed);
        }
    }
}

/// A handle on one transfer. Cheap to clone; holding it does not keep the transfer alive
/// (only [`Watcher`]s do).
pub struct Transfer<T, E = SharedError> {
    shared: Arc<Shared<T, E>>,
}

impl<T, E> Clone for Transfer<T, E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, E> fmt::Debug for Transfer<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attachments = lock(&self.shared.attachments);
        f.debug_struct("Transfer")
            .field("key", &self.shared.key)
            .field("watchers", &attachments.watchers)
            .field("done", &attachments.done)
            .field("cancelled", &self.shared.token.is_cancelled())
            .finish()
    }
}

impl<T, E> Transfer<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    fn new(key: String, registry: Weak<Registry<T, E>>) -> Self {
        let (progress, _) = watch::channel(None);
        let (done, _) = watch::channel(false);
        let (released, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                id: NEXT_TRANSFER_ID.fetch_add(1, Ordering::Relaxed),
                key,
                token: CancellationToken::new(),
                progress: Arc::new(Broadcast { tx: progress }),
                attachments: Mutex::new(Attachments {
                    watchers: 1,
                    done: false,
                }),
                outcome: OnceLock::new(),
                done,
                released,
                registry,
            }),
        }
    }

    /// The key the transfer runs under.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// Attaches another watcher. It first receives the latest progress, then every later
    /// state it keeps up with. Watching a finished transfer is allowed and yields its result.
    ///
    /// # Panics
    /// When `output` is given and no tokio runtime is running.
    pub fn watch(&self, output: Option<SharedProgress>) -> Watcher<T, E> {
        self.shared.attach();
        Watcher::attached(self.clone(), output)
    }

    /// Resolves once the transfer has ended (with a value, an error or cancelled).
    pub async fn done(&self) {
        let mut done = self.shared.done.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close while we wait.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Resolves once the transfer has ended and no watcher remains.
    pub async fn released(&self) {
        let mut released = self.shared.released.subscribe();
        let _ = released.wait_for(|released| *released).await;
    }

    /// Whether the transfer has ended.
    pub fn is_done(&self) -> bool {
        *self.shared.done.borrow()
    }

    /// Whether the transfer has ended and no watcher remains.
    pub fn is_released(&self) -> bool {
        *self.shared.released.borrow()
    }

    /// Whether the transfer was cancelled (its last watcher went away before it ended).
    pub fn is_cancelled(&self) -> bool {
        self.shared.token.is_cancelled()
    }

    /// The result, once the transfer has ended.
    pub fn result(&self) -> Option<Result<T, TransferError<E>>> {
        self.shared.outcome.get().cloned()
    }

    /// The latest progress the transfer published.
    pub fn latest_progress(&self) -> Option<Progress> {
        self.shared.progress.tx.borrow().clone()
    }

    /// Number of watchers currently attached.
    pub fn watchers(&self) -> usize {
        lock(&self.shared.attachments).watchers
    }
}

/// One party's interest in a transfer.
///
/// While it lives, the transfer's progress is forwarded to the output it was created with and
/// the transfer is not cancelled. Dropping it, or calling [`Watcher::release`], releases it:
/// no progress reaches its output afterwards, and if it was the last watcher of an unfinished
/// transfer, that transfer is cancelled.
pub struct Watcher<T, E = SharedError> {
    transfer: Transfer<T, E>,
    forwarding: Option<Forwarding>,
}

impl<T, E> fmt::Debug for Watcher<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("transfer", &self.transfer)
            .field("forwards_progress", &self.forwarding.is_some())
            .finish()
    }
}

impl<T, E> Watcher<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// Wraps an attachment that was already counted.
    fn attached(transfer: Transfer<T, E>, output: Option<SharedProgress>) -> Self {
        let forwarding = output.map(|output| Forwarding::start(&transfer.shared, output));
        Self {
            transfer,
            forwarding,
        }
    }

    /// The transfer being watched.
    pub fn transfer(&self) -> &Transfer<T, E> {
        &self.transfer
    }

    /// Waits for the transfer to end and returns its result. The latest progress is delivered
    /// to this watcher's output before this returns.
    pub async fn wait(&self) -> Result<T, TransferError<E>> {
        self.transfer.done().await;
        if let Some(forwarding) = &self.forwarding {
            forwarding.flush();
        }
        self.transfer
            .result()
            .unwrap_or(Err(TransferError::Cancelled))
    }

    /// Releases this watcher (the same as dropping it).
    pub fn release(self) {}
}

impl<T, E> Drop for Watcher<T, E> {
    fn drop(&mut self) {
        if let Some(forwarding) = self.forwarding.take() {
            forwarding.stop();
        }
        self.transfer.shared.detach();
    }
}

/// Delivers a transfer's progress to one watcher's output from a task of its own.
struct Forwarding {
    state: Arc<Mutex<ForwardState>>,
    task: JoinHandle<()>,
}

struct ForwardState {
    rx: watch::Receiver<Option<Progress>>,
    output: Option<SharedProgress>,
}

impl Forwarding {
    fn start<T, E>(shared: &Shared<T, E>, output: SharedProgress) -> Self {
        let mut rx = shared.progress.tx.subscribe();
        if rx.borrow().is_some() {
            // A late watcher first gets the latest state.
            rx.mark_changed();
        }
        let wake = shared.progress.tx.subscribe();
        let done = shared.done.subscribe();
        let state = Arc::new(Mutex::new(ForwardState {
            rx,
            output: Some(output),
        }));
        let task = tokio::spawn(forward_loop(Arc::clone(&state), wake, done));
        Self { state, task }
    }

    fn flush(&self) {
        flush(&self.state);
    }

    /// Stops forwarding. Taking the output under the lock guarantees that no report reaches it
    /// after this returns, even if the task is in the middle of a delivery.
    fn stop(self) {
        lock(&self.state).output = None;
        self.task.abort();
    }
}

async fn forward_loop(
    state: Arc<Mutex<ForwardState>>,
    mut wake: watch::Receiver<Option<Progress>>,
    mut done: watch::Receiver<bool>,
) {
    loop {
        flush(&state);
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = done.wait_for(|done| *done) => {
                flush(&state);
                break;
            }
        }
    }
}

fn flush(state: &Mutex<ForwardState>) {
    let mut guard = lock(state);
    let state = &mut *guard;
    let Some(output) = &state.output else {
        return;
    };
    if state.rx.has_changed().unwrap_or(false)
        && let Some(progress) = state.rx.borrow_and_update().clone()
    {
        output.update(progress);
    }
}

/// What a transfer's future gets to talk to the engine: progress, cancellation and its slot.
#[derive(Clone)]
pub struct TransferContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    key: String,
    token: CancellationToken,
    progress: Arc<Broadcast>,
    scheduler: Arc<Scheduler>,
    slot: Mutex<Option<Slot>>,
    waiting: Mutex<Option<Progress>>,
}

impl fmt::Debug for TransferContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferContext")
            .field("key", &self.inner.key)
            .field("cancelled", &self.inner.token.is_cancelled())
            .field("holds_slot", &self.holds_slot())
            .finish()
    }
}

impl ContextInner {
    /// A slot, waiting behind earlier requests; `None` if the transfer is cancelled first.
    async fn acquire_slot(&self) -> Option<Slot> {
        if let Some(slot) = self.scheduler.try_acquire() {
            return Some(slot);
        }
        let waiting = lock(&self.waiting).clone();
        if let Some(waiting) = waiting {
            self.progress.update(waiting);
        }
        tokio::select! {
            biased;
            () = self.token.cancelled() => None,
            slot = self.scheduler.acquire() => Some(slot),
        }
    }

    fn give_back_slot(&self) {
        let slot = lock(&self.slot).take();
        drop(slot);
    }
}

impl TransferContext {
    /// The key of the transfer.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The transfer's cancellation token; it fires when the last watcher goes away.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.inner.token
    }

    /// Whether the transfer was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Resolves when the transfer is cancelled.
    pub async fn cancelled(&self) {
        self.inner.token.cancelled().await;
    }

    /// Publishes a progress report to every watcher (never blocks).
    pub fn progress(&self, progress: Progress) {
        self.inner.progress.update(progress);
    }

    /// The transfer's progress broadcaster as an output, to hand to code that reports progress
    /// (a descriptor, or another transfer's watcher).
    pub fn progress_output(&self) -> SharedProgress {
        Arc::clone(&self.inner.progress) as SharedProgress
    }

    /// Sets the report published whenever this transfer has to queue for a slot
    /// (at the start, or when it becomes active again after [`TransferContext::inactive`]).
    /// Call it in the synchronous part of the transfer function to cover the first wait.
    pub fn set_waiting_progress(&self, progress: Progress) {
        *lock(&self.inner.waiting) = Some(progress);
    }

    /// Whether the transfer currently holds a concurrency slot.
    pub fn holds_slot(&self) -> bool {
        lock(&self.inner.slot).is_some()
    }

    /// Runs `fut` with the transfer marked *inactive*: its slot goes to the next transfer in
    /// line while `fut` runs (use it while only waiting, e.g. for a parent), and is taken back,
    /// queueing behind others, when `fut` completes.
    ///
    /// If the transfer is cancelled while queueing for its slot again, this returns at once
    /// without one; check [`TransferContext::is_cancelled`] afterwards.
    pub async fn inactive<F: Future>(&self, fut: F) -> F::Output {
        let had_slot = {
            let slot = lock(&self.inner.slot).take();
            slot.is_some()
        };
        let output = fut.await;
        if had_slot && let Some(slot) = self.inner.acquire_slot().await {
            *lock(&self.inner.slot) = Some(slot);
        }
        output
    }
}

/// Finishes the transfer as cancelled if its task is dropped before finishing it (for example
/// when the runtime shuts down), so no watcher waits forever.
struct FinishGuard<T, E> {
    shared: Option<Arc<Shared<T, E>>>,
}

impl<T, E> FinishGuard<T, E> {
    fn finish(mut self, outcome: Result<T, TransferError<E>>) {
        if let Some(shared) = self.shared.take() {
            shared.finish(outcome);
        }
    }
}

impl<T, E> Drop for FinishGuard<T, E> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.finish(Err(TransferError::Cancelled));
        }
    }
}

async fn run<T, E, Fut>(
    ctx: Arc<ContextInner>,
    prior: Option<Transfer<T, E>>,
    fut: Fut,
) -> Result<T, TransferError<E>>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TransferError<E>>> + Send + 'static,
{
    if let Some(prior) = prior {
        // The key's previous transfer was cancelled but is still winding down. Wait for it even
        // if this one is cancelled meanwhile: this transfer must not count as ended (and so let
        // yet another one start) while its predecessor may still be running.
        prior.done().await;
        if ctx.token.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
    }
    let Some(slot) = ctx.acquire_slot().await else {
        return Err(TransferError::Cancelled);
    };
    *lock(&ctx.slot) = Some(slot);
    let result = AssertUnwindSafe(fut).catch_unwind().await;
    ctx.give_back_slot();
    result.unwrap_or_else(|panic| {
        Err(TransferError::Panicked {
            message: panic_message(panic.as_ref()),
        })
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Schedules, de-duplicates and watches transfers producing `T` or failing with `E`.
///
/// Cloning gives another handle on the same manager.
pub struct TransferManager<T, E = SharedError> {
    registry: Arc<Registry<T, E>>,
    scheduler: Arc<Scheduler>,
}

impl<T, E> Clone for TransferManager<T, E> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            scheduler: Arc::clone(&self.scheduler),
        }
    }
}

impl<T, E> fmt::Debug for TransferManager<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferManager")
            .field("transfers", &lock(&self.registry).len())
            .field("scheduler", &self.scheduler)
            .finish()
    }
}

impl<T, E> TransferManager<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// A manager running at most `concurrency` transfers at once (0 = unlimited).
    pub fn new(concurrency: usize) -> Self {
        Self {
            registry: Arc::new(Mutex::new(HashMap::new())),
            scheduler: Scheduler::new(concurrency),
        }
    }

    /// Changes the concurrency limit (0 = unlimited). Raising it starts queued transfers at
    /// once; lowering it lets running transfers finish and starts none until fewer than the
    /// new limit hold a slot.
    pub fn set_concurrency(&self, concurrency: usize) {
        self.scheduler.set_limit(concurrency);
    }

    /// The current concurrency limit (0 = unlimited).
    pub fn concurrency(&self) -> usize {
        self.scheduler.limit()
    }

    /// Number of transfers currently holding a slot.
    pub fn active(&self) -> usize {
        self.scheduler.active()
    }

    /// Number of transfers waiting for a slot.
    pub fn queued(&self) -> usize {
        self.scheduler.queued()
    }

    /// Number of transfers the manager tracks (running, queued, or finished but still watched).
    pub fn len(&self) -> usize {
        lock(&self.registry).len()
    }

    /// Whether the manager tracks no transfer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tracked transfer for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Transfer<T, E>> {
        lock(&self.registry).get(key).cloned()
    }

    /// Starts the transfer for `key`, or attaches to the one already tracked.
    ///
    /// When a transfer for `key` is running, queued, or finished but still watched, this
    /// attaches a new watcher to it and drops `do_fn` without calling it. Otherwise `do_fn` is
    /// called right away with the new transfer's context and the future it returns is run
    /// once the transfer has a slot. `output`, if given, receives the transfer's progress for
    /// as long as the returned watcher lives.
    ///
    /// # Panics
    /// When called outside a tokio runtime, or (after recording the failure for any watcher)
    /// when `do_fn` itself panics.
    pub fn transfer<F, Fut>(
        &self,
        key: impl Into<String>,
        do_fn: F,
        output: Option<SharedProgress>,
    ) -> (Transfer<T, E>, Watcher<T, E>)
    where
        F: FnOnce(TransferContext) -> Fut,
        Fut: Future<Output = Result<T, TransferError<E>>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            panic!("TransferManager::transfer must be called within a tokio runtime");
        };
        let key = key.into();
        let (transfer, prior, replaced) = {
            let mut map = lock(&self.registry);
            let prior = match map.get(&key) {
                Some(existing) if existing.shared.try_attach() => {
                    let existing = existing.clone();
                    drop(map);
                    let watcher = Watcher::attached(existing.clone(), output);
                    return (existing, watcher);
                }
                Some(existing) => Some(existing.clone()),
                None => None,
            };
            let transfer = Transfer::new(key.clone(), Arc::downgrade(&self.registry));
            let replaced = map.insert(key.clone(), transfer.clone());
            (transfer, prior, replaced)
        };
        drop(replaced);

        let ctx = TransferContext {
            inner: Arc::new(ContextInner {
                key,
                token: transfer.shared.token.clone(),
                progress: Arc::clone(&transfer.shared.progress),
                scheduler: Arc::clone(&self.scheduler),
                slot: Mutex::new(None),
                waiting: Mutex::new(None),
            }),
        };
        let runner_ctx = Arc::clone(&ctx.inner);
        let guard = FinishGuard {
            shared: Some(Arc::clone(&transfer.shared)),
        };
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| do_fn(ctx))) {
            Ok(fut) => fut,
            Err(panic) => {
                guard.finish(Err(TransferError::Panicked {
                    message: panic_message(panic.as_ref()),
                }));
                // No watcher will be handed out: drop the initial count so the key is freed.
                transfer.shared.detach();
                std::panic::resume_unwind(panic);
            }
        };
        runtime.spawn(async move {
            let outcome = run(runner_ctx, prior, fut).await;
            guard.finish(outcome);
        });
        let watcher = Watcher::attached(transfer.clone(), output);
        (transfer, watcher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_errors_display_and_map() {
        let failed: TransferError<String> = TransferError::Failed("disk full".to_string());
        assert_eq!(failed.to_string(), "disk full");
        assert_eq!(failed.failure(), Some(&"disk full".to_string()));
        assert_eq!(
            failed.map(|e| e.len()),
            TransferError::<usize>::Failed("disk full".len())
        );
        let cancelled: TransferError<String> = TransferError::Cancelled;
        assert!(cancelled.is_cancelled());
        assert_eq!(cancelled.to_string(), "transfer cancelled");
    }

    #[tokio::test]
    async fn a_transfer_function_that_panics_leaves_the_key_free() {
        let manager: TransferManager<u8, String> = TransferManager::new(1);
        let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| {
            manager.transfer(
                "k",
                |_ctx| -> std::future::Ready<Result<u8, TransferError<String>>> {
                    panic!("set-up bug")
                },
                None,
            )
        }));
        assert!(attempt.is_err());
        assert!(manager.is_empty());
        let (_, watcher) = manager.transfer("k", |_| async { Ok(1) }, None);
        assert_eq!(watcher.wait().await, Ok(1));
    }

    #[tokio::test]
    async fn watching_a_finished_transfer_needs_no_slot() {
        let manager: TransferManager<u8, String> = TransferManager::new(1);
        let (transfer, first) = manager.transfer("k", |_| async { Ok(5) }, None);
        assert_eq!(first.wait().await, Ok(5));
        // The only slot is busy now, yet the finished transfer answers at once.
        let (_, _busy) = manager.transfer("other", |_| std::future::pending(), None);
        let second = transfer.watch(None);
        assert_eq!(second.wait().await, Ok(5));
        assert_eq!(transfer.watchers(), 2);
    }
}
