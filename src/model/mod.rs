//! The domain model: sync anchors, update metadata, replicated state,
//! sizes and durations.

pub mod anchor;
pub mod metadata;
pub mod report;
pub mod state;
pub mod units;
