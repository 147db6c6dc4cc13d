//! Seeding a store from files: update XML documents (files or folders of
//! them) and, optionally, a folder of content files matched to the metadata
//! by digest name (`<SHA1 HEX>.<ext>`, flat or in WSUS `XX/` folders) or by
//! the metadata's original file name, and verified while copied.
//!
//! All or nothing: every document is parsed and every content file verified
//! inside one batch; any error rolls the whole add back.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::Serialize;
use walkdir::WalkDir;

use crate::error::{Error, IoContext, Result};
use crate::model::metadata::{self, MAX_DOCUMENT_BYTES};
use crate::progress::Progress;
use crate::store::content::{Expected, hex_upper, sanitized_extension};
use crate::store::{Added, Store};

#[derive(Debug, Clone, Default, Serialize)]
pub struct AddReport {
    pub documents: u64,
    pub revisions_added: u64,
    pub revisions_already_present: u64,
    pub content_files_added: u64,
    pub content_bytes_added: u64,
    /// Files the metadata references that were neither stored nor found.
    pub content_missing: u64,
}

/// Every `*.xml` file named or found (recursively) under the paths, sorted
/// within each folder so the order is reproducible.
pub fn collect_xml(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).at(p)?;
        if meta.is_file() {
            out.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = Vec::new();
        for entry in WalkDir::new(p).follow_links(false) {
            let entry = entry.map_err(|e| Error::io(p, std::io::Error::other(e.to_string())))?;
            let is_xml = entry
                .path()
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
            if entry.file_type().is_file() && is_xml {
                found.push(entry.into_path());
            }
        }
        if found.is_empty() {
            return Err(Error::invalid(
                p.display().to_string(),
                "no update XML (*.xml) files in this folder",
            ));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Reads one document, refusing oversized files before reading them.
fn read_document(path: &Path) -> Result<Vec<u8>> {
    let len = fs::metadata(path).at(path)?.len();
    if len > MAX_DOCUMENT_BYTES as u64 {
        return Err(Error::Metadata {
            name: path.display().to_string(),
            error: metadata::MetadataError::TooLarge,
        });
    }
    fs::read(path).at(path)
}

/// Maps lower-case file names under `dir` to their paths.
fn index_content_dir(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut map = HashMap::new();
    for entry in WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(|e| Error::io(dir, std::io::Error::other(e.to_string())))?;
        if entry.file_type().is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            map.entry(name.to_ascii_lowercase())
                .or_insert_with(|| entry.path().to_path_buf());
        }
    }
    Ok(map)
}

/// `catalog add`.
pub fn add_paths(
    store: &mut Store,
    paths: &[PathBuf],
    content_dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<AddReport> {
    let files = collect_xml(paths)?;
    let index = match content_dir {
        Some(d) => {
            if !d.is_dir() {
                return Err(Error::invalid(
                    d.display().to_string(),
                    "content folder does not exist",
                ));
            }
            Some(index_content_dir(d)?)
        }
        None => None,
    };
    let mut report = AddReport::default();
    let mut batch = store.catalog_batch()?;
    // sha1 -> (expected, original file name), deduplicated.
    let mut wanted: BTreeMap<[u8; 20], (Expected, String)> = BTreeMap::new();
    progress.phase("metadata", Some(files.len() as u64), "documents");
    for path in &files {
        let name = path.display().to_string();
        let xml = read_document(path)?;
        let meta = metadata::parse(&xml).map_err(|error| Error::Metadata {
            name: name.clone(),
            error,
        })?;
        match batch.add_parsed(&name, &xml, &meta)? {
            Added::New(_) => report.revisions_added += 1,
            Added::AlreadyPresent(_) => report.revisions_already_present += 1,
        }
        report.documents += 1;
        for f in &meta.files {
            let exp = Expected {
                sha1: f.sha1,
                sha256: f.sha256,
                size: Some(f.size),
            };
            wanted.entry(f.sha1).or_insert((exp, f.file_name.clone()));
        }
        progress.advance(1);
    }
    progress.finish();
    let mut todo = Vec::new();
    for (sha1, (exp, file_name)) in wanted {
        if batch.has_content(&sha1)? {
            continue;
        }
        let hit = index.as_ref().and_then(|idx| {
            let by_digest = format!("{}{}", hex_upper(&sha1), sanitized_extension(&file_name))
                .to_ascii_lowercase();
            idx.get(&by_digest)
                .or_else(|| idx.get(&hex_upper(&sha1).to_ascii_lowercase()))
                .or_else(|| idx.get(&file_name.to_ascii_lowercase()))
                .cloned()
        });
        match hit {
            Some(p) => todo.push((p, exp, file_name)),
            None => report.content_missing += 1,
        }
    }
    let total: u64 = todo.iter().filter_map(|(_, e, _)| e.size).sum();
    progress.phase("content", Some(total), "bytes");
    for (path, exp, file_name) in todo {
        let mut f = File::open(&path).at(&path)?;
        let staged = batch
            .content()
            .stage(&mut f, &file_name, &exp)
            .map_err(|e| match e {
                Error::DigestMismatch {
                    what,
                    expected,
                    actual,
                    ..
                } => Error::DigestMismatch {
                    name: format!("{} (content for {file_name})", path.display()),
                    what,
                    expected,
                    actual,
                },
                other => other,
            })?;
        progress.advance(staged.file.size);
        batch.add_content(staged);
    }
    progress.finish();
    let r = batch.commit()?;
    report.content_files_added = r.content_files;
    report.content_bytes_added = r.content_bytes;
    Ok(report)
}
