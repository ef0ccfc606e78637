//! `hoist pull` and `hoist push`: between a registry and the local store, with progress.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

use crate::cli::{PullArgs, PushArgs};
use crate::commands::Context;
use crate::output::json_line;
use crate::progress::{Mode, Renderer};
use hoist_distribution::platform::Platform;
use hoist_distribution::{ForeignUrls, PullConfig, PushConfig, PushOutcome};

fn renderer(ctx: &Context) -> Renderer {
    let mode = Mode::choose(ctx.json, ctx.quiet, std::io::stderr().is_terminal());
    Renderer::start(mode, Box::new(std::io::stdout()))
}

pub async fn pull(ctx: &Context, args: PullArgs) -> anyhow::Result<()> {
    let reference = hoist_distribution::parse_reference(&args.reference)?;
    let store = ctx.store()?;
    let before = {
        let store = store.clone();
        let name = reference.to_string();
        tokio::task::spawn_blocking(move || store.resolve(&name))
            .await
            .context("store task failed")??
            .map(|d| d.digest().clone())
    };
    let client = ctx.client()?;
    let render = renderer(ctx);
    let mut config = PullConfig::new(client, store)?
        .with_registries(ctx.config.mirrors())
        .with_unpack(!args.no_unpack)
        .with_max_layer_bytes(ctx.config.transfers.max_layer_bytes)
        .with_fetch_window(
            ctx.config
                .transfers
                .fetch_window_mib
                .saturating_mul(1 << 20),
        )
        .with_progress(render.output());
    config.partial = !args.no_partial && ctx.config.transfers.partial_pulls;
    config = config.with_foreign_urls(ForeignUrls::from_hosts(
        ctx.config
            .transfers
            .allow_foreign_urls
            .iter()
            .chain(&args.allow_foreign_urls),
    ));
    config
        .download_manager
        .set_concurrency(ctx.config.transfers.concurrent_downloads);
    let mut policy = hoist_distribution::retry_policy();
    policy = policy.with_max_attempts(ctx.config.transfers.max_attempts);
    config = config.with_retry_policy(policy);
    if let Some(p) = &args.platform {
        config = config.with_platform(Platform::parse(p)?);
    }
    let results = if args.all_tags {
        hoist_distribution::pull_all_tags(&config, &reference).await
    } else {
        hoist_distribution::pull(&config, &reference)
            .await
            .map(|r| vec![r])
    };
    drop(config);
    render.finish().await;
    let results = results.with_context(|| format!("pull {reference} failed"))?;
    for r in &results {
        if ctx.json {
            json_line(&json!({
                "event": "result",
                "reference": r.reference,
                "digest": r.digest.to_string(),
                "manifest": r.manifest.to_string(),
                "config": r.config.to_string(),
                "layers": r.layers.len(),
                "bytesFetched": r.bytes_fetched,
                "partialLayers": r.partial_layers.len(),
                "partialFallbacks": r.partial_fallbacks,
                "endpoint": r.endpoint,
                "mirror": r.mirror,
            }))?;
        } else if !ctx.quiet {
            println!("Digest: {}", r.digest);
            if before.as_ref() == Some(&r.digest) && results.len() == 1 {
                println!("Status: Image is up to date for {}", r.reference);
            } else {
                println!("Status: Downloaded newer image for {}", r.reference);
            }
        } else {
            println!("{}", r.reference);
        }
    }
    Ok(())
}

pub async fn push(ctx: &Context, args: PushArgs) -> anyhow::Result<()> {
    let reference = hoist_distribution::parse_reference(&args.reference)?;
    let store = ctx.store()?;
    let client = ctx.client()?;
    let render = renderer(ctx);
    let mut config = PushConfig::new(client, store).with_progress(render.output());
    config
        .upload_manager
        .set_concurrency(ctx.config.transfers.concurrent_uploads);
    config = config.with_retry_policy(
        hoist_distribution::retry_policy().with_max_attempts(ctx.config.transfers.max_attempts),
    );
    if let Some(p) = &args.platform {
        config = config.with_platform(Platform::parse(p)?);
    }
    config = config.with_push_foreign_layers(args.push_foreign_layers);
    let config = Arc::new(config);
    let result = hoist_distribution::push(&config, &reference).await;
    drop(config);
    render.finish().await;
    let r = result.with_context(|| format!("push {reference} failed"))?;
    let uploaded = r
        .layers
        .iter()
        .filter(|l| matches!(l.outcome, PushOutcome::Uploaded))
        .count();
    if ctx.json {
        json_line(&json!({
            "event": "result",
            "reference": r.reference,
            "digest": r.digest.to_string(),
            "layers": r.layers.len(),
            "uploaded": uploaded,
        }))?;
    } else if !ctx.quiet {
        println!(
            "{}: digest: {}",
            reference.tag().unwrap_or("latest"),
            r.digest
        );
    }
    Ok(())
}
