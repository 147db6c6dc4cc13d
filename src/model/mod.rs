//! The domain model: update metadata, replicated state, sizes and
//! durations.

pub mod metadata;
pub mod state;
pub mod units;
