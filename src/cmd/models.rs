//! `mesh models [--fits] [--json]`, `mesh models show NAME`, `mesh models rm NAME` and
//! `mesh download SPEC`: the command side of the catalog (tables, JSON, progress on the terminal).

use anyhow::Context;

use super::args::{DownloadArgs, ModelsAction, ModelsArgs};
use super::progress::{progress, ProgressMode};
use crate::catalog::cache::HubCache;
use crate::catalog::data::CatalogEntry;
use crate::catalog::error::DownloadError;
use crate::catalog::fit::{human_bytes, ModelMemory};
use crate::catalog::listing::{rows, rows_on, ModelRow, Sizing};
use crate::catalog::{bandwidth, installed_paths, memory, names, resolve, speed, ResolveOptions};

/// `mesh models …`.
pub async fn models(args: ModelsArgs) -> anyhow::Result<()> {
    let opts = args.hub.resolve_options();
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
    // The speed estimate only with --fits: it needs the memory bandwidth (measured once).
    let home = crate::util::home::mesh_home();
    let machine = fits_only.then(|| bandwidth::machine(&home));
    let rows: Vec<ModelRow> = rows_on(
        &catalog.models,
        opts,
        available,
        machine.as_ref(),
        Sizing::default(),
    )
    .into_iter()
    .filter(|r| !fits_only || r.fits)
    .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let speed_head = if machine.is_some() { "  TOK/S" } else { "" };
    println!(
        "{:<40} {:>7} {:<7} {:>10} {:>7} {:>9} {:>4}{speed_head}",
        "NAME", "PARAMS", "QUANT", "SIZE", "CTX", "INSTALLED", "FITS"
    );
    for r in &rows {
        let e = &r.entry;
        let speed = r.speed.map_or(String::new(), |s| {
            format!("  {:>5}", format!("~{}", human_speed(s.tokens_per_sec)))
        });
        println!(
            "{:<40} {:>7} {:<7} {:>10} {:>7} {:>9} {:>4}{speed}",
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
    if let Some(m) = machine {
        println!(
            "{}",
            speed_footer(&m, bandwidth::measured_decode(&home, m.decoder().1))
        );
    }
    Ok(())
}

/// The line under `mesh models --fits`: which figure the TOK/S column rests on.
fn speed_footer(m: &speed::Machine, measured: Option<bandwidth::Decoded>) -> String {
    let (bandwidth, device) = m.decoder();
    let (rate, from_decode) = speed::weights_rate(m);
    let source = match device {
        speed::Device::Cpu => "a memory bandwidth",
        speed::Device::Gpu => "an assumed GPU bandwidth",
    };
    let expected = format!(
        "{source} of {:.1} GB/s × {:.2}",
        bandwidth / 1e9,
        device.efficiency()
    );
    let basis = match measured {
        Some(d) if from_decode => format!(
            "the fastest decode `mesh serve` measured here ({} at {} tok/s), faster than {expected}",
            d.model,
            human_speed(d.tokens_per_sec),
        ),
        Some(d) => format!(
            "{expected} (the fastest decode `mesh serve` measured here, {} at {} tok/s, read {:.1} GB/s)",
            d.model,
            human_speed(d.tokens_per_sec),
            d.weights_per_sec / 1e9
        ),
        None => expected,
    };
    format!(
        "TOK/S: expected decode speed here: {:.1} GB/s of weights read a second, from {basis} \
         (`mesh --auto` serves only models at --min-speed or more, default {})",
        rate / 1e9,
        speed::DEFAULT_MIN_TOKENS_PER_SEC
    )
}

/// `95`, `4.2`, `0.31`: tokens per second with two significant digits or so.
pub fn human_speed(tps: f64) -> String {
    if tps >= 10.0 {
        format!("{tps:.0}")
    } else if tps >= 1.0 {
        format!("{tps:.1}")
    } else {
        format!("{tps:.2}")
    }
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
    let mut opts = args.hub.resolve_options();
    opts.verify = args.verify;
    if args.json {
        opts.progress = progress(ProgressMode::Json);
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
    fn speeds_are_human() {
        assert_eq!(human_speed(95.4), "95");
        assert_eq!(human_speed(4.25), "4.2");
        assert_eq!(human_speed(0.314), "0.31");
    }

    #[test]
    fn the_footer_names_the_figure_the_estimate_rests_on() {
        let machine = |measured| speed::Machine {
            memory_bandwidth: 25e9,
            gpu_bandwidth: None,
            measured_decode: measured,
        };
        let decoded = |per_sec: f64| bandwidth::Decoded {
            device: speed::Device::Cpu,
            weights_per_sec: per_sec,
            tokens_per_sec: per_sec / 253e6,
            model: "gemma".into(),
            threads: 2,
            measured_at: 0,
        };
        let plain = speed_footer(&machine(None), None);
        assert!(plain.contains(": 7.5 GB/s of weights read a second, from a memory bandwidth of 25.0 GB/s × 0.30 ("), "{plain}");
        let faster = speed_footer(&machine(Some(14e9)), Some(decoded(14e9)));
        assert!(faster.contains(": 14.0 GB/s of weights read a second, from the fastest decode `mesh serve` measured here (gemma at 55 tok/s), faster than a memory bandwidth of 25.0 GB/s × 0.30 ("), "{faster}");
        let slower = speed_footer(&machine(Some(5e9)), Some(decoded(5e9)));
        assert!(slower.contains(": 7.5 GB/s of weights read a second, from a memory bandwidth of 25.0 GB/s × 0.30 (the fastest decode `mesh serve` measured here, gemma at 20 tok/s, read 5.0 GB/s) ("), "{slower}");
        let gpu = speed::Machine {
            gpu_bandwidth: Some(speed::ASSUMED_GPU_BANDWIDTH),
            ..machine(None)
        };
        assert!(speed_footer(&gpu, None).contains("from an assumed GPU bandwidth of"));
    }
}
