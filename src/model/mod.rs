//! The domain model: update metadata, anchors, sizes and durations.

pub mod metadata;
pub mod units;
