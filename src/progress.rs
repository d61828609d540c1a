//! Progress for the long-running commands (`demo`, `bench`, `replay`): a
//! live bar on a terminal (indicatif), plain periodic lines when stderr is
//! a pipe or a file, so logs never collect carriage-return frames.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a plain (non-terminal) progress line is written.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// One task's progress on stderr.
pub struct Progress {
    out: Output,
    what: String,
}

enum Output {
    Bar(ProgressBar),
    /// Last line written and the position then.
    Plain(Mutex<PlainState>),
}

struct PlainState {
    last: Instant,
    pos: u64,
    total: Option<u64>,
    message: String,
}

impl Progress {
    /// A progress of `total` steps (`None`: unknown, a spinner), labelled
    /// `what`. A bar if stderr is a terminal, periodic lines otherwise.
    pub fn new(what: &str, total: Option<u64>) -> Self {
        Self::with_terminal(what, total, std::io::stderr().is_terminal())
    }

    /// As [`Progress::new`], with the terminal test made by the caller.
    pub fn with_terminal(what: &str, total: Option<u64>, terminal: bool) -> Self {
        let out = if terminal {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} {msg}"
            } else {
                "{prefix} [{elapsed_precise}] {spinner} {human_pos} {per_sec} {msg}"
            };
            bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
            bar.set_prefix(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            Output::Bar(bar)
        } else {
            Output::Plain(Mutex::new(PlainState {
                last: Instant::now(),
                pos: 0,
                total,
                message: String::new(),
            }))
        };
        Progress {
            out,
            what: what.to_owned(),
        }
    }

    /// Moves to `pos` steps done.
    pub fn set_position(&self, pos: u64) {
        match &self.out {
            Output::Bar(b) => b.set_position(pos),
            Output::Plain(s) => {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.pos = pos;
                if s.last.elapsed() >= PLAIN_EVERY {
                    s.last = Instant::now();
                    eprintln!("{}", self.plain_line(&s));
                }
            }
        }
    }

    /// Sets the number of steps (once known).
    pub fn set_length(&self, total: u64) {
        match &self.out {
            Output::Bar(b) => b.set_length(total),
            Output::Plain(s) => s.lock().unwrap_or_else(|e| e.into_inner()).total = Some(total),
        }
    }

    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        let pos = match &self.out {
            Output::Bar(b) => b.position(),
            Output::Plain(s) => s.lock().unwrap_or_else(|e| e.into_inner()).pos,
        };
        self.set_position(pos + n);
    }

    /// Sets the free text after the counts.
    pub fn set_message(&self, message: impl Into<String>) {
        match &self.out {
            Output::Bar(b) => b.set_message(message.into()),
            Output::Plain(s) => {
                s.lock().unwrap_or_else(|e| e.into_inner()).message = message.into()
            }
        }
    }

    /// Writes a line above the bar (or between plain lines).
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.out {
            Output::Bar(b) => b.println(line.as_ref()),
            Output::Plain(_) => eprintln!("{}", line.as_ref()),
        }
    }

    /// Ends the progress, leaving its final line.
    pub fn finish(&self) {
        match &self.out {
            Output::Bar(b) => b.finish(),
            Output::Plain(s) => {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!("{}", self.plain_line(&s));
            }
        }
    }

    fn plain_line(&self, s: &PlainState) -> String {
        let counts = match s.total {
            Some(total) => format!("{}/{total}", s.pos),
            None => s.pos.to_string(),
        };
        if s.message.is_empty() {
            format!("{}: {counts}", self.what)
        } else {
            format!("{}: {counts} {}", self.what, s.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_carry_counts_and_message() {
        let p = Progress::with_terminal("replay", Some(10), false);
        p.set_position(4);
        p.set_message("sent 3");
        let Output::Plain(s) = &p.out else {
            panic!("not a terminal: plain output")
        };
        let line = p.plain_line(&s.lock().unwrap());
        assert_eq!(line, "replay: 4/10 sent 3");
        assert!(!line.contains('\r'));
    }
}
