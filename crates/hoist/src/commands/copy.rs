//! `hoist copy SRC DST`: an image between any two transports.

use std::io::IsTerminal;

use anyhow::Context as _;
use serde_json::json;

use crate::cli::CopyArgs;
use crate::commands::Context;
use crate::output::json_line;
use crate::progress::{Mode, Renderer};
use hoist_distribution::copy::{CopyOptions, PlatformSelection, copy};
use hoist_distribution::recompress::Recompression;
use hoist_distribution::transport::{
    ImageName, Platform, TransportContext, open_destination, open_source,
};

pub async fn run(ctx: &Context, args: CopyArgs) -> anyhow::Result<()> {
    let source = ImageName::parse(&args.source)?;
    let destination = ImageName::parse(&args.destination)?;
    let platforms = match (&args.platform, args.all_platforms) {
        (_, true) => PlatformSelection::All,
        (Some(p), false) => PlatformSelection::One(Platform::parse(p)?),
        (None, false) => PlatformSelection::Current,
    };
    let needs_store = [&source, &destination]
        .iter()
        .any(|n| matches!(n, ImageName::Store(_)));
    let store = if needs_store {
        Some(ctx.store()?)
    } else {
        None
    };
    let mut transports = TransportContext::default().with_registry(ctx.client()?);
    transports.store = store.clone();
    let src = open_source(&source, &transports)
        .await
        .with_context(|| format!("cannot open {}", args.source))?;
    let dst = open_destination(&destination, &transports)
        .await
        .with_context(|| format!("cannot open {}", args.destination))?;

    let recompress = args.compress.map(|format| Recompression {
        level: args.compress_level,
        ..Recompression::new(format)
    });
    if let Some(r) = &recompress {
        r.check()
            .map_err(|reason| anyhow::anyhow!("--compress {}: {reason}", r.format))?;
    }

    let mode = Mode::choose(ctx.json, ctx.quiet, std::io::stderr().is_terminal());
    let renderer = Renderer::start(mode, Box::new(std::io::stdout()));
    let options = CopyOptions {
        platforms,
        concurrency: args.concurrency,
        progress: renderer.output(),
        cache: store,
        recompress,
        ..CopyOptions::default()
    };
    let result = copy(src, dst, &options).await;
    drop(options);
    renderer.finish().await;
    let report =
        result.with_context(|| format!("copy {} -> {} failed", args.source, args.destination))?;
    if ctx.json {
        json_line(&json!({
            "event": "result",
            "digest": report.manifest_digest.to_string(),
            "mediaType": report.media_type,
            "images": report.images.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "blobsCopied": report.blobs_copied,
            "blobsReused": report.blobs_reused,
            "bytesCopied": report.bytes_copied,
            "layersRecompressed": report.layers_recompressed,
            "sourceDigest": report.source_manifest_digest.to_string(),
        }))?;
    } else if !ctx.quiet {
        println!("Digest: {}", report.manifest_digest);
        if report.manifest_digest != report.source_manifest_digest {
            println!(
                "Recompressed {} layers as {}: the manifest was rewritten (source digest {})",
                report.layers_recompressed,
                args.compress.map_or("requested", |c| c.name()),
                report.source_manifest_digest
            );
        }
        println!(
            "Copied {} blobs ({} bytes), reused {}",
            report.blobs_copied, report.bytes_copied, report.blobs_reused
        );
    }
    Ok(())
}
