//! Retry policy for layer transfers: bounded attempts, exponential backoff with jitter,
//! `Retry-After` hints, errors that must not be retried, and a visible countdown.
//!
//! Whether an error is worth retrying is decided by walking its whole source chain, outermost
//! first. At each level:
//! 1. a [`DoNotRetry`] wrapper stops retries;
//! 2. a [`RetryAfter`] wrapper retries after the delay it carries;
//! 3. the policy's classifier, if any, may decide (so crates can map their own typed errors,
//!    e.g. an HTTP 401 to "do not retry" or a 429 with `Retry-After` to a delay, without this
//!    crate knowing those types).
//!
//! The first level that decides wins; when none does, the error is retried with backoff.
//! Markers are found however deeply they are wrapped, and are looked through: the error they
//! wrap is the next level of the chain.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{BoxError, describe};
use crate::progress::{Progress, SharedProgress};
use crate::transfer::TransferContext;

/// Marks an error as permanent: retrying cannot help (bad credentials, a missing blob, a
/// digest mismatch). Recognised anywhere in an error's source chain.
///
/// Displays as the wrapped error; its [`source`](Error::source) is the wrapped error's source.
#[derive(Debug)]
pub struct DoNotRetry {
    inner: BoxError,
}

impl DoNotRetry {
    /// Wraps `err` as not retryable.
    pub fn new(err: impl Into<BoxError>) -> Self {
        Self { inner: err.into() }
    }

    /// The wrapped error.
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }

    /// Unwraps the error.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }
}

impl fmt::Display for DoNotRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Error for DoNotRetry {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.source()
    }
}

/// Marks an error as retryable after a given delay (an HTTP `Retry-After`, say). Recognised
/// anywhere in an error's source chain.
///
/// Displays as the wrapped error; its [`source`](Error::source) is the wrapped error's source.
#[derive(Debug)]
pub struct RetryAfter {
    delay: Duration,
    inner: BoxError,
}

impl RetryAfter {
    /// Wraps `err`, asking for the next attempt no sooner than `delay` from now.
    pub fn new(delay: Duration, err: impl Into<BoxError>) -> Self {
        Self {
            delay,
            inner: err.into(),
        }
    }

    /// The requested delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The wrapped error.
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }

    /// Unwraps the error.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Error for RetryAfter {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.source()
    }
}

/// Every level of `err`'s chain, outermost first, looking through [`DoNotRetry`] and
/// [`RetryAfter`] to the errors they wrap.
fn causes<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |level| next_cause(*level))
}

fn next_cause<'a>(level: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    if let Some(marker) = level.downcast_ref::<DoNotRetry>() {
        Some(marker.inner())
    } else if let Some(marker) = level.downcast_ref::<RetryAfter>() {
        Some(marker.inner())
    } else {
        level.source()
    }
}

/// Whether a [`DoNotRetry`] marker appears anywhere in `err`'s chain.
pub fn is_do_not_retry(err: &(dyn Error + 'static)) -> bool {
    causes(err).any(|level| level.is::<DoNotRetry>())
}

/// The delay of the outermost [`RetryAfter`] marker in `err`'s chain.
pub fn retry_after(err: &(dyn Error + 'static)) -> Option<Duration> {
    causes(err).find_map(|level| level.downcast_ref::<RetryAfter>().map(RetryAfter::delay))
}

/// What to do about a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryDecision {
    /// No opinion at this level of the error chain; look further (a classifier's answer).
    Undecided,
    /// Retry after the policy's backoff.
    Retry,
    /// Retry after exactly this delay.
    RetryAfter(Duration),
    /// Give up now.
    DoNotRetry,
}

/// A caller-supplied classifier, consulted at each level of a failed attempt's error chain.
pub type RetryClassifier = Arc<dyn Fn(&(dyn Error + 'static)) -> RetryDecision + Send + Sync>;

/// How failed attempts are retried.
///
/// Defaults: 5 attempts; backoff 2s, 4s, 8s, … capped at 30s, each with jitter (a random delay
/// between half and all of it); `Retry-After` delays honoured up to 2 minutes (a longer demand
/// ends the retries instead of hanging the transfer).
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    max_retry_after: Duration,
    jitter: bool,
    classifier: Option<RetryClassifier>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            jitter: true,
            classifier: None,
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .field("max_retry_after", &self.max_retry_after)
            .field("jitter", &self.jitter)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

impl RetryPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of attempts, first one included (at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Sets the delay after the first failed attempt; it doubles after each further one.
    pub fn with_base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// Caps the backoff delay.
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The longest `Retry-After` delay that is waited for; longer demands end the retries.
    pub fn with_max_retry_after(mut self, delay: Duration) -> Self {
        self.max_retry_after = delay;
        self
    }

    /// Turns jitter on backoff delays on or off (it never applies to `Retry-After`).
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Adds a classifier consulted at each level of a failed attempt's error chain.
    pub fn with_classifier<F>(mut self, classifier: F) -> Self
    where
        F: Fn(&(dyn Error + 'static)) -> RetryDecision + Send + Sync + 'static,
    {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// The number of attempts, first one included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The decision for a failed attempt's error (never [`RetryDecision::Undecided`]).
    pub fn classify(&self, err: &(dyn Error + 'static)) -> RetryDecision {
        for level in causes(err) {
            if level.is::<DoNotRetry>() {
                return RetryDecision::DoNotRetry;
            }
            if let Some(marker) = level.downcast_ref::<RetryAfter>() {
                return RetryDecision::RetryAfter(marker.delay());
            }
            if let Some(classifier) = &self.classifier {
                match classifier(level) {
                    RetryDecision::Undecided => {}
                    decision => return decision,
                }
            }
        }
        RetryDecision::Retry
    }

    /// The backoff delay after failed attempt number `attempt` (1-based), jitter included.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let delay = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        if self.jitter && !delay.is_zero() {
            let half = delay / 2;
            let spread = u64::try_from((delay - half).as_millis()).unwrap_or(u64::MAX);
            half + Duration::from_millis(rand::random_range(0..=spread))
        } else {
            delay
        }
    }

    /// The delay before retrying after failed attempt number `attempt` (1-based) ended with
    /// `err`, or `None` to stop: the attempts are used up, the error is not retryable, or it
    /// demands a `Retry-After` longer than the policy waits. For callers running their own
    /// attempt loop (the transfer managers have theirs).
    pub fn delay_after(&self, err: &(dyn Error + 'static), attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        self.next_delay(self.classify(err), attempt)
    }

    /// The delay before the next attempt, or `None` to stop retrying.
    fn next_delay(&self, decision: RetryDecision, attempt: u32) -> Option<Duration> {
        match decision {
            RetryDecision::DoNotRetry => None,
            RetryDecision::RetryAfter(delay) if delay > self.max_retry_after => None,
            RetryDecision::RetryAfter(delay) => Some(delay),
            RetryDecision::Retry | RetryDecision::Undecided => Some(self.backoff(attempt)),
        }
    }
}

/// What one attempt of a layer transfer gets: its number, where to report progress,
/// cancellation, and the offset earlier attempts left behind.
#[derive(Clone)]
pub struct AttemptContext {
    attempt: u32,
    max_attempts: u32,
    id: String,
    progress: SharedProgress,
    token: CancellationToken,
    resume: Arc<AtomicU64>,
}

/// The context of one download attempt.
pub type DownloadContext = AttemptContext;

/// The context of one upload attempt.
pub type UploadContext = AttemptContext;

impl fmt::Debug for AttemptContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .field("resume_offset", &self.resume_offset())
            .field("cancelled", &self.token.is_cancelled())
            .finish()
    }
}

impl AttemptContext {
    /// The attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts may be made in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The display id progress is reported under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The output progress goes to (the transfer's watchers).
    pub fn progress(&self) -> &SharedProgress {
        &self.progress
    }

    /// Reports progress for this item: `action` with byte counts.
    pub fn report(&self, action: &str, current: u64, total: Option<u64>) {
        self.progress
            .update(Progress::new(self.id.clone(), action).with_bytes(current, total));
    }

    /// Fires when the transfer is cancelled; the attempt should stop promptly (it is dropped
    /// at its next await point in any case).
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether the transfer was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Bytes that earlier attempts recorded as safely held (0 on the first attempt): a
    /// descriptor able to resume continues from here instead of starting over.
    pub fn resume_offset(&self) -> u64 {
        self.resume.load(Ordering::Acquire)
    }

    /// Records how many bytes are safely held, for the next attempt to resume from.
    pub fn set_resume_offset(&self, offset: u64) {
        self.resume.store(offset, Ordering::Release);
    }
}

/// Why [`run_attempts`] gave up.
#[derive(Debug)]
pub(crate) enum AttemptsError {
    /// The transfer was cancelled.
    Cancelled,
    /// The last attempt failed and no further one is allowed.
    Failed {
        attempts: u32,
        retryable: bool,
        source: BoxError,
    },
}

/// Runs `attempt_fn` until it succeeds, the policy gives up, or the transfer is cancelled.
/// Between attempts it counts down in progress, `"Retrying in 4s: <cause>"`.
pub(crate) async fn run_attempts<T, F, Fut>(
    policy: &RetryPolicy,
    ctx: &TransferContext,
    id: &str,
    mut attempt_fn: F,
) -> Result<T, AttemptsError>
where
    F: FnMut(AttemptContext) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let token = ctx.cancellation_token();
    let resume = Arc::new(AtomicU64::new(0));
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let attempt_ctx = AttemptContext {
            attempt,
            max_attempts,
            id: id.to_string(),
            progress: ctx.progress_output(),
            token: token.clone(),
            resume: Arc::clone(&resume),
        };
        let err = match token.run_until_cancelled(attempt_fn(attempt_ctx)).await {
            None => return Err(AttemptsError::Cancelled),
            Some(Ok(value)) => return Ok(value),
            Some(Err(err)) => err,
        };
        if token.is_cancelled() {
            return Err(AttemptsError::Cancelled);
        }
        let decision = policy.classify(&*err);
        let delay = match policy.next_delay(decision, attempt) {
            Some(delay) if attempt < max_attempts => delay,
            _ => {
                tracing::debug!(id, attempt, error = %describe(&*err), "giving up");
                return Err(AttemptsError::Failed {
                    attempts: attempt,
                    retryable: decision != RetryDecision::DoNotRetry,
                    source: err,
                });
            }
        };
        let cause = describe(&*err);
        tracing::debug!(id, attempt, ?delay, error = %cause, "retrying");
        if !count_down(ctx, id, delay, &cause).await {
            return Err(AttemptsError::Cancelled);
        }
        attempt += 1;
    }
}

/// Waits `delay`, publishing the whole seconds left once a second. `false` if cancelled.
async fn count_down(ctx: &TransferContext, id: &str, delay: Duration, cause: &str) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        ctx.progress(Progress::new(id, format!("Retrying in {seconds}s")).with_message(cause));
        let next_tick = deadline - Duration::from_secs(seconds - 1);
        tokio::select! {
            biased;
            () = ctx.cancelled() => return false,
            () = tokio::time::sleep_until(next_tick) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[derive(Debug)]
    struct Unauthorized;

    impl fmt::Display for Unauthorized {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("unauthorized")
        }
    }

    impl Error for Unauthorized {}

    fn reset() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")
    }

    #[test]
    fn do_not_retry_is_found_under_two_wrappers() {
        let err = Wrapper(Box::new(Wrapper(Box::new(DoNotRetry::new(reset())))));
        assert!(is_do_not_retry(&err));
        assert_eq!(RetryPolicy::new().classify(&err), RetryDecision::DoNotRetry);
        assert!(!is_do_not_retry(&Wrapper(Box::new(reset()))));
    }

    #[test]
    fn retry_after_is_found_in_the_chain() {
        let err = Wrapper(Box::new(RetryAfter::new(Duration::from_secs(7), reset())));
        assert_eq!(retry_after(&err), Some(Duration::from_secs(7)));
        assert_eq!(
            RetryPolicy::new().classify(&err),
            RetryDecision::RetryAfter(Duration::from_secs(7))
        );
    }

    #[test]
    fn markers_display_as_the_wrapped_error() {
        let err = DoNotRetry::new(reset());
        assert_eq!(err.to_string(), "connection reset");
        assert_eq!(
            describe(&Wrapper(Box::new(err))),
            "wrapped: connection reset"
        );
    }

    #[test]
    fn classifier_sees_errors_inside_markers_and_wrappers() {
        let policy = RetryPolicy::new().with_classifier(|err| {
            if err.is::<Unauthorized>() {
                RetryDecision::DoNotRetry
            } else {
                RetryDecision::Undecided
            }
        });
        assert_eq!(
            policy.classify(&Wrapper(Box::new(Unauthorized))),
            RetryDecision::DoNotRetry
        );
        assert_eq!(
            policy.classify(&Wrapper(Box::new(reset()))),
            RetryDecision::Retry
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_within_half() {
        let policy = RetryPolicy::new()
            .with_base_delay(Duration::from_secs(2))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter(false);
        let delays: Vec<_> = (1..=5).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 10, 10]);
        let jittered = policy.with_jitter(true);
        for attempt in 1..=5 {
            for _ in 0..50 {
                let delay = jittered.backoff(attempt);
                let full = Duration::from_secs(delays[attempt as usize - 1]);
                assert!(delay >= full / 2 && delay <= full, "{delay:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn max_attempts_is_at_least_one() {
        assert_eq!(RetryPolicy::new().with_max_attempts(0).max_attempts(), 1);
    }

    #[test]
    fn overlong_retry_after_ends_retries() {
        let policy = RetryPolicy::new().with_max_retry_after(Duration::from_secs(60));
        assert_eq!(
            policy.next_delay(RetryDecision::RetryAfter(Duration::from_secs(61)), 1),
            None
        );
        assert_eq!(
            policy.next_delay(RetryDecision::RetryAfter(Duration::from_secs(60)), 1),
            Some(Duration::from_secs(60))
        );
    }
}
