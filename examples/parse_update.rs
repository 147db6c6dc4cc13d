//! Parses WSUS update XML documents and prints what gapsync extracts.
//!
//!     cargo run --example parse_update -- ../shared/reference/wsus-captures/wsus-m0-wsusss/docs/*.xml

use gapsync::model::metadata::{self, Prerequisite};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: parse_update FILE.xml...");
        std::process::exit(2);
    }
    for path in paths {
        let bytes = std::fs::read(&path)?;
        let m = metadata::parse(&bytes).map_err(|e| format!("{path}: {e}"))?;
        println!("{path}");
        println!(
            "  {} revision {} ({}{})",
            m.id,
            m.revision,
            m.kind.as_str(),
            m.category_type
                .map(|c| format!(", {}", c.as_str()))
                .unwrap_or_default()
        );
        println!("  title: {}", m.title("en").unwrap_or("-"));
        println!("  languages: {}", m.localized.len());
        for p in &m.prerequisites {
            match p {
                Prerequisite::Required(id) => println!("  requires {id}"),
                Prerequisite::AtLeastOne { is_category, ids } => {
                    println!(
                        "  at least one of {} id(s){}",
                        ids.len(),
                        if *is_category { " (categories)" } else { "" }
                    )
                }
            }
        }
        println!(
            "  bundles {} update(s), supersedes {}",
            m.bundled.len(),
            m.superseded.len()
        );
        for f in &m.files {
            println!(
                "  file {} ({} bytes) SHA-1 {}",
                f.file_name,
                f.size,
                hex::encode_upper(f.sha1)
            );
        }
    }
    Ok(())
}
