//! What the client shows: progress bars on stderr (only on a terminal, never with `--quiet`),
//! messages on stderr, results on stdout (text, or one JSON object per result with `--json`).

use super::args::Output;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Duration;

pub struct Out {
    pub quiet: bool,
    pub json: bool,
    bars: bool,
}

impl Out {
    pub fn new(o: &Output) -> Out {
        super::api::DURABLE.store(o.fsync, std::sync::atomic::Ordering::Relaxed);
        Out {
            quiet: o.quiet,
            json: o.json,
            bars: !o.quiet && std::io::stderr().is_terminal(),
        }
    }

    /// A message for people (stderr), unless `--quiet`.
    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// One result: `value` with `--json`, else `text` (if any) on stdout.
    pub fn result(&self, value: serde_json::Value, text: Option<String>) {
        // A closed pipe (`| head`) ends the output, not the command.
        let mut o = std::io::stdout().lock();
        let _ = if self.json {
            writeln!(o, "{value}")
        } else if let Some(t) = text {
            writeln!(o, "{t}")
        } else {
            Ok(())
        };
    }

    fn bar(&self, len: u64, template: &str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    }

    /// The bar of an export being built (bytes when the server knows them).
    pub fn build_bar(&self, what: &str) -> ProgressBar {
        let b = self.bar(
            100,
            "{msg:12} [{bar:30}] {percent:>3}% {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} ETA {eta}",
        );
        b.set_message(what.to_string());
        b
    }

    /// A spinner for work whose size is unknown.
    pub fn spinner(&self, what: &str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"),
        );
        b.set_message(what.to_string());
        b.enable_steady_tick(Duration::from_millis(100));
        b
    }

    /// The bar of a download.
    pub fn download_bar(&self, total: u64, done: u64) -> ProgressBar {
        let b = self.bar(
            total,
            "{msg:12} [{bar:30}] {percent:>3}% {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} ETA {eta}",
        );
        b.set_message("downloading");
        b.set_position(done);
        b.reset_eta();
        b
    }
}
