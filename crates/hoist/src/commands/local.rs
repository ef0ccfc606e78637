//! Commands on the local store alone: `images`, `tag`, `rm`, `fsck`, `gc`.

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::cli::{FsckArgs, GcArgs, RmArgs, TagArgs};
use crate::commands::{Context, parse_reference};
use crate::exit::NotFound;
use crate::output::json_line;
use hoist_store::{FsckOptions, GcOptions, Store};

/// Runs blocking store work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("store task failed")?
}

pub async fn images(ctx: &Context) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let json = ctx.json;
    blocking(move || {
        let mut rows = Vec::new();
        for named in store.references()? {
            let digest = named.descriptor.digest().clone();
            let image = store.metadata().image(&digest)?;
            rows.push((named.name, digest, image));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if json {
            for (name, digest, image) in &rows {
                json_line(&json!({
                    "name": name,
                    "digest": digest.to_string(),
                    "size": image.as_ref().map(|i| i.size),
                    "created": image.as_ref().and_then(|i| i.created.clone()),
                    "platform": image.as_ref().map(|i| platform(&i.platform)),
                }))?;
            }
            return Ok(());
        }
        println!(
            "{:<50} {:<20} {:<19} {:>10}  CREATED",
            "REPOSITORY", "TAG", "DIGEST", "SIZE"
        );
        for (name, digest, image) in &rows {
            let (repo, tag) = split_name(name);
            let short = digest.digest().get(..12).unwrap_or(digest.digest());
            let size = image
                .as_ref()
                .map(|i| human(i.size))
                .unwrap_or_else(|| "-".into());
            let created = image
                .as_ref()
                .and_then(|i| i.created.clone())
                .unwrap_or_else(|| "-".into());
            println!("{repo:<50} {tag:<20} sha256:{short:<12} {size:>10}  {created}");
        }
        Ok(())
    })
    .await
}

pub async fn unpack(ctx: &Context, args: crate::cli::UnpackArgs) -> anyhow::Result<()> {
    let name = parse_reference(&args.reference)?.to_string();
    let platform = match &args.platform {
        Some(p) => hoist_distribution::Platform::parse(p)?,
        None => hoist_distribution::Platform::host(),
    };
    let store = ctx.store()?;
    let quiet = ctx.quiet;
    blocking(move || {
        hoist_distribution::unpack::unpack(&store, &name, &platform, &args.dir)
            .with_context(|| format!("cannot unpack {name} into {}", args.dir.display()))?;
        if !quiet {
            println!("Unpacked {name} into {}", args.dir.display());
        }
        Ok(())
    })
    .await
}

pub async fn tag(ctx: &Context, args: TagArgs) -> anyhow::Result<()> {
    let source = parse_reference(&args.source)?.to_string();
    let target = parse_reference(&args.target)?;
    if target.digest().is_some() {
        bail!("a new name cannot carry a digest: {}", args.target);
    }
    let target = target.to_string();
    let store = ctx.store()?;
    blocking(move || {
        let desc = store
            .resolve(&source)?
            .ok_or_else(|| NotFound(format!("no image named {source} in the store")))?;
        store.add_reference(&target, &desc)?;
        Ok(())
    })
    .await
}

pub async fn rm(ctx: &Context, args: RmArgs) -> anyhow::Result<()> {
    let names = args
        .references
        .iter()
        .map(|r| parse_reference(r).map(|r| r.to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = ctx.store()?;
    let quiet = ctx.quiet;
    blocking(move || {
        let mut missing = Vec::new();
        for name in &names {
            if store.remove_reference(name)? {
                if !quiet {
                    println!("Untagged: {name}");
                }
            } else {
                missing.push(name.clone());
            }
        }
        if args.gc {
            let report = store.gc(&GcOptions::default())?;
            if !quiet {
                println!("Freed {}", human(report.bytes_freed));
            }
        }
        if !missing.is_empty() {
            return Err(NotFound(format!(
                "no such image in the store: {}",
                missing.join(", ")
            ))
            .into());
        }
        Ok(())
    })
    .await
}

pub async fn fsck(ctx: &Context, args: FsckArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let json = ctx.json;
    blocking(move || {
        let report = store.fsck(&FsckOptions {
            repair: args.repair,
        })?;
        if json {
            json_line(&json!({
                "blobs_checked": report.blobs_checked,
                "bytes_checked": report.bytes_checked,
                "layers_checked": report.layers_checked,
                "references_checked": report.references_checked,
                "problems": report.findings.iter().map(|f| json!({
                    "problem": f.problem.to_string(),
                    "repaired": f.repaired,
                })).collect::<Vec<_>>(),
            }))?;
        } else {
            for f in &report.findings {
                let note = if f.repaired { " (repaired)" } else { "" };
                println!("{}{note}", f.problem);
            }
            println!(
                "checked {} blobs ({}), {} layers, {} names: {} problem(s)",
                report.blobs_checked,
                human(report.bytes_checked),
                report.layers_checked,
                report.references_checked,
                report.findings.len()
            );
        }
        let unrepaired = report.findings.iter().filter(|f| !f.repaired).count();
        if unrepaired > 0 {
            bail!("the store has {unrepaired} problem(s); `hoist fsck --repair` removes what is corrupt");
        }
        Ok(())
    })
    .await
}

pub async fn gc(ctx: &Context, args: GcArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let json = ctx.json;
    blocking(move || {
        let report = store.gc(&GcOptions {
            dry_run: args.dry_run,
            ..GcOptions::default()
        })?;
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        if json {
            json_line(&json!({
                "dry_run": args.dry_run,
                "blobs": report.removed_blobs.len(),
                "ingests": report.removed_ingests.len(),
                "layers": report.removed_layers.len(),
                "bytes": report.bytes_freed,
            }))?;
        } else {
            println!(
                "{verb} {} blobs, {} layers, {} ingests: {}",
                report.removed_blobs.len(),
                report.removed_layers.len(),
                report.removed_ingests.len(),
                human(report.bytes_freed)
            );
        }
        Ok(())
    })
    .await
}

fn platform(p: &hoist_store::ImagePlatform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// `registry/repo:tag` -> (`registry/repo`, `tag`); digest names give `<none>`.
fn split_name(name: &str) -> (&str, &str) {
    if let Some((repo, _)) = name.split_once('@') {
        return (repo, "<none>");
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, "<none>"),
    }
}

/// Bytes in a human unit (decimal, as docker shows sizes).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// Opens the store in `root` (created if needed).
pub fn open_store(root: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(root).with_context(|| format!("cannot open the store in {}", root.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b", "v1")
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a"),
            ("127.0.0.1:5000/a", "<none>")
        );
        assert_eq!(
            split_name("docker.io/library/alpine@sha256:abc"),
            ("docker.io/library/alpine", "<none>")
        );
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500), "1.5kB");
        assert_eq!(human(72_345_678), "72.3MB");
    }
}
