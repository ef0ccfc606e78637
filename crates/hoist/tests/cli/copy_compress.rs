//! `hoist copy --compress`: layers recompressed on the way, the new digest said in the output.

use std::process::Command;

use hoist_test_support::Registry;

use crate::{hoist, seed, text};

fn raw_manifest(name: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn copy_compress_zstd_rewrites_the_layers_and_says_the_digest_changed() {
    let registry = Registry::start().await.unwrap();
    let source_digest = seed(&registry, "cli/src", "v1").await;
    let home = tempfile::tempdir().unwrap();
    let host = registry.host();
    let dst = format!("docker://{host}/cli/zstd:v1");
    let out = hoist(
        home.path(),
        &[
            "copy",
            "--compress",
            "zstd",
            "--compress-level",
            "9",
            &format!("docker://{host}/cli/src:v1"),
            &dst,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Recompressed 1 layers as zstd"), "{stdout}");
    assert!(stdout.contains(&source_digest), "{stdout}");
    let m = raw_manifest(&dst);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let src = raw_manifest(&format!("docker://{host}/cli/src:v1"));
    assert_eq!(m["config"], src["config"], "the config is unchanged");
}

#[test]
fn copy_help_documents_compress_and_bad_formats_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let help = hoist(home.path(), &["copy", "--help"], None);
    let help = text(&help.stdout);
    assert!(help.contains("--compress <FORMAT>"), "{help}");
    assert!(help.contains("zstd:chunked"), "{help}");
    assert!(help.contains("--compress-level <LEVEL>"), "{help}");
    let bad = hoist(
        home.path(),
        &[
            "copy",
            "--compress",
            "lz4",
            "oci:/nonexistent:x",
            "oci:/nonexistent:y",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("unknown compression"));
}
