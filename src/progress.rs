//! Progress reporting without a terminal dependency: the library reports
//! through this trait; the binary draws bars (on a TTY) or plain lines.

/// Receives progress of a long operation. All methods have no-op defaults.
pub trait Progress: Sync {
    /// A new phase starts; `total` is in `unit`s ("bytes", "files",
    /// "updates") when known.
    fn phase(&self, _name: &str, _total: Option<u64>, _unit: &'static str) {}
    /// `n` more units of the current phase are done.
    fn advance(&self, _n: u64) {}
    /// The current phase is finished.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
