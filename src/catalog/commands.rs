//! `mesh models [--fits] [--json]`, `mesh models show NAME`, `mesh models rm NAME` and
//! `mesh download SPEC`: the command logic behind the CLI (main only dispatches here).

use anyhow::Context;
use serde::Serialize;

use super::cache::HubCache;
use super::data::CatalogEntry;
use super::error::DownloadError;
use super::fit::{human_bytes, plan_context, ModelMemory};
use super::progress::ProgressMode;
use super::{installed_paths, memory, names, resolve, ResolveOptions};
use crate::cli::{DownloadArgs, ModelsAction, ModelsArgs};

/// One row of `mesh models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    #[serde(flatten)]
    pub entry: CatalogEntry,
    /// All files are in the Hugging Face cache.
    pub installed: bool,
    /// Fits in this machine's memory at `ctx` (one sequence).
    pub fits: bool,
    /// Context used for the fit check.
    pub ctx: u32,
    /// Estimated bytes needed at `ctx`.
    pub need_bytes: u64,
}

/// Builds the rows: installed from the cache, fit against `available` bytes. Pure apart from
/// looking at the cache.
pub fn rows(entries: &[CatalogEntry], opts: &ResolveOptions, available: u64) -> Vec<ModelRow> {
    entries
        .iter()
        .map(|e| {
            let need = ModelMemory::from_entry(e);
            let planned = plan_context(&need, None, 1, available);
            let ctx = planned.clone().unwrap_or_else(|_| need.default_ctx());
            ModelRow {
                entry: e.clone(),
                installed: installed_paths(e, &opts.cache_dir).is_some(),
                fits: planned.is_ok(),
                ctx,
                need_bytes: need.need_bytes(ctx, 1),
            }
        })
        .collect()
}

/// `mesh models …`.
pub async fn models(args: ModelsArgs) -> anyhow::Result<()> {
    let opts = ResolveOptions::from_env().with_args(&args.hub);
    match args.action {
        None => list(&opts, args.fits, args.json),
        Some(ModelsAction::Show { name }) => show(&opts, &name, args.json),
        Some(ModelsAction::Rm { name }) => remove(&opts, &name),
    }
}

fn lookup(opts: &ResolveOptions, name: &str) -> anyhow::Result<CatalogEntry> {
    let catalog = opts.load_catalog()?;
    let found = catalog.get(name).cloned();
    found.ok_or_else(|| {
        DownloadError::UnknownModel {
            name: name.to_string(),
            suggestions: names::close_matches(
                name,
                catalog.models.iter().map(|m| m.name.as_str()),
                3,
            ),
        }
        .into()
    })
}

fn list(opts: &ResolveOptions, fits_only: bool, json: bool) -> anyhow::Result<()> {
    let catalog = opts.load_catalog()?;
    let available = memory::available_memory();
    let rows: Vec<ModelRow> = rows(&catalog.models, opts, available)
        .into_iter()
        .filter(|r| !fits_only || r.fits)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>7} {:<7} {:>10} {:>7} {:>9} {:>4}",
        "NAME", "PARAMS", "QUANT", "SIZE", "CTX", "INSTALLED", "FITS"
    );
    for r in &rows {
        let e = &r.entry;
        println!(
            "{:<40} {:>7} {:<7} {:>10} {:>7} {:>9} {:>4}",
            e.name,
            human_params(e.params),
            e.quant,
            format!(
                "{}{}",
                if e.approx_size { "~" } else { "" },
                human_bytes(e.size)
            ),
            e.context,
            if r.installed { "yes" } else { "-" },
            if r.fits { "yes" } else { "no" },
        );
    }
    println!(
        "\n{} model(s); room for models on this machine: {}",
        rows.len(),
        human_bytes(available)
    );
    Ok(())
}

fn show(opts: &ResolveOptions, name: &str, json: bool) -> anyhow::Result<()> {
    let entry = lookup(opts, name)?;
    let available = memory::available_memory();
    let row = rows(std::slice::from_ref(&entry), opts, available).remove(0);
    let paths = installed_paths(&entry, &opts.cache_dir);
    if json {
        let mut v = serde_json::to_value(&row)?;
        v["paths"] = serde_json::to_value(paths.as_ref().map(|p| {
            p.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        }))?;
        v["available_bytes"] = available.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let need = ModelMemory::from_entry(&entry);
    println!("name:       {}", entry.name);
    println!("repo:       {} (revision {})", entry.repo, entry.revision);
    for (i, f) in entry.files.iter().enumerate() {
        println!("file {:<5} {f}", format!("{}:", i + 1));
    }
    println!(
        "size:       {}{} ({} bytes)",
        if entry.approx_size { "~" } else { "" },
        human_bytes(entry.size),
        entry.size
    );
    if let Some(sha) = &entry.sha256 {
        println!("sha256:     {sha}");
    }
    println!(
        "params:     {} ({})",
        human_params(entry.params),
        entry.params
    );
    println!("quant:      {}", entry.quant);
    println!("family:     {}", entry.family);
    println!("context:    {}", entry.context);
    println!("license:    {}", entry.license);
    if let Some(d) = &entry.draft {
        println!("draft:      {d}");
    }
    if let Some(n) = &entry.notes {
        println!("notes:      {n}");
    }
    println!(
        "memory:     {} at --ctx {} (weights {} + KV {} per token); room here {} → {}",
        human_bytes(row.need_bytes),
        row.ctx,
        human_bytes(need.weights_bytes),
        human_bytes(need.kv_bytes_per_token),
        human_bytes(available),
        if row.fits { "fits" } else { "does not fit" }
    );
    match paths {
        Some(paths) => println!("installed:  {}", paths[0].display()),
        None => println!("installed:  no (mesh download {})", entry.name),
    }
    Ok(())
}

fn remove(opts: &ResolveOptions, name: &str) -> anyhow::Result<()> {
    let entry = lookup(opts, name)?;
    let cache = HubCache::new(opts.cache_dir.clone());
    let mut freed = 0;
    for file in &entry.files {
        freed += cache
            .remove_file(&entry.repo, file)
            .with_context(|| format!("removing {file} from {}", cache.root().display()))?;
    }
    if freed == 0 {
        println!(
            "{}: nothing in the cache at {}",
            entry.name,
            cache.root().display()
        );
    } else {
        println!("{}: removed, {} freed", entry.name, human_bytes(freed));
    }
    Ok(())
}

/// `mesh download SPEC`.
pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let mut opts = ResolveOptions::from_env().with_args(&args.hub);
    opts.verify = args.verify;
    if args.json {
        opts.progress = ProgressMode::Json;
    }
    let resolved = resolve(&args.model, &opts).await?;
    if !args.json {
        println!("{}", resolved.path.display());
    }
    Ok(())
}

/// `135M`, `8.2B`.
pub fn human_params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{}M", n / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_human() {
        assert_eq!(human_params(135_000_000), "135M");
        assert_eq!(human_params(8_190_000_000), "8.2B");
    }

    #[test]
    fn rows_mark_fit_and_installed() {
        let catalog = crate::catalog::Catalog::embedded().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ResolveOptions {
            cache_dir: dir.path().to_path_buf(),
            ..ResolveOptions::from_env()
        };
        let rows = rows(&catalog.models, &opts, 4 * 1024 * 1024 * 1024);
        let smol = rows
            .iter()
            .find(|r| r.entry.name.starts_with("SmolLM2"))
            .unwrap();
        assert!(smol.fits && !smol.installed);
        let big = rows
            .iter()
            .find(|r| r.entry.name.starts_with("MiniMax"))
            .unwrap();
        assert!(!big.fits);
    }
}
