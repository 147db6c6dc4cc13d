//! Progress on stderr: indicatif bars on a terminal; otherwise plain lines,
//! one at least every [`PLAIN_INTERVAL`] while a phase runs (phase,
//! done/total, rate) and one when it ends; nothing with `--quiet`.
//!
//! Test hook: `GAPSYNC_PROGRESS_INTERVAL_MS` (milliseconds) replaces the
//! interval of the plain lines.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gapsync::model::units::human_bytes;
use gapsync::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Longest time between two plain progress lines while a phase runs.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(10);

/// The environment variable that replaces [`PLAIN_INTERVAL`] (a test hook).
pub const INTERVAL_ENV: &str = "GAPSYNC_PROGRESS_INTERVAL_MS";

type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

pub struct TermProgress {
    tty: bool,
    quiet: bool,
    shared: Arc<Shared>,
    /// Dropped with the progress: stops the thread that prints plain lines.
    _stop: Option<mpsc::Sender<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Where plain lines go (stderr).
    out: Mutex<Box<dyn Write + Send>>,
    interval: Duration,
    clock: Clock,
}

struct State {
    bar: Option<ProgressBar>,
    name: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    /// When the last plain line of this phase was printed (or it started).
    last_line: Instant,
}

impl TermProgress {
    pub fn new(quiet: bool) -> Self {
        let tty = !quiet && std::io::stderr().is_terminal();
        let interval = interval_from_env();
        let mut p = Self::with_parts(
            tty,
            quiet,
            interval,
            Box::new(std::io::stderr()),
            Box::new(Instant::now),
        );
        if !tty && !quiet {
            p.start_ticker();
        }
        p
    }

    /// A progress with its output, interval and clock given (tests); no
    /// thread prints by itself until [`TermProgress::start_ticker`].
    fn with_parts(
        tty: bool,
        quiet: bool,
        interval: Duration,
        out: Box<dyn Write + Send>,
        clock: Clock,
    ) -> Self {
        let now = clock();
        TermProgress {
            tty,
            quiet,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    bar: None,
                    name: String::new(),
                    unit: "",
                    total: None,
                    done: 0,
                    started: now,
                    last_line: now,
                }),
                out: Mutex::new(out),
                interval,
                clock,
            }),
            _stop: None,
        }
    }

    /// Starts the thread that prints a plain line whenever one is due, so
    /// a line comes at least every interval even when a phase advances
    /// rarely.
    fn start_ticker(&mut self) {
        let (tx, rx) = mpsc::channel::<()>();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                loop {
                    let wait = shared.until_due();
                    match rx.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => shared.tick(),
                        // The progress was dropped.
                        _ => return,
                    }
                }
            });
        if spawned.is_ok() {
            self._stop = Some(tx);
        }
    }
}

/// The interval of plain lines: [`PLAIN_INTERVAL`], or the test hook's.
fn interval_from_env() -> Duration {
    match std::env::var(INTERVAL_ENV) {
        Err(_) => PLAIN_INTERVAL,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                eprintln!(
                    "gapsync: WARNING: {INTERVAL_ENV}={v:?} is not a positive number of milliseconds; using {} s",
                    PLAIN_INTERVAL.as_secs()
                );
                PLAIN_INTERVAL
            }
        },
    }
}

impl Shared {
    /// How long until the next plain line is due.
    fn until_due(&self) -> Duration {
        let now = (self.clock)();
        match self.state.lock() {
            Ok(st) if !st.name.is_empty() => (st.last_line + self.interval)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
            _ => self.interval,
        }
    }

    /// Prints the plain line of the running phase when one is due.
    fn tick(&self) {
        let now = (self.clock)();
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.name.is_empty() || now.saturating_duration_since(st.last_line) < self.interval {
            return;
        }
        st.last_line = now;
        let line = plain_line(
            &st.name,
            st.done,
            st.total,
            st.unit,
            now.saturating_duration_since(st.started),
        );
        drop(st);
        self.write_line(&line);
    }

    fn write_line(&self, line: &str) {
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
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

/// A plain progress line: `content: 1.2 GiB of 4.0 GiB (30%), 120.5 MiB/s,
/// 10 s` (or without the total when it is unknown).
fn plain_line(name: &str, done: u64, total: Option<u64>, unit: &str, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let rate = if unit == "bytes" {
        format!("{}/s", human_bytes(rate as u64))
    } else {
        let digits = if rate < 10.0 { 1 } else { 0 };
        format!("{rate:.digits$} {unit}/s")
    };
    let so_far = match total {
        Some(t) if t > 0 => format!(
            "{} of {} ({}%)",
            if unit == "bytes" {
                human_bytes(done)
            } else {
                done.to_string()
            },
            amount(t, unit),
            (u128::from(done.min(t)) * 100 / u128::from(t))
        ),
        _ => amount(done, unit),
    };
    format!("{name}: {so_far}, {rate}, {secs:.0} s")
}

impl Progress for TermProgress {
    fn phase(&self, name: &str, total: Option<u64>, unit: &'static str) {
        let now = (self.shared.clock)();
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        if let Some(b) = st.bar.take() {
            b.finish_and_clear();
        }
        st.name = name.to_string();
        st.unit = unit;
        st.total = total;
        st.done = 0;
        st.started = now;
        st.last_line = now;
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
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        st.done += n;
        if let Some(b) = &st.bar {
            b.inc(n);
        }
    }

    fn finish(&self) {
        let now = (self.shared.clock)();
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        if let Some(b) = st.bar.take() {
            b.finish_and_clear();
        }
        if !st.name.is_empty() && !self.quiet {
            let secs = now.saturating_duration_since(st.started).as_secs_f64();
            let line = format!("{}: {} in {:.1} s", st.name, amount(st.done, st.unit), secs);
            st.name.clear();
            drop(st);
            self.shared.write_line(&line);
        } else {
            st.name.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    /// A clock the test moves by hand.
    fn fake_clock() -> (Arc<Mutex<Instant>>, Clock) {
        let t = Arc::new(Mutex::new(Instant::now()));
        let t2 = t.clone();
        (t, Box::new(move || *t2.lock().unwrap()))
    }

    fn at(t: &Arc<Mutex<Instant>>, start: Instant, secs: u64) {
        *t.lock().unwrap() = start + Duration::from_secs(secs);
    }

    #[test]
    fn plain_lines_come_every_interval_while_a_phase_runs() {
        let sink = Sink::default();
        let (t, clock) = fake_clock();
        let start = *t.lock().unwrap();
        let p =
            TermProgress::with_parts(false, false, PLAIN_INTERVAL, Box::new(sink.clone()), clock);
        p.phase("content", Some(4000), "bytes");
        assert_eq!(p.shared.until_due(), PLAIN_INTERVAL);
        at(&t, start, 5);
        p.advance(1000);
        p.shared.tick();
        assert!(sink.lines().is_empty(), "nothing due after 5 s");
        assert_eq!(p.shared.until_due(), Duration::from_secs(5));
        at(&t, start, 10);
        p.shared.tick();
        at(&t, start, 15);
        p.shared.tick();
        at(&t, start, 20);
        p.advance(1000);
        p.shared.tick();
        at(&t, start, 25);
        p.finish();
        at(&t, start, 40);
        p.shared.tick();
        assert_eq!(
            sink.lines(),
            [
                "content: 1000 B of 3.9 KiB (25%), 100 B/s, 10 s",
                "content: 2.0 KiB of 3.9 KiB (50%), 100 B/s, 20 s",
                "content: 2.0 KiB in 25.0 s",
            ]
        );
    }

    #[test]
    fn plain_lines_without_a_total_and_in_units() {
        let sink = Sink::default();
        let (t, clock) = fake_clock();
        let start = *t.lock().unwrap();
        let p =
            TermProgress::with_parts(false, false, PLAIN_INTERVAL, Box::new(sink.clone()), clock);
        p.phase("metadata", Some(5000), "revisions");
        p.advance(1200);
        at(&t, start, 12);
        p.shared.tick();
        p.phase("scan", None, "files");
        p.advance(7);
        at(&t, start, 22);
        p.shared.tick();
        assert_eq!(
            sink.lines(),
            [
                "metadata: 1200 of 5000 revisions (24%), 100 revisions/s, 12 s",
                "scan: 7 files, 0.7 files/s, 10 s",
            ]
        );
    }

    #[test]
    fn quiet_prints_nothing() {
        let sink = Sink::default();
        let (t, clock) = fake_clock();
        let start = *t.lock().unwrap();
        let p =
            TermProgress::with_parts(false, true, PLAIN_INTERVAL, Box::new(sink.clone()), clock);
        p.phase("content", Some(10), "bytes");
        p.advance(5);
        at(&t, start, 30);
        p.finish();
        assert!(sink.lines().is_empty());
        assert!(p._stop.is_none(), "no thread for a quiet progress");
    }

    #[test]
    fn the_ticker_prints_without_advances_and_stops_with_the_progress() {
        let sink = Sink::default();
        let mut p = TermProgress::with_parts(
            false,
            false,
            Duration::from_millis(20),
            Box::new(sink.clone()),
            Box::new(Instant::now),
        );
        p.start_ticker();
        p.phase("generate", Some(100), "updates");
        p.advance(3);
        std::thread::sleep(Duration::from_millis(300));
        let lines = sink.lines();
        assert!(lines.len() >= 3, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("generate: 3 of 100 updates (3%)")),
            "{lines:?}"
        );
        drop(p);
        let n = sink.lines().len();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(sink.lines().len(), n, "no line after the progress is gone");
    }
}
