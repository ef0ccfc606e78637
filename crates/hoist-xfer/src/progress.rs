//! Progress reports and the outputs that receive them.
//!
//! Every transfer publishes [`Progress`] values; watchers receive them through a
//! [`ProgressOutput`]. An output's [`update`](ProgressOutput::update) must never block: the engine
//! calls it from its own tasks, and a slow consumer must not hold a transfer back.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

/// One progress report about one item (a layer, usually), for display.
///
/// `action` is the short status ("Downloading", "Already exists", "Retrying in 4s"), `current`
/// and `total` count bytes where that makes sense, and `message` carries detail such as the
/// cause of a retry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Display identifier of the item, e.g. a shortened layer digest.
    pub id: String,
    /// Short status of the item.
    pub action: String,
    /// Bytes done so far (0 when not applicable).
    pub current: u64,
    /// Total bytes, when known.
    pub total: Option<u64>,
    /// Optional detail, e.g. the error that caused a retry.
    pub message: Option<String>,
}

impl Progress {
    /// A report with an action only.
    pub fn new(id: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            action: action.into(),
            ..Self::default()
        }
    }

    /// Sets the byte counts.
    pub fn with_bytes(mut self, current: u64, total: Option<u64>) -> Self {
        self.current = current;
        self.total = total;
        self
    }

    /// Sets the detail message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The report without its id: `"Downloading 10/100"`, `"Retrying in 4s: connection reset"`.
    pub fn status(&self) -> String {
        let mut status = self.action.clone();
        match self.total {
            Some(total) => status.push_str(&format!(" {}/{total}", self.current)),
            None if self.current > 0 => status.push_str(&format!(" {}", self.current)),
            None => {}
        }
        if let Some(message) = &self.message {
            status.push_str(": ");
            status.push_str(message);
        }
        status
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.id.is_empty() {
            f.write_str(&self.status())
        } else {
            write!(f, "{}: {}", self.id, self.status())
        }
    }
}

/// Receives progress reports.
///
/// `update` must return promptly and never block (queue, coalesce or drop instead): the engine
/// calls it while it forwards a transfer's progress to a watcher.
pub trait ProgressOutput: Send + Sync {
    /// Takes one report.
    fn update(&self, progress: Progress);
}

/// A shareable progress output, as the engine's APIs take it.
pub type SharedProgress = Arc<dyn ProgressOutput>;

impl<F> ProgressOutput for F
where
    F: Fn(Progress) + Send + Sync,
{
    fn update(&self, progress: Progress) {
        self(progress)
    }
}

/// A progress output that forwards every report into an unbounded channel.
///
/// Sending never blocks; if the receiver is gone, reports are dropped. The queue is unbounded,
/// so the receiver should be drained (a UI loop, or a test collecting reports).
#[derive(Clone, Debug)]
pub struct ChannelProgress {
    tx: mpsc::UnboundedSender<Progress>,
}

impl ChannelProgress {
    /// A new output and the receiving end of its channel.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Like [`ChannelProgress::new`], with the output already shared.
    pub fn shared() -> (SharedProgress, mpsc::UnboundedReceiver<Progress>) {
        let (output, rx) = Self::new();
        (Arc::new(output), rx)
    }
}

impl ProgressOutput for ChannelProgress {
    fn update(&self, progress: Progress) {
        // A closed receiver means nobody is listening any more; dropping is correct.
        let _ = self.tx.send(progress);
    }
}

/// A progress output that ignores every report.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardProgress;

impl DiscardProgress {
    /// A shared discarding output.
    pub fn shared() -> SharedProgress {
        Arc::new(Self)
    }
}

impl ProgressOutput for DiscardProgress {
    fn update(&self, _progress: Progress) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_bytes_and_cause() {
        assert_eq!(
            Progress::new("abc", "Downloading")
                .with_bytes(10, Some(100))
                .status(),
            "Downloading 10/100"
        );
        assert_eq!(
            Progress::new("abc", "Retrying in 4s")
                .with_message("connection reset")
                .to_string(),
            "abc: Retrying in 4s: connection reset"
        );
        assert_eq!(Progress::new("", "Done").to_string(), "Done");
    }

    #[test]
    fn channel_output_delivers_in_order_and_survives_a_closed_receiver() {
        let (output, mut rx) = ChannelProgress::new();
        output.update(Progress::new("a", "one"));
        output.update(Progress::new("a", "two"));
        assert_eq!(rx.try_recv().unwrap().action, "one");
        assert_eq!(rx.try_recv().unwrap().action, "two");
        drop(rx);
        output.update(Progress::new("a", "three"));
    }

    #[test]
    fn closures_are_progress_outputs() {
        let seen = std::sync::Mutex::new(Vec::new());
        let output = |p: Progress| seen.lock().unwrap().push(p.action);
        output.update(Progress::new("x", "Waiting"));
        assert_eq!(*seen.lock().unwrap(), vec!["Waiting".to_string()]);
    }
}
