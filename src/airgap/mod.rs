//! The transfer bundle across the air gap: its format, export, verify
//! (with the chain rules) and import; disaster-recovery snapshots (`dr`).

pub mod dr;
pub mod export;
pub mod files;
pub mod format;
pub mod import;
pub mod report;
pub mod verify;
