//! placeholder until the generator lands
use crate::progress::Progress;
use crate::store::Store;
pub struct GenerateOptions {
    pub updates: u64,
    pub content_bytes: u64,
    pub seed: u64,
}
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenerateReport {
    pub categories: u64,
    pub detectoids: u64,
    pub software: u64,
    pub bundles: u64,
    pub drivers: u64,
    pub revisions_added: u64,
    pub revisions_already_present: u64,
    pub content_files: u64,
    pub content_bytes: u64,
}
pub fn generate(
    _store: &mut Store,
    _opts: &GenerateOptions,
    _progress: &dyn Progress,
) -> crate::Result<GenerateReport> {
    Err(crate::Error::Refused("TEMPORARY".into()))
}
