//! The fault matrix: every fault the proxy injects, on every request a pull or a push makes,
//! once and every time, each row with the outcome it must have.
//!
//! One row per case, in the tables below; each test runs the rows of one group concurrently
//! against shared registries (one fault proxy, one store per row). A row checks:
//! - the outcome: success after exactly the number of requests to the faulted target given, or
//!   failure with the error kind and `is_retryable()` given, after that many requests;
//! - for pulls, that the layer bytes sent stay within the blob plus what the fault wasted, that
//!   `fsck` re-hashes every blob clean, that nothing is left in the layer store's `tmp/`, and
//!   that an ingest survives only a transient failure (to be resumed; never after success or a
//!   permanent failure);
//! - for pushes, that the registry serves the manifest and every blob with the right digest
//!   after success, and no manifest after a failure;
//! - for redirects, that the foreign host was reached and never saw an `Authorization` header;
//! - for `Retry-After`, that a successful row waited for it.
//!
//! `docs/reliability.md` is this table rendered by [`render_table`]; the test
//! `the_reliability_page_shows_the_matrix` keeps them equal (`HOIST_BLESS=1` rewrites it).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hoist_distribution::{ErrorKind, Registries, pull, push};
use hoist_registry::auth::credentials::Credentials;
use hoist_registry::manifest::OCI_MANIFEST;
use hoist_store::FsckOptions;
use hoist_test_support::{Action, FaultProxy, Matcher, Registry, Rule, TokenPolicy};
use http::Method;

use crate::*;

/// Attempts per request in the matrix (the default is 5; fewer keeps "always" rows short).
const ATTEMPTS: u32 = 3;
/// How long a request may make no progress before it fails.
const STALL: Duration = Duration::from_secs(1);
/// The stall timeout of rows that do not stall: long enough that a loaded machine (CI on two
/// cores) never turns a slow answer into a stall.
const NO_STALL: Duration = Duration::from_secs(15);
/// Rows running at once within a test.
const CONCURRENT_ROWS: usize = 12;
/// Layer data: incompressible, so the blob is about this size.
const LAYER_BYTES: usize = 256 * 1024;
/// Bytes per `PATCH` of a push.
const CHUNK: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Pull,
    Push,
}

/// The request a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// `GET` of the manifest.
    ManifestGet,
    /// `GET` of the image config.
    ConfigGet,
    /// `GET` of the layer blob.
    LayerGet,
    /// `POST` starting an upload (layer and config).
    Post,
    /// `PATCH` of an upload chunk.
    Patch,
    /// `PUT` completing an upload (layer and config).
    Put,
    /// `PUT` of the manifest.
    ManifestPut,
    /// The token endpoint of a token-auth registry.
    TokenEndpoint,
    /// A mirror configured for the registry.
    Mirror,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// A pull's answer is cut by a TCP reset after some body bytes; a push's request is reset
    /// before any answer (the registry may have acted on it).
    Reset,
    /// The status, without `Retry-After`.
    Status(u16),
    /// The status with `Retry-After: 1`.
    RetryAfter(u16),
    /// A pull's body stops after some bytes; a push's answer never comes.
    Stall,
    /// The body ends (orderly close) before its `Content-Length`.
    Truncate,
    /// One byte of the body is inverted.
    Flip,
    /// A reset after some bytes, then the resume's `Range` is ignored (200, whole body).
    IgnoreRange,
    /// A reset after some bytes, then the resume's 206 names the wrong `Content-Range`.
    WrongRange,
    /// `307` to another host (an htpasswd registry: credentials are at stake).
    Redirect,
    /// The token endpoint answers 500.
    TokenFails,
    /// The mirror's port refuses connections.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Times {
    /// The first matching request only.
    Once,
    /// Every matching request (for range faults: every resume).
    Always,
}

/// What a row must observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Success after this many requests to the target.
    Succeeds(usize),
    /// Failure of this kind, retryable or not, after this many requests to the target.
    Fails(ErrorKind, bool, usize),
}

#[derive(Clone, Copy, Debug)]
struct Row {
    op: Op,
    target: Target,
    fault: Fault,
    times: Times,
    outcome: Outcome,
    test: &'static str,
}

use ErrorKind::{Corrupt, Network};
use Fault::*;
use Outcome::{Fails, Succeeds};
use Target::*;
use Times::*;

/// `rows!(test_name: op; target fault times => outcome; ...)`.
macro_rules! rows {
    ($test:ident: $op:ident; $($target:ident $fault:expr, $times:ident => $outcome:expr;)*) => {
        &[$(Row {
            op: Op::$op,
            target: $target,
            fault: $fault,
            times: $times,
            outcome: $outcome,
            test: stringify!($test),
        },)*]
    };
}

const PULL_MANIFEST: &[Row] = rows!(pull_manifest_faults: Pull;
    ManifestGet Reset, Once => Succeeds(2);
    ManifestGet Reset, Always => Fails(Network, true, 3);
    ManifestGet Status(500), Once => Succeeds(2);
    ManifestGet Status(500), Always => Fails(Network, true, 3);
    ManifestGet Status(502), Once => Succeeds(2);
    ManifestGet Status(502), Always => Fails(Network, true, 3);
    ManifestGet Status(503), Once => Succeeds(2);
    ManifestGet Status(503), Always => Fails(Network, true, 3);
    ManifestGet RetryAfter(503), Once => Succeeds(2);
    ManifestGet RetryAfter(503), Always => Fails(Network, true, 3);
    ManifestGet RetryAfter(429), Once => Succeeds(2);
    ManifestGet RetryAfter(429), Always => Fails(Network, true, 3);
    ManifestGet Stall, Once => Succeeds(2);
    ManifestGet Stall, Always => Fails(Network, true, 3);
    ManifestGet Truncate, Once => Succeeds(2);
    ManifestGet Truncate, Always => Fails(Network, true, 3);
    ManifestGet Flip, Once => Succeeds(2);
    ManifestGet Flip, Always => Fails(Corrupt, true, 3);
    ManifestGet Redirect, Once => Succeeds(1);
    ManifestGet Redirect, Always => Succeeds(1);
);

const PULL_CONFIG: &[Row] = rows!(pull_config_faults: Pull;
    ConfigGet Reset, Once => Succeeds(2);
    ConfigGet Reset, Always => Fails(Network, true, 3);
    ConfigGet Status(500), Once => Succeeds(2);
    ConfigGet Status(500), Always => Fails(Network, true, 3);
    ConfigGet Status(502), Once => Succeeds(2);
    ConfigGet Status(502), Always => Fails(Network, true, 3);
    ConfigGet Status(503), Once => Succeeds(2);
    ConfigGet Status(503), Always => Fails(Network, true, 3);
    ConfigGet RetryAfter(503), Once => Succeeds(2);
    ConfigGet RetryAfter(503), Always => Fails(Network, true, 3);
    ConfigGet RetryAfter(429), Once => Succeeds(2);
    ConfigGet RetryAfter(429), Always => Fails(Network, true, 3);
    ConfigGet Stall, Once => Succeeds(2);
    ConfigGet Stall, Always => Fails(Network, true, 3);
    ConfigGet Truncate, Once => Succeeds(2);
    ConfigGet Truncate, Always => Fails(Network, true, 3);
    ConfigGet Flip, Once => Succeeds(2);
    ConfigGet Flip, Always => Fails(Corrupt, true, 3);
    ConfigGet Redirect, Once => Succeeds(1);
    ConfigGet Redirect, Always => Succeeds(1);
);

const PULL_LAYER: &[Row] = rows!(pull_layer_faults: Pull;
    LayerGet Reset, Once => Succeeds(2);
    LayerGet Reset, Always => Succeeds(3);
    LayerGet Status(500), Once => Succeeds(2);
    LayerGet Status(500), Always => Fails(Network, true, 3);
    LayerGet Status(502), Once => Succeeds(2);
    LayerGet Status(502), Always => Fails(Network, true, 3);
    LayerGet Status(503), Once => Succeeds(2);
    LayerGet Status(503), Always => Fails(Network, true, 3);
    LayerGet RetryAfter(503), Once => Succeeds(2);
    LayerGet RetryAfter(503), Always => Fails(Network, true, 3);
    LayerGet RetryAfter(429), Once => Succeeds(2);
    LayerGet RetryAfter(429), Always => Fails(Network, true, 3);
    LayerGet Stall, Once => Succeeds(2);
    LayerGet Stall, Always => Succeeds(3);
    LayerGet Truncate, Once => Succeeds(2);
    LayerGet Truncate, Always => Succeeds(3);
    LayerGet Flip, Once => Succeeds(2);
    LayerGet Flip, Always => Fails(Corrupt, false, 2);
    LayerGet IgnoreRange, Once => Succeeds(2);
    LayerGet IgnoreRange, Always => Succeeds(2);
    LayerGet WrongRange, Once => Succeeds(3);
    LayerGet WrongRange, Always => Succeeds(3);
    LayerGet Redirect, Once => Succeeds(1);
    LayerGet Redirect, Always => Succeeds(1);
);

const PULL_AUTH_AND_MIRRORS: &[Row] = rows!(pull_token_and_mirror_faults: Pull;
    TokenEndpoint TokenFails, Once => Succeeds(2);
    TokenEndpoint TokenFails, Always => Fails(Network, true, 3);
    Mirror Refused, Always => Succeeds(0);
);

const PUSH_POST: &[Row] = rows!(push_upload_start_faults: Push;
    Post Reset, Once => Succeeds(3);
    Post Reset, Always => Fails(Network, true, 3);
    Post Status(500), Once => Succeeds(3);
    Post Status(500), Always => Fails(Network, true, 3);
    Post Status(502), Once => Succeeds(3);
    Post Status(502), Always => Fails(Network, true, 3);
    Post Status(503), Once => Succeeds(3);
    Post Status(503), Always => Fails(Network, true, 3);
    Post RetryAfter(503), Once => Succeeds(3);
    Post RetryAfter(503), Always => Fails(Network, true, 3);
    Post RetryAfter(429), Once => Succeeds(3);
    Post RetryAfter(429), Always => Fails(Network, true, 3);
    Post Stall, Once => Succeeds(3);
    Post Stall, Always => Fails(Network, true, 3);
    Post Redirect, Once => Succeeds(2);
    Post Redirect, Always => Succeeds(2);
);

const PUSH_PATCH: &[Row] = rows!(push_upload_chunk_faults: Push;
    Patch Reset, Once => Succeeds(6);
    Patch Reset, Always => Fails(Network, true, 3);
    Patch Status(500), Once => Succeeds(6);
    Patch Status(500), Always => Fails(Network, true, 3);
    Patch Status(502), Once => Succeeds(6);
    Patch Status(502), Always => Fails(Network, true, 3);
    Patch Status(503), Once => Succeeds(6);
    Patch Status(503), Always => Fails(Network, true, 3);
    Patch RetryAfter(503), Once => Succeeds(6);
    Patch RetryAfter(503), Always => Fails(Network, true, 3);
    Patch RetryAfter(429), Once => Succeeds(6);
    Patch RetryAfter(429), Always => Fails(Network, true, 3);
    Patch Stall, Once => Succeeds(6);
    Patch Stall, Always => Fails(Network, true, 3);
    Patch Redirect, Once => Succeeds(6);
    Patch Redirect, Always => Fails(Network, true, 3);
);

const PUSH_PUT: &[Row] = rows!(push_upload_end_faults: Push;
    Put Reset, Once => Succeeds(3);
    Put Reset, Always => Fails(Network, true, 3);
    Put Status(500), Once => Succeeds(3);
    Put Status(500), Always => Fails(Network, true, 3);
    Put Status(502), Once => Succeeds(3);
    Put Status(502), Always => Fails(Network, true, 3);
    Put Status(503), Once => Succeeds(3);
    Put Status(503), Always => Fails(Network, true, 3);
    Put RetryAfter(503), Once => Succeeds(3);
    Put RetryAfter(503), Always => Fails(Network, true, 3);
    Put RetryAfter(429), Once => Succeeds(3);
    Put RetryAfter(429), Always => Fails(Network, true, 3);
    Put Stall, Once => Succeeds(3);
    Put Stall, Always => Fails(Network, true, 3);
    Put Redirect, Once => Succeeds(2);
    Put Redirect, Always => Succeeds(2);
);

const PUSH_MANIFEST: &[Row] = rows!(push_manifest_faults: Push;
    ManifestPut Reset, Once => Succeeds(2);
    ManifestPut Reset, Always => Fails(Network, true, 3);
    ManifestPut Status(500), Once => Succeeds(2);
    ManifestPut Status(500), Always => Fails(Network, true, 3);
    ManifestPut Status(502), Once => Succeeds(2);
    ManifestPut Status(502), Always => Fails(Network, true, 3);
    ManifestPut Status(503), Once => Succeeds(2);
    ManifestPut Status(503), Always => Fails(Network, true, 3);
    ManifestPut RetryAfter(503), Once => Succeeds(2);
    ManifestPut RetryAfter(503), Always => Fails(Network, true, 3);
    ManifestPut RetryAfter(429), Once => Succeeds(2);
    ManifestPut RetryAfter(429), Always => Fails(Network, true, 3);
    ManifestPut Stall, Once => Succeeds(2);
    ManifestPut Stall, Always => Fails(Network, true, 3);
    ManifestPut Redirect, Once => Succeeds(1);
    ManifestPut Redirect, Always => Succeeds(1);
    TokenEndpoint TokenFails, Once => Succeeds(3);
    TokenEndpoint TokenFails, Always => Fails(Network, true, 3);
);

/// Every table, in the order of the page.
const TABLES: &[&[Row]] = &[
    PULL_MANIFEST,
    PULL_CONFIG,
    PULL_LAYER,
    PULL_AUTH_AND_MIRRORS,
    PUSH_POST,
    PUSH_PATCH,
    PUSH_PUT,
    PUSH_MANIFEST,
];

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ManifestGet => "manifest GET",
            ConfigGet => "config GET",
            LayerGet => "layer GET",
            Post => "upload POST",
            Patch => "upload PATCH",
            Put => "upload PUT",
            ManifestPut => "manifest PUT",
            TokenEndpoint => "token endpoint",
            Mirror => "mirror",
        })
    }
}

impl Fault {
    fn describe(self, op: Op) -> String {
        match (self, op) {
            (Reset, Op::Pull) => "connection reset after N body bytes".into(),
            (Reset, Op::Push) => "connection reset before the answer".into(),
            (Status(s), _) => format!("{s}"),
            (RetryAfter(s), _) => format!("{s} + Retry-After: 1"),
            (Stall, Op::Pull) => "body stalls after N bytes".into(),
            (Stall, Op::Push) => "answer never comes".into(),
            (Truncate, _) => "body truncated under Content-Length".into(),
            (Flip, _) => "one flipped byte".into(),
            (IgnoreRange, _) => "reset, then Range ignored (200, full body)".into(),
            (WrongRange, _) => "reset, then 206 with a wrong Content-Range".into(),
            (Redirect, _) => "307 to another host (htpasswd registry)".into(),
            (TokenFails, _) => "token endpoint answers 500".into(),
            (Refused, _) => "connection refused".into(),
        }
    }
}

fn describe_outcome(row: &Row) -> String {
    let kind = |k: ErrorKind| k.as_str();
    match row.outcome {
        Succeeds(n) if row.target == Mirror => {
            format!("succeeds from the registry ({n} mirror requests)")
        }
        Succeeds(n) => format!("succeeds after {}", requests(n)),
        Fails(k, retryable, n) => format!(
            "fails after {}: `{}`, {}",
            requests(n),
            kind(k),
            if retryable {
                "retryable"
            } else {
                "not retryable"
            }
        ),
    }
}

fn requests(n: usize) -> String {
    if n == 1 {
        "1 request".into()
    } else {
        format!("{n} requests")
    }
}

/// Whether a successful row waited for the registry's `Retry-After: 1`.
fn check_waited(row: &Row, elapsed: Duration) -> Result<(), String> {
    if matches!(row.fault, RetryAfter(_))
        && matches!(row.outcome, Succeeds(_))
        && elapsed < Duration::from_secs(1)
    {
        return Err(format!("Retry-After: 1 was not honoured ({elapsed:?})"));
    }
    Ok(())
}

/// The page's table, rendered from [`TABLES`].
fn render_table() -> String {
    let mut out = String::from(
        "| op | target | fault | times | outcome | test |\n|---|---|---|---|---|---|\n",
    );
    for row in TABLES.iter().flat_map(|t| t.iter()) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | `matrix::{}` |\n",
            match row.op {
                Op::Pull => "pull",
                Op::Push => "push",
            },
            row.target,
            row.fault.describe(row.op),
            match row.times {
                Once => "once",
                Always => "always",
            },
            describe_outcome(row),
            row.test,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The environment rows share.

/// The image every row moves: one incompressible gzip layer.
struct Image {
    pushed: Pushed,
}

impl Image {
    fn layer(&self) -> Digest {
        self.pushed.layers[0].digest()
    }
    fn layer_len(&self) -> u64 {
        self.pushed.layers[0].blob.len() as u64
    }
}

const USER: &str = "matrix";
const PASSWORD: &str = "matrix-pw";
const NAME: &str = "matrix/img";

fn creds() -> Credentials {
    Credentials::basic(USER, PASSWORD)
}

/// A repository handle on `host` with the matrix credentials (ignored by a plain registry).
fn repo_with_creds(host: &str, name: &str) -> Repository {
    let client = RegistryClient::builder()
        .credentials(host, creds())
        .build()
        .unwrap();
    client.repository(Endpoint::new(host, Scheme::Http), name)
}

/// A client for a row: a short stall timeout for the rows whose fault is a stall, credentials
/// for the proxy.
fn row_client(row: &Row, proxy_host: &str) -> RegistryClient {
    RegistryClient::builder()
        .stall_timeout(if row.fault == Stall { STALL } else { NO_STALL })
        .credentials(proxy_host, creds())
        .build()
        .unwrap()
}

fn row_retries() -> RetryPolicy {
    quick_retries().with_max_attempts(ATTEMPTS)
}

async fn push_matrix_image(host: &str) -> Image {
    let layer = Layer::gzip(&[("data", &noise(LAYER_BYTES, 77)[..])]);
    let repo = repo_with_creds(host, NAME);
    Image {
        pushed: push_image(&repo, "1", OCI_MANIFEST, "linux/amd64", &[layer]).await,
    }
}

/// Registries the rows of a test share (each row has its own proxy and store).
struct Env {
    plain: Registry,
    basic: Registry,
    image: Image,
}

async fn env() -> Env {
    let plain = start_registry().await;
    let basic = Registry::start_with_basic_auth(USER, PASSWORD)
        .await
        .unwrap();
    let image = push_matrix_image(&plain.host()).await;
    let same = push_matrix_image(&basic.host()).await;
    assert_eq!(image.pushed.digest, same.pushed.digest);
    Env {
        plain,
        basic,
        image,
    }
}

fn matcher(target: Target, image: &Image) -> Matcher {
    match target {
        ManifestGet => Matcher::get("/manifests/"),
        ConfigGet => Matcher::get(&format!("/blobs/{}", image.pushed.config)),
        LayerGet => Matcher::get(&format!("/blobs/{}", image.layer())),
        Post => Matcher::new(Method::POST, "/blobs/uploads/"),
        Patch => Matcher::new(Method::PATCH, "/blobs/uploads/"),
        Put => Matcher::new(Method::PUT, "/blobs/uploads/"),
        ManifestPut => Matcher::new(Method::PUT, "/manifests/"),
        TokenEndpoint | Mirror => Matcher::any_method("/v2/*"),
    }
}

/// Body bytes delivered before a body fault on a pull target.
fn fault_offset(target: Target) -> u64 {
    match target {
        LayerGet => 100_000,
        _ => 100,
    }
}

/// The proxy rules for a row.
fn rules(row: &Row, image: &Image) -> Vec<Rule> {
    let m = matcher(row.target, image);
    let n = fault_offset(row.target);
    let pull = row.op == Op::Pull;
    let action = match row.fault {
        Reset if pull => Action::Reset { after_bytes: n },
        Reset => Action::ResetBeforeResponse,
        Status(s) => Action::status(s),
        RetryAfter(s) => Action::status_with_retry_after(s, "1"),
        Stall if pull => Action::Stall {
            after_bytes: n,
            duration: None,
        },
        Stall => Action::StallBeforeResponse,
        Truncate => Action::Truncate { after_bytes: n },
        Flip => Action::FlipByte { offset: n },
        Redirect => Action::RedirectToForeignHost,
        IgnoreRange | WrongRange => {
            let second = if row.fault == IgnoreRange {
                Action::IgnoreRange
            } else {
                Action::WrongContentRange
            };
            let resumes = Rule::new(m.clone(), second);
            return vec![
                Rule::new(m, Action::Reset { after_bytes: n }).once(),
                match row.times {
                    Once => resumes.nth(2),
                    Always => resumes.every(),
                },
            ];
        }
        TokenFails | Refused => return Vec::new(),
    };
    let rule = Rule::new(m, action);
    vec![match row.times {
        Once => rule.once(),
        Always => rule.every(),
    }]
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// What a row saw.
#[derive(Debug)]
struct Observed {
    outcome: Outcome,
    /// The error, for messages.
    error: Option<String>,
}

fn observed<T>(result: &Result<T, hoist_distribution::Error>, requests: usize) -> Observed {
    match result {
        Ok(_) => Observed {
            outcome: Succeeds(requests),
            error: None,
        },
        Err(e) => Observed {
            outcome: Fails(e.kind(), e.is_retryable(), requests),
            error: Some(hoist_xfer::describe(e)),
        },
    }
}

/// Whether `dir` holds anything.
fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// The store after a pull: clean, every blob re-hashed, nothing half-made visible.
fn check_store(
    store: &Store,
    image: &Image,
    target: Target,
    outcome: Outcome,
) -> Result<(), String> {
    // Listed before fsck: after a failed pull, a transfer it cancelled may still commit a
    // (verified) blob on a blocking thread, which fsck may or may not see.
    let before = store.content().list().map_err(|e| e.to_string())?;
    let report = store
        .fsck(&FsckOptions::default())
        .map_err(|e| format!("fsck: {e}"))?;
    if !report.is_clean() {
        return Err(format!("fsck found {:?}", report.findings));
    }
    let blobs = store.content().list().map_err(|e| e.to_string())?;
    if report.blobs_checked < before.len() as u64 {
        return Err(format!(
            "fsck re-hashed {} of {} blobs",
            report.blobs_checked,
            blobs.len()
        ));
    }
    for b in &blobs {
        let mut reader = store
            .content()
            .reader(&b.digest)
            .map_err(|e| e.to_string())?;
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut data).map_err(|e| e.to_string())?;
        if sha(&data) != b.digest {
            return Err(format!("blob {} holds other bytes", b.digest));
        }
    }
    if has_entries(&store.root().join("layers").join("tmp")) {
        return Err("the layer store's tmp/ is not empty".into());
    }
    let ingests = store.content().ingests().map_err(|e| e.to_string())?;
    match outcome {
        Fails(_, true, _) => {
            // Kept for a resume, never visible; only the layer's.
            let layer_ingest = hoist_distribution::ingest_reference(&image.layer());
            if let Some(i) = ingests.iter().find(|i| i.reference != layer_ingest) {
                return Err(format!("an unexpected ingest was left: {i:?}"));
            }
        }
        _ if !ingests.is_empty() => return Err(format!("ingests left behind: {ingests:?}")),
        _ => {}
    }
    match outcome {
        Succeeds(_) => {
            if !store.content().contains(&image.layer()).unwrap_or(false) {
                return Err("the layer blob is missing after success".into());
            }
        }
        Fails(..) => {
            if !store.references().map_err(|e| e.to_string())?.is_empty() {
                return Err("a reference was recorded by a failed pull".into());
            }
            if target == LayerGet
                && matches!(outcome, Fails(Corrupt, ..))
                && store.content().contains(&image.layer()).unwrap_or(false)
            {
                return Err("a corrupt layer became visible".into());
            }
        }
    }
    Ok(())
}

/// Compares what a row saw with what it must see.
fn expect(row: &Row, seen: &Observed) -> Result<(), String> {
    if seen.outcome == row.outcome {
        Ok(())
    } else {
        Err(format!(
            "expected {:?}, observed {:?} ({})",
            row.outcome,
            seen.outcome,
            seen.error.as_deref().unwrap_or("no error")
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Running rows.

fn label(row: &Row) -> String {
    format!(
        "{:?} {} / {} / {:?}",
        row.op,
        row.target,
        row.fault.describe(row.op),
        row.times
    )
}

async fn run_pull(env: &Env, row: &Row) -> Result<(), String> {
    match row.target {
        TokenEndpoint => return run_pull_token(env, row).await,
        Mirror => return run_pull_mirror(row).await,
        _ => {}
    }
    let registry = if row.fault == Redirect {
        &env.basic
    } else {
        &env.plain
    };
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    for r in rules(row, &env.image) {
        proxy.add_rule(r);
    }
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let mut cfg = cfg
        .with_retry_policy(row_retries())
        .with_platform(platform("linux/amd64"));
    cfg.client = row_client(row, &proxy.host());
    let started = Instant::now();
    let result = pull(&cfg, &image_ref(&proxy.host(), &format!("{NAME}:1"))).await;
    let elapsed = started.elapsed();
    let m = matcher(row.target, &env.image);
    let seen = observed(&result, proxy.count(&m));
    expect(row, &seen)?;
    check_waited(row, elapsed)?;
    if let Ok(r) = &result
        && r.manifest != env.image.pushed.digest
    {
        return Err(format!("pulled {} instead", r.manifest));
    }
    // Bytes: the blob once, plus what the fault wasted.
    if row.target == LayerGet && matches!(row.outcome, Succeeds(_)) {
        let len = env.image.layer_len();
        let wasted = match row.fault {
            Reset | Stall | Truncate => fault_offset(LayerGet),
            Flip | IgnoreRange | WrongRange => len,
            _ => 0,
        };
        // Layer bytes only: error bodies of faulted answers are not the blob's.
        let sent: u64 = proxy
            .requests(&m)
            .iter()
            .filter(|e| matches!(e.status, Some(200 | 206)))
            .map(|e| e.bytes_sent)
            .sum();
        if sent > len + wasted {
            return Err(format!(
                "{sent} layer bytes sent for a {len}-byte blob (allowed {})",
                len + wasted
            ));
        }
    }
    check_redirect(row, &proxy)?;
    check_store(&local.store, &env.image, row.target, row.outcome)
}

fn check_redirect(row: &Row, proxy: &FaultProxy) -> Result<(), String> {
    if row.fault != Redirect {
        return Ok(());
    }
    // A streamed upload body cannot be sent twice: a redirected PATCH is not followed, and the
    // chunk is sent again to the registry.
    let followed = !proxy.foreign_requests().is_empty();
    if followed != (row.target != Patch) {
        return Err(format!("the redirect was followed: {followed}"));
    }
    if proxy.foreign_saw_authorization() {
        return Err("credentials reached the foreign host".into());
    }
    Ok(())
}

async fn token_registry() -> Registry {
    let policy = TokenPolicy::new()
        .user(USER, PASSWORD)
        .grant(USER, "*", &["pull", "push"]);
    Registry::start_with_token_auth(policy).await.unwrap()
}

async fn run_pull_token(env: &Env, row: &Row) -> Result<(), String> {
    let registry = token_registry().await;
    let image = push_matrix_image(&registry.host()).await;
    assert_eq!(image.pushed.digest, env.image.pushed.digest);
    let token = registry.token_server().unwrap();
    token.clear_requests();
    token.fail_next(match row.times {
        Once => 1,
        Always => 1000,
    });
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let mut cfg = cfg.with_retry_policy(row_retries());
    cfg.client = row_client(row, &registry.host());
    let result = pull(&cfg, &image_ref(&registry.host(), &format!("{NAME}:1"))).await;
    let seen = observed(&result, token.request_count());
    expect(row, &seen)?;
    check_store(&local.store, &image, row.target, row.outcome)
}

async fn run_pull_mirror(row: &Row) -> Result<(), String> {
    let upstream = start_registry().await;
    let image = push_matrix_image(&upstream.host()).await;
    let cache = Registry::builder()
        .pull_through(&upstream.url())
        .start()
        .await
        .unwrap();
    let mirror = FaultProxy::start(&cache.url()).await.unwrap();
    mirror.refuse_connections().await;
    let local = local_store();
    let (cfg, _) = pull_config(&local.store);
    let cfg = cfg
        .with_registries(Registries::new().with_mirror(&upstream.host(), &mirror.host()))
        .with_retry_policy(row_retries());
    let result = pull(&cfg, &image_ref(&upstream.host(), &format!("{NAME}:1"))).await;
    let seen = observed(&result, mirror.log().len());
    expect(row, &seen)?;
    match &result {
        Ok(r) if r.mirror => return Err("the pull claims the refused mirror served it".into()),
        _ => {}
    }
    check_store(&local.store, &image, row.target, row.outcome)
}

/// A store holding the matrix image, pulled straight from `host`.
async fn source_store(host: &str) -> Local {
    let local = local_store();
    let (mut cfg, _) = pull_config(&local.store);
    cfg.client = RegistryClient::builder()
        .credentials(host, creds())
        .build()
        .unwrap();
    pull(&cfg, &image_ref(host, &format!("{NAME}:1")))
        .await
        .unwrap();
    local
}

/// Pushes the matrix image from a fresh store through `target_host` (a proxy, or a token
/// registry) to repository `dst`; `direct` is the registry itself, for the checks.
#[allow(clippy::too_many_arguments)]
async fn push_row(
    row: &Row,
    source_host: &str,
    target_host: &str,
    direct: &str,
    dst: &str,
    image: &Image,
    count: impl Fn() -> usize,
    token: Option<&hoist_test_support::TokenServer>,
) -> Result<(), String> {
    let local = source_store(source_host).await;
    let reference = format!("{target_host}/{dst}:1");
    let stored = local
        .store
        .resolve(&format!("{source_host}/{NAME}:1"))
        .unwrap()
        .unwrap();
    local.store.add_reference(&reference, &stored).unwrap();
    let (cfg, _) = push_config(&local.store);
    let mut cfg = cfg.with_retry_policy(row_retries()).with_chunk_size(CHUNK);
    cfg.client = row_client(row, target_host);
    let started = Instant::now();
    let result = push(
        &cfg,
        &hoist_distribution::parse_reference(&reference).unwrap(),
    )
    .await;
    let elapsed = started.elapsed();
    let seen = observed(&result, count());
    if let Some(t) = token {
        t.fail_next(0);
    }
    expect(row, &seen)?;
    check_waited(row, elapsed)?;
    // What the registry serves now.
    let repo = repo_with_creds(direct, dst);
    match result {
        Ok(r) => {
            if r.digest != image.pushed.digest {
                return Err(format!("pushed {} instead", r.digest));
            }
            let m = repo.get_manifest("1").await.map_err(|e| e.to_string())?;
            if m.digest != image.pushed.digest {
                return Err(format!("the registry serves {}", m.digest));
            }
            for d in [image.pushed.config.clone(), image.layer()] {
                let bytes = repo
                    .get_blob_bytes(&d, 1 << 20)
                    .await
                    .map_err(|e| format!("blob {d}: {e}"))?;
                if sha(&bytes) != d {
                    return Err(format!("the registry serves other bytes for {d}"));
                }
            }
        }
        Err(_) => match repo.head_manifest("1").await {
            Err(e) if e.is_not_found() => {}
            other => return Err(format!("a failed push left a manifest: {other:?}")),
        },
    }
    let report = local.store.fsck(&FsckOptions::default()).unwrap();
    if !report.is_clean() {
        return Err(format!("the source store: {:?}", report.findings));
    }
    Ok(())
}

async fn run_push(env: &Env, row: &Row, index: usize) -> Result<(), String> {
    let dst = format!("pushed/row{index}");
    if row.target == TokenEndpoint {
        let registry = token_registry().await;
        let token = registry.token_server().unwrap();
        let source = &env.plain.host();
        // The first token request is the push's own.
        token.clear_requests();
        token.fail_next(match row.times {
            Once => 1,
            Always => 1000,
        });
        let host = registry.host();
        return push_row(
            row,
            source,
            &host,
            &host,
            &dst,
            &env.image,
            || token.request_count(),
            Some(token),
        )
        .await;
    }
    let registry = if row.fault == Redirect {
        &env.basic
    } else {
        &env.plain
    };
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    for r in rules(row, &env.image) {
        proxy.add_rule(r);
    }
    let m = matcher(row.target, &env.image);
    push_row(
        row,
        &env.plain.host(),
        &proxy.host(),
        &registry.host(),
        &dst,
        &env.image,
        || proxy.count(&m),
        None,
    )
    .await?;
    check_redirect(row, &proxy)
}

/// Runs `rows` concurrently; fails listing every row that did not behave.
async fn run(rows: &[Row]) {
    let started = Instant::now();
    let env = Arc::new(env().await);
    let failures: Vec<String> = futures_util::stream::iter(rows.iter().enumerate())
        .map(|(i, row)| {
            let env = Arc::clone(&env);
            async move {
                let run = async {
                    match row.op {
                        Op::Pull => run_pull(&env, row).await,
                        Op::Push => run_push(&env, row, i).await,
                    }
                };
                match tokio::time::timeout(Duration::from_secs(90), run).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{}: {e}", label(row))),
                    Err(_) => Some(format!("{}: did not finish in 90 s", label(row))),
                }
            }
        })
        .buffer_unordered(CONCURRENT_ROWS)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    eprintln!("{} rows in {:?}", rows.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_manifest_faults() {
    run(PULL_MANIFEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_config_faults() {
    run(PULL_CONFIG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_layer_faults() {
    run(PULL_LAYER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_token_and_mirror_faults() {
    run(PULL_AUTH_AND_MIRRORS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_upload_start_faults() {
    run(PUSH_POST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_upload_chunk_faults() {
    run(PUSH_PATCH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_upload_end_faults() {
    run(PUSH_PUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_manifest_faults() {
    run(PUSH_MANIFEST).await;
}

#[test]
fn the_reliability_page_shows_the_matrix() {
    let page_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reliability.md");
    let table = render_table();
    let begin = "<!-- matrix:begin -->\n";
    let end = "<!-- matrix:end -->";
    let page = std::fs::read_to_string(&page_path).unwrap_or_default();
    let (Some(b), Some(e)) = (page.find(begin), page.find(end)) else {
        panic!("{} has no matrix markers", page_path.display());
    };
    let current = &page[b + begin.len()..e];
    if current != table {
        if std::env::var_os("HOIST_BLESS").is_some() {
            let new = format!("{}{table}{}", &page[..b + begin.len()], &page[e..]);
            std::fs::write(&page_path, new).unwrap();
        } else {
            panic!(
                "docs/reliability.md differs from the matrix; rerun with HOIST_BLESS=1:\n{table}"
            );
        }
    }
    let rows: usize = TABLES.iter().map(|t| t.len()).sum();
    assert!(
        page.contains(&format!("{rows} rows")),
        "the page must give the row count ({rows})"
    );
}
