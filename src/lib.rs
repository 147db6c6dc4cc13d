//! gapsync: a WSUS-family update server whose centre is the air gap.
//!
//! The library holds everything; the `gapsync` binary is a thin command line
//! over it. See docs/architecture.md for the modules, the data flow and the
//! invariants.

pub mod bundle;
pub mod catalog;
pub mod check;
pub mod content;
pub mod deployments;
pub mod error;
pub mod export;
pub mod failpoint;
pub mod generate;
pub mod groups;
pub mod http;
pub mod import;
pub mod journal;
pub mod metadata;
pub mod progress;
pub mod store;
pub mod sync;
pub mod trust;
pub mod units;
pub mod verify;
pub mod wsusss;

pub use error::{Error, Result};
