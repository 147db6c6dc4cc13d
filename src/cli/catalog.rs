//! `catalog add | generate` and `updates list | show`: what the catalog
//! holds and how it is seeded.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};

use gapsync::model::metadata::{Prerequisite, UpdateKind};
use gapsync::model::units::{count, human_bytes};
use gapsync::seed::files as seed_files;
use gapsync::seed::generate::{self, GenerateOptions};
use gapsync::store::{Store, UpdateDetail, UpdateFilter};

use super::{Ctx, args, print_json, warn_unknown_categories};

#[derive(Subcommand)]
pub enum CatalogCmd {
    /// Add update XML files or folders of them.
    Add {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Folder of content files, matched to the metadata by digest name.
        #[arg(long)]
        content: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Generate a synthetic, realistic catalog.
    Generate {
        /// Software and driver updates to generate (0-100000000).
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=generate::MAX_UPDATES))]
        updates: u64,
        /// Total content size, e.g. 512M, 2G (0 for metadata only; at most
        /// 16T).
        #[arg(long, default_value = "0", value_parser = args::content_bytes)]
        content_bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum UpdatesCmd {
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Product category id.
        #[arg(long, value_parser = args::guid)]
        product: Option<String>,
        /// Classification category id.
        #[arg(long, value_parser = args::guid)]
        classification: Option<String>,
    },
    Show {
        #[arg(value_parser = args::guid)]
        id: String,
        #[arg(long)]
        json: bool,
        /// Print the current revision's verbatim XML.
        #[arg(long, conflicts_with = "json")]
        xml: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Software,
    Driver,
    Category,
    Detectoid,
}

pub fn catalog(ctx: &Ctx, cmd: CatalogCmd) -> Result<()> {
    let mut store = Store::open_writer(ctx.server()?)?;
    match cmd {
        CatalogCmd::Add {
            paths,
            content,
            json,
        } => {
            let r = seed_files::add_paths(&mut store, &paths, content.as_deref(), &ctx.progress)?;
            if json {
                return print_json(&r);
            }
            println!(
                "{}: {} added, {} already present; {} ({}) added, {} not found",
                count(r.documents, "document"),
                count(r.revisions_added, "revision"),
                r.revisions_already_present,
                count(r.content_files_added, "content file"),
                human_bytes(r.content_bytes_added),
                r.content_missing
            );
        }
        CatalogCmd::Generate {
            updates,
            content_bytes,
            seed,
            json,
        } => {
            let opts = GenerateOptions {
                updates,
                content_bytes,
                seed,
            };
            let r = generate::generate(&mut store, &opts, &ctx.progress)?;
            if json {
                return print_json(&r);
            }
            let revisions = r.revisions_added + r.revisions_already_present;
            println!(
                "generated (seed {seed}): {} of {} ({} added, {} already present): {}, {}, {} ({}), {}; {}, {}",
                count(revisions, "revision"),
                count(
                    r.categories + r.detectoids + r.software + r.drivers,
                    "update"
                ),
                r.revisions_added,
                r.revisions_already_present,
                count(r.categories, "category"),
                count(r.detectoids, "detectoid"),
                count(r.software, "software update"),
                count(r.bundles, "bundle"),
                count(r.drivers, "driver"),
                count(r.content_files, "content file"),
                human_bytes(r.content_bytes)
            );
        }
    }
    Ok(())
}

pub fn updates(ctx: &Ctx, cmd: UpdatesCmd) -> Result<()> {
    let store = Store::open_read_only(ctx.server()?)?;
    match cmd {
        UpdatesCmd::List {
            json,
            kind,
            product,
            classification,
        } => {
            let filter = UpdateFilter {
                kind: kind.map(|k| match k {
                    KindArg::Software => UpdateKind::Software,
                    KindArg::Driver => UpdateKind::Driver,
                    KindArg::Category => UpdateKind::Category,
                    KindArg::Detectoid => UpdateKind::Detectoid,
                }),
                product,
                classification,
            };
            warn_unknown_categories(&store, "--product", filter.product.as_slice())?;
            warn_unknown_categories(&store, "--classification", filter.classification.as_slice())?;
            let list = store.list_updates(&filter)?;
            if json {
                return print_json(&list);
            }
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for u in list {
                writeln!(
                    out,
                    "{} r{:<5} {:<9} {}{}",
                    u.id,
                    u.revision,
                    u.kind,
                    u.title,
                    if u.declined { " [declined]" } else { "" }
                )?;
            }
            out.flush()?;
        }
        UpdatesCmd::Show { id, json, xml } => {
            let d = store.update_detail(&id)?;
            if xml {
                use std::io::Write;
                let bytes = store.revision_xml(d.revision_id)?;
                std::io::stdout().write_all(&bytes)?;
            } else if json {
                print_json(&d)?;
            } else {
                show_update(&d);
            }
        }
    }
    Ok(())
}

fn show_update(d: &UpdateDetail) {
    let m = &d.metadata;
    println!(
        "{}  revision {} (revision id {})",
        d.id, d.revision, d.revision_id
    );
    println!("  title        {}", d.title);
    println!(
        "  kind         {}{}",
        d.kind,
        d.category_type
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default()
    );
    if let Some(kb) = &m.kb_article_id {
        println!("  KB           {kb}");
    }
    println!(
        "  created      {}",
        m.creation_date.as_deref().unwrap_or("-")
    );
    println!(
        "  state        {}{}",
        m.publication_state.as_deref().unwrap_or("-"),
        if d.declined { ", declined" } else { "" }
    );
    println!(
        "  revisions    {}",
        d.revisions
            .iter()
            .map(|r| r.revision.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  languages    {}",
        m.localized
            .iter()
            .map(|l| l.language.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in &m.prerequisites {
        match p {
            Prerequisite::Required(id) => println!("  requires     {id}"),
            Prerequisite::AtLeastOne { is_category, ids } => println!(
                "  {} {}",
                if *is_category {
                    "category    "
                } else {
                    "one of      "
                },
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        }
    }
    for b in &m.bundled {
        println!(
            "  bundles      {} r{}",
            b.id,
            b.revision.map(|r| r.to_string()).unwrap_or("-".into())
        );
    }
    for s in &m.superseded {
        println!("  supersedes   {s}");
    }
    for s in &d.superseded_by {
        println!("  superseded by {s}");
    }
    for f in &d.files {
        println!(
            "  file         {} {} SHA-1 {} {}",
            f.file_name,
            human_bytes(f.size),
            f.sha1,
            f.content_path.as_deref().unwrap_or("(content not present)")
        );
    }
}
