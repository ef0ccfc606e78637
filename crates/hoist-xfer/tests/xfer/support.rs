//! Fakes shared by the scenario tests: an in-memory layer store with reference counts, scripted
//! layer descriptors that record what happened to them, and progress capture.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_xfer::{
    BoxError, ChannelProgress, DownloadContext, DownloadDescriptor, LayerInfo, LayerStore,
    Progress, SharedProgress, UploadContext, UploadDescriptor, chain_id,
};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// The sha256 digest of `content`.
pub fn digest_of(content: &str) -> Digest {
    format!("sha256:{:x}", Sha256::digest(content.as_bytes()))
        .parse()
        .unwrap()
}

/// Lets every task that can make progress run, without moving the paused clock.
pub async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// Collects the progress reports sent to one output.
pub struct Captured {
    rx: UnboundedReceiver<Progress>,
    seen: Vec<Progress>,
}

impl Captured {
    pub fn new() -> (SharedProgress, Self) {
        let (output, rx) = ChannelProgress::shared();
        (
            output,
            Self {
                rx,
                seen: Vec::new(),
            },
        )
    }

    /// Every report received so far.
    pub fn all(&mut self) -> &[Progress] {
        while let Ok(p) = self.rx.try_recv() {
            self.seen.push(p);
        }
        &self.seen
    }

    /// The statuses reported for `id`, in order.
    pub fn statuses(&mut self, id: &str) -> Vec<String> {
        self.all()
            .iter()
            .filter(|p| p.id == id)
            .map(Progress::status)
            .collect()
    }

    /// Whether `id` was reported with exactly this action.
    pub fn saw(&mut self, id: &str, action: &str) -> bool {
        self.all().iter().any(|p| p.id == id && p.action == action)
    }

    /// The last report, if any.
    pub fn last(&mut self) -> Option<Progress> {
        self.all().last().cloned()
    }
}

/// A simple error with a message, optionally wrapping another.
#[derive(Debug)]
pub struct TestError {
    pub message: String,
    pub source: Option<BoxError>,
}

impl TestError {
    pub fn msg(message: &str) -> BoxError {
        Box::new(Self {
            message: message.to_string(),
            source: None,
        })
    }

    pub fn wrapping(message: &str, source: impl Into<BoxError>) -> BoxError {
        Box::new(Self {
            message: message.to_string(),
            source: Some(source.into()),
        })
    }
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for TestError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

pub fn connection_reset() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset",
    ))
}

/// A staged layer: what the fake descriptors produce and the fake store registers.
#[derive(Debug)]
pub struct Staged {
    pub diff_id: Digest,
}

#[derive(Debug)]
struct StoredLayer {
    diff_id: Digest,
    refs: isize,
}

#[derive(Debug, Default)]
struct StoreState {
    layers: HashMap<Digest, StoredLayer>,
    registered: Vec<Digest>,
    registering: usize,
}

/// An in-memory layer store that counts references per ChainID.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<StoreState>,
    register_time: Duration,
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A store whose registrations take `time` (of the paused clock).
    pub fn slow(time: Duration) -> Arc<Self> {
        Arc::new(Self {
            register_time: time,
            ..Self::default()
        })
    }

    /// Adds the layers `diff_ids` (bottom first) without references, as if pulled earlier.
    pub fn preload(&self, diff_ids: &[Digest]) {
        let mut state = self.state.lock().unwrap();
        let mut parent = None;
        for diff_id in diff_ids {
            let chain = chain_id(parent.as_ref(), diff_id);
            state.layers.entry(chain.clone()).or_insert(StoredLayer {
                diff_id: diff_id.clone(),
                refs: 0,
            });
            parent = Some(chain);
        }
    }

    pub fn contains(&self, chain: &Digest) -> bool {
        self.state.lock().unwrap().layers.contains_key(chain)
    }

    pub fn refs(&self, chain: &Digest) -> isize {
        self.state
            .lock()
            .unwrap()
            .layers
            .get(chain)
            .map_or(0, |l| l.refs)
    }

    /// The sum of all reference counts (0 when everything was given back).
    pub fn total_refs(&self) -> isize {
        self.state
            .lock()
            .unwrap()
            .layers
            .values()
            .map(|l| l.refs)
            .sum()
    }

    /// ChainIDs passed through `register`, in call order.
    pub fn registered(&self) -> Vec<Digest> {
        self.state.lock().unwrap().registered.clone()
    }

    /// Registrations in progress right now.
    pub fn registering(&self) -> usize {
        self.state.lock().unwrap().registering
    }
}

impl LayerStore for MemoryStore {
    type Staged = Arc<Staged>;

    async fn get(&self, chain_id: &Digest) -> Result<Option<LayerInfo>, BoxError> {
        let mut state = self.state.lock().unwrap();
        Ok(state.layers.get_mut(chain_id).map(|layer| {
            layer.refs += 1;
            LayerInfo::new(chain_id.clone(), layer.diff_id.clone())
        }))
    }

    async fn register(
        &self,
        parent: Option<&Digest>,
        staged: Arc<Staged>,
    ) -> Result<LayerInfo, BoxError> {
        let chain = chain_id(parent, &staged.diff_id);
        {
            let mut state = self.state.lock().unwrap();
            if let Some(parent) = parent {
                assert!(
                    state.layers.contains_key(parent),
                    "parent {parent} registered after its child"
                );
            }
            state.registering += 1;
        }
        if !self.register_time.is_zero() {
            tokio::time::sleep(self.register_time).await;
        }
        let mut state = self.state.lock().unwrap();
        state.registering -= 1;
        state.registered.push(chain.clone());
        let layer = state.layers.entry(chain.clone()).or_insert(StoredLayer {
            diff_id: staged.diff_id.clone(),
            refs: 0,
        });
        layer.refs += 1;
        Ok(LayerInfo::new(chain, staged.diff_id.clone()))
    }

    fn release(&self, chain_id: &Digest) {
        let mut state = self.state.lock().unwrap();
        let layer = state.layers.get_mut(chain_id).unwrap();
        layer.refs -= 1;
        assert!(layer.refs >= 0, "{chain_id} released more than referenced");
    }
}

/// What happened to the fake descriptors, shared by all of them in a test.
#[derive(Debug, Default)]
pub struct Events {
    /// Attempts started, per key.
    pub attempts: HashMap<String, u32>,
    /// When each attempt started, per key.
    pub attempt_times: HashMap<String, Vec<Instant>>,
    /// `(key, attempt, resume offset)` for every attempt.
    pub resume_offsets: Vec<(String, u32, u64)>,
    /// Keys whose attempt was dropped before it finished (cancelled).
    pub dropped: Vec<String>,
    /// Keys of successful downloads, in completion order.
    pub completed: Vec<String>,
    /// Attempts running right now, and the most at once.
    pub running: usize,
    pub max_running: usize,
    /// Ids of closed descriptors.
    pub closed: Vec<String>,
    /// `(id, DiffID)` of every `registered` callback.
    pub registered: Vec<(String, Digest)>,
    /// `(id, remote)` of every `set_remote_descriptor` callback.
    pub remotes: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct Log(Arc<Mutex<Events>>);

impl Log {
    pub fn get(&self) -> std::sync::MutexGuard<'_, Events> {
        self.0.lock().unwrap()
    }

    pub fn attempts(&self, key: &str) -> u32 {
        self.get().attempts.get(key).copied().unwrap_or(0)
    }
}

/// Records the end of an attempt; an attempt dropped before `finish` counts as cancelled.
struct AttemptGuard {
    log: Log,
    key: String,
    finished: bool,
}

impl AttemptGuard {
    fn start(log: &Log, key: &str, attempt: u32, resume: u64) -> Self {
        let mut events = log.get();
        *events.attempts.entry(key.to_string()).or_default() += 1;
        events
            .attempt_times
            .entry(key.to_string())
            .or_default()
            .push(Instant::now());
        events
            .resume_offsets
            .push((key.to_string(), attempt, resume));
        events.running += 1;
        events.max_running = events.max_running.max(events.running);
        drop(events);
        Self {
            log: log.clone(),
            key: key.to_string(),
            finished: false,
        }
    }

    fn finish(mut self, success: bool) {
        self.finished = true;
        if success {
            self.log.get().completed.push(self.key.clone());
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        let mut events = self.log.get();
        events.running -= 1;
        if !self.finished {
            events.dropped.push(self.key.clone());
        }
    }
}

type Script = Arc<dyn Fn(u32) -> Option<BoxError> + Send + Sync>;

/// A scripted layer: fails the attempts its script says, takes `time` of the paused clock,
/// or hangs until cancelled.
#[derive(Clone)]
pub struct FakeLayer {
    pub key: String,
    pub id: String,
    pub content: Digest,
    declared: Option<Digest>,
    script: Script,
    time: Duration,
    hang: bool,
    resume_step: u64,
    log: Log,
}

impl FakeLayer {
    /// Layer `name`: blob key `blob-<name>`, content `layer-<name>`, DiffID declared.
    pub fn new(name: &str, log: &Log) -> Self {
        Self {
            key: format!("blob-{name}"),
            id: name.to_string(),
            content: digest_of(&format!("layer-{name}")),
            declared: Some(digest_of(&format!("layer-{name}"))),
            script: Arc::new(|_| None),
            time: Duration::ZERO,
            hang: false,
            resume_step: 0,
            log: log.clone(),
        }
    }

    /// Does not declare its DiffID up front.
    pub fn undeclared(mut self) -> Self {
        self.declared = None;
        self
    }

    /// Declares a DiffID its content does not have.
    pub fn declaring(mut self, diff_id: Digest) -> Self {
        self.declared = Some(diff_id);
        self
    }

    /// A successful attempt takes `time`.
    pub fn taking(mut self, time: Duration) -> Self {
        self.time = time;
        self
    }

    /// Never finishes.
    pub fn hanging(mut self) -> Self {
        self.hang = true;
        self
    }

    /// The first `failures` attempts fail with `err()`.
    pub fn failing(mut self, failures: u32, err: fn() -> BoxError) -> Self {
        self.script = Arc::new(move |attempt| (attempt <= failures).then(err));
        self
    }

    /// Each failing attempt first records `step` more bytes as held.
    pub fn holding_per_attempt(mut self, step: u64) -> Self {
        self.resume_step = step;
        self
    }
}

impl DownloadDescriptor for FakeLayer {
    type Staged = Arc<Staged>;

    fn key(&self) -> String {
        self.key.clone()
    }

    fn id(&self) -> String {
        self.id.clone()
    }

    fn diff_id(&self) -> Option<Digest> {
        self.declared.clone()
    }

    fn download(
        &self,
        ctx: DownloadContext,
    ) -> impl Future<Output = Result<Arc<Staged>, BoxError>> + Send {
        let this = self.clone();
        async move {
            let guard =
                AttemptGuard::start(&this.log, &this.key, ctx.attempt(), ctx.resume_offset());
            ctx.report("Downloading", ctx.resume_offset(), Some(100));
            if let Some(err) = (this.script)(ctx.attempt()) {
                ctx.set_resume_offset(ctx.resume_offset() + this.resume_step);
                guard.finish(false);
                return Err(err);
            }
            if this.hang {
                std::future::pending::<()>().await;
            }
            if !this.time.is_zero() {
                tokio::time::sleep(this.time).await;
            }
            ctx.report("Downloading", 100, Some(100));
            guard.finish(true);
            Ok(Arc::new(Staged {
                diff_id: this.content.clone(),
            }))
        }
    }

    fn close(&self) {
        self.log.get().closed.push(self.id.clone());
    }

    fn registered(&self, diff_id: &Digest) {
        self.log
            .get()
            .registered
            .push((self.id.clone(), diff_id.clone()));
    }
}

/// A scripted upload, yielding `remote-<key>`.
#[derive(Clone)]
pub struct FakeUpload {
    pub key: String,
    pub id: String,
    script: Script,
    time: Duration,
    hang: bool,
    log: Log,
}

impl FakeUpload {
    pub fn new(name: &str, log: &Log) -> Self {
        Self {
            key: format!("blob-{name}"),
            id: name.to_string(),
            script: Arc::new(|_| None),
            time: Duration::ZERO,
            hang: false,
            log: log.clone(),
        }
    }

    pub fn taking(mut self, time: Duration) -> Self {
        self.time = time;
        self
    }

    pub fn hanging(mut self) -> Self {
        self.hang = true;
        self
    }

    pub fn failing(mut self, failures: u32, err: fn() -> BoxError) -> Self {
        self.script = Arc::new(move |attempt| (attempt <= failures).then(err));
        self
    }
}

impl UploadDescriptor for FakeUpload {
    type Remote = String;

    fn key(&self) -> String {
        self.key.clone()
    }

    fn id(&self) -> String {
        self.id.clone()
    }

    fn upload(&self, ctx: UploadContext) -> impl Future<Output = Result<String, BoxError>> + Send {
        let this = self.clone();
        async move {
            let guard =
                AttemptGuard::start(&this.log, &this.key, ctx.attempt(), ctx.resume_offset());
            if let Some(err) = (this.script)(ctx.attempt()) {
                guard.finish(false);
                return Err(err);
            }
            if this.hang {
                std::future::pending::<()>().await;
            }
            if !this.time.is_zero() {
                tokio::time::sleep(this.time).await;
            }
            guard.finish(true);
            Ok(format!("remote-{}", this.key))
        }
    }

    fn set_remote_descriptor(&self, remote: String) {
        self.log.get().remotes.push((self.id.clone(), remote));
    }
}
