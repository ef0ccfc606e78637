//! Progress rendering: bars on a terminal, plain lines when output is not a terminal, one JSON
//! object per line with `--json`, nothing with `-q`.
//!
//! The library reports [`Progress`] events per item (a layer, a blob); the [`Renderer`] turns them
//! into output. What is printed in plain and JSON modes is decided by [`PlainFilter`], which is
//! I/O-free: a line when an item's action changes (Waiting, Downloading, Retrying, Verifying,
//! Extracting, Pull complete…), never one per byte count.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use hoist_xfer::{ChannelProgress, Progress, SharedProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars, one per item (stderr is a terminal).
    Bars,
    /// One line per action change.
    Plain,
    /// One JSON object per action change.
    Json,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// The mode for the global flags and whether stderr is a terminal.
    pub fn choose(json: bool, quiet: bool, terminal: bool) -> Mode {
        match (json, quiet, terminal) {
            (true, _, _) => Mode::Json,
            (_, true, _) => Mode::Quiet,
            (_, _, true) => Mode::Bars,
            _ => Mode::Plain,
        }
    }
}

/// Decides which events become lines: the first event of an item, and every change of its
/// action or message.
#[derive(Debug, Default)]
pub struct PlainFilter {
    last: HashMap<String, (String, Option<String>)>,
}

impl PlainFilter {
    /// Whether `p` is worth a line.
    pub fn admit(&mut self, p: &Progress) -> bool {
        let key = (p.action.clone(), p.message.clone());
        match self.last.get(&p.id) {
            Some(prev) if *prev == key => false,
            _ => {
                self.last.insert(p.id.clone(), key);
                true
            }
        }
    }
}

/// A plain line for an event: `ID: Action` (with the message), without byte counts.
pub fn plain_line(p: &Progress) -> String {
    let mut s = String::new();
    if !p.id.is_empty() {
        s.push_str(&p.id);
        s.push_str(": ");
    }
    s.push_str(&p.action);
    if let Some(m) = &p.message {
        s.push_str(" (");
        s.push_str(m);
        s.push(')');
    }
    s
}

/// The JSON object for an event.
pub fn json_event(p: &Progress) -> serde_json::Value {
    let mut v = serde_json::json!({
        "event": "progress",
        "id": p.id,
        "action": p.action,
        "current": p.current,
    });
    if let Some(t) = p.total {
        v["total"] = t.into();
    }
    if let Some(m) = &p.message {
        v["message"] = m.clone().into();
    }
    v
}

/// Renders progress events until every sender is dropped.
pub struct Renderer {
    output: SharedProgress,
    task: tokio::task::JoinHandle<()>,
}

impl Renderer {
    /// Starts rendering in `mode`; plain and JSON lines go to `out`.
    pub fn start(mode: Mode, out: Box<dyn Write + Send>) -> Renderer {
        let (output, rx) = ChannelProgress::shared();
        let task = tokio::spawn(render(mode, rx, out));
        Renderer { output, task }
    }

    /// The output to hand to the library.
    pub fn output(&self) -> SharedProgress {
        Arc::clone(&self.output)
    }

    /// Waits until everything sent so far is rendered.
    pub async fn finish(self) {
        drop(self.output);
        let _ = self.task.await;
    }
}

async fn render(mode: Mode, mut rx: UnboundedReceiver<Progress>, mut out: Box<dyn Write + Send>) {
    let mut filter = PlainFilter::default();
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(p) = rx.recv().await {
        match mode {
            Mode::Quiet => {}
            Mode::Plain => {
                if filter.admit(&p) {
                    let _ = writeln!(out, "{}", plain_line(&p));
                }
            }
            Mode::Json => {
                if filter.admit(&p) {
                    let _ = serde_json::to_writer(&mut out, &json_event(&p));
                    let _ = out.write_all(b"\n");
                }
            }
            Mode::Bars => {
                let bar = bars.entry(p.id.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(style_text());
                    b.set_prefix(p.id.clone());
                    b
                });
                match p.total {
                    Some(total) if total > 0 && !is_final(&p.action) => {
                        bar.set_style(style_bytes());
                        bar.set_length(total);
                        bar.set_position(p.current.min(total));
                    }
                    _ => bar.set_style(style_text()),
                }
                let msg = match &p.message {
                    Some(m) => format!("{} ({m})", p.action),
                    None => p.action.clone(),
                };
                bar.set_message(msg);
                if is_final(&p.action) {
                    bar.finish();
                }
            }
        }
    }
    for b in bars.values() {
        if !b.is_finished() {
            b.abandon();
        }
    }
    let _ = out.flush();
}

fn is_final(action: &str) -> bool {
    matches!(
        action,
        "Pull complete" | "Already exists" | "Pushed" | "Layer already exists" | "Copied"
    ) || action.starts_with("Mounted from")
}

fn style_text() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:.bold}: {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn style_bytes() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:.bold}: {msg:<12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, action: &str, cur: u64, total: Option<u64>) -> Progress {
        Progress::new(id, action).with_bytes(cur, total)
    }

    #[test]
    fn plain_mode_prints_action_changes_not_byte_counts() {
        let mut f = PlainFilter::default();
        let events = [
            ev("abc", "Waiting", 0, None),
            ev("abc", "Downloading", 10, Some(100)),
            ev("abc", "Downloading", 50, Some(100)),
            ev("abc", "Downloading", 100, Some(100)),
            Progress::new("abc", "Retrying in 2s").with_message("connection reset"),
            ev("abc", "Downloading", 10, Some(100)),
            ev("def", "Already exists", 0, None),
            ev("abc", "Pull complete", 0, None),
        ];
        let lines: Vec<String> = events
            .iter()
            .filter(|e| f.admit(e))
            .map(plain_line)
            .collect();
        assert_eq!(
            lines,
            vec![
                "abc: Waiting",
                "abc: Downloading",
                "abc: Retrying in 2s (connection reset)",
                "abc: Downloading",
                "def: Already exists",
                "abc: Pull complete",
            ]
        );
    }

    #[test]
    fn json_events_carry_counts_and_messages() {
        let v = json_event(&Progress::new("x", "Retrying in 1s").with_message("503"));
        assert_eq!(v["action"], "Retrying in 1s");
        assert_eq!(v["message"], "503");
        assert!(v.get("total").is_none());
        let v = json_event(&ev("x", "Downloading", 5, Some(9)));
        assert_eq!(v["total"], 9);
        assert_eq!(v["current"], 5);
    }

    #[test]
    fn mode_follows_flags_then_terminal() {
        assert_eq!(Mode::choose(true, true, true), Mode::Json);
        assert_eq!(Mode::choose(false, true, true), Mode::Quiet);
        assert_eq!(Mode::choose(false, false, true), Mode::Bars);
        assert_eq!(Mode::choose(false, false, false), Mode::Plain);
    }
}
