//! `hoist inspect REF`: an image's manifest, configuration and platforms.

use std::io::Write;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::cli::InspectArgs;
use crate::commands::{Context, parse_reference};
use crate::output::json_line;
use hoist_registry::ManifestKind;

/// Largest image configuration read.
const CONFIG_LIMIT: u64 = 16 << 20;

pub async fn run(ctx: &Context, args: InspectArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.reference)?;
    let client = ctx.client()?;
    let repo = ctx.repository(&client, &reference).await?;
    let manifest = repo
        .get_manifest(reference.manifest_reference())
        .await
        .with_context(|| format!("cannot fetch the manifest of {reference}"))?;

    if args.raw && !args.image_config {
        std::io::stdout().write_all(&manifest.bytes)?;
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&manifest.bytes)
        .with_context(|| format!("the manifest of {reference} is not valid JSON"))?;
    let kind = manifest.kind();

    if kind.is_some_and(ManifestKind::is_index) {
        if args.image_config {
            bail!(
                "{reference} is an index: pick a platform's manifest by digest to see its config"
            );
        }
        let children: Vec<Value> = body["manifests"]
            .as_array()
            .map(|m| m.iter().map(child_summary).collect())
            .unwrap_or_default();
        let out = json!({
            "name": reference.to_string(),
            "digest": manifest.digest.to_string(),
            "mediaType": manifest.media_type,
            "manifests": children,
        });
        return print(ctx, &out, || print_index(&out));
    }
    if kind == Some(ManifestKind::Schema1) {
        bail!(
            "{reference} uses the deprecated Docker schema 1 manifest format, which hoist does not support; \
             push the image again with a current tool"
        );
    }
    let config_digest: oci_spec::image::Digest = body["config"]["digest"]
        .as_str()
        .context("the manifest has no config digest")?
        .parse()
        .context("the manifest's config digest is invalid")?;
    let config_bytes = repo
        .get_blob_bytes(&config_digest, CONFIG_LIMIT)
        .await
        .with_context(|| format!("cannot fetch the image config {config_digest}"))?;
    if args.image_config {
        std::io::stdout().write_all(&config_bytes)?;
        return Ok(());
    }
    let config: Value =
        serde_json::from_slice(&config_bytes).context("the image config is not valid JSON")?;
    let layers: Vec<Value> = body["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| json!({"digest": l["digest"], "size": l["size"], "mediaType": l["mediaType"]}))
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    let out = json!({
        "name": reference.to_string(),
        "digest": manifest.digest.to_string(),
        "mediaType": manifest.media_type,
        "config": config_digest.to_string(),
        "os": config["os"],
        "architecture": config["architecture"],
        "variant": config["variant"],
        "created": config["created"],
        "layers": layers,
        "size": total,
    });
    print(ctx, &out, || print_manifest(&out))
}

fn child_summary(m: &Value) -> Value {
    let p = &m["platform"];
    let mut platform = String::new();
    if let (Some(os), Some(arch)) = (p["os"].as_str(), p["architecture"].as_str()) {
        platform = format!("{os}/{arch}");
        if let Some(v) = p["variant"].as_str() {
            platform.push('/');
            platform.push_str(v);
        }
    }
    json!({
        "digest": m["digest"],
        "mediaType": m["mediaType"],
        "size": m["size"],
        "platform": if platform.is_empty() { Value::Null } else { Value::String(platform) },
    })
}

fn print(ctx: &Context, out: &Value, plain: impl FnOnce()) -> anyhow::Result<()> {
    if ctx.json {
        json_line(out)
    } else {
        plain();
        Ok(())
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_index(out: &Value) {
    println!("Name:      {}", s(&out["name"]));
    println!("Digest:    {}", s(&out["digest"]));
    println!("MediaType: {}", s(&out["mediaType"]));
    println!("Platforms:");
    for m in out["manifests"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {}  {} bytes",
            s(&m["platform"]),
            s(&m["digest"]),
            s(&m["size"])
        );
    }
}

fn print_manifest(out: &Value) {
    let mut platform = format!("{}/{}", s(&out["os"]), s(&out["architecture"]));
    if let Some(v) = out["variant"].as_str() {
        platform.push('/');
        platform.push_str(v);
    }
    println!("Name:      {}", s(&out["name"]));
    println!("Digest:    {}", s(&out["digest"]));
    println!("MediaType: {}", s(&out["mediaType"]));
    println!("Config:    {}", s(&out["config"]));
    println!("Platform:  {platform}");
    println!("Created:   {}", s(&out["created"]));
    println!("Size:      {} bytes (compressed)", s(&out["size"]));
    println!("Layers:");
    for l in out["layers"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:>12} bytes  {}",
            s(&l["digest"]),
            s(&l["size"]),
            s(&l["mediaType"])
        );
    }
}
