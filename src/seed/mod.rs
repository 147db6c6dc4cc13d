//! Seeding a store without an upstream: update XML files and their
//! content, or a synthetic catalog.

pub mod files;
pub mod generate;
