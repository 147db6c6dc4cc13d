//! Progress on stderr: indicatif bars on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use gapsync::progress::Progress;
use gapsync::units::human_bytes;
use indicatif::{ProgressBar, ProgressStyle};

pub struct TermProgress {
    tty: bool,
    quiet: bool,
    state: Mutex<State>,
}

struct State {
    bar: Option<ProgressBar>,
    name: String,
    unit: &'static str,
    done: u64,
    started: Instant,
}

impl TermProgress {
    pub fn new(quiet: bool) -> Self {
        TermProgress {
            tty: !quiet && std::io::stderr().is_terminal(),
            quiet,
            state: Mutex::new(State {
                bar: None,
                name: String::new(),
                unit: "",
                done: 0,
                started: Instant::now(),
            }),
        }
    }
}

fn amount(n: u64, unit: &str) -> String {
    if unit == "bytes" {
        human_bytes(n)
    } else {
        format!("{n} {unit}")
    }
}

impl Progress for TermProgress {
    fn phase(&self, name: &str, total: Option<u64>, unit: &'static str) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if let Some(b) = st.bar.take() {
            b.finish_and_clear();
        }
        st.name = name.to_string();
        st.unit = unit;
        st.done = 0;
        st.started = Instant::now();
        if self.tty {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let tmpl = if unit == "bytes" {
                "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}"
            };
            if let Ok(style) = ProgressStyle::with_template(tmpl) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name.to_string());
            st.bar = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.done += n;
        if let Some(b) = &st.bar {
            b.inc(n);
        }
    }

    fn finish(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if let Some(b) = st.bar.take() {
            b.finish_and_clear();
        }
        if !st.name.is_empty() && !self.quiet {
            let secs = st.started.elapsed().as_secs_f64();
            eprintln!("{}: {} in {:.1} s", st.name, amount(st.done, st.unit), secs);
            st.name.clear();
        }
    }
}
