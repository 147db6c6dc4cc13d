//! gapsync: a WSUS-family update server whose centre is the air gap.
//!
//! The library holds everything; the `gapsync` binary is a thin command line
//! over it. See docs/architecture.md for the modules, the data flow and the
//! invariants.

pub mod airgap;
pub mod console;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod model;
pub mod progress;
pub mod protocols;
pub mod seed;
pub mod soap;
pub mod store;
pub mod trust;

pub use error::{Error, Result};
