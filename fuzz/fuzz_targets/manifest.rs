//! Manifest, index and config parsing on arbitrary bytes, served as each media type hoist knows
//! (and a few it does not): never panics, and an index's entries can be ranked for any platform.
//!
//! Input layout: byte 0 picks the media type, the rest is the document.
#![no_main]

use hoist_distribution::Platform;
use hoist_distribution::manifest::{Parsed, default_config_types, parse, parse_config};
use hoist_registry::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_INDEX, OCI_MANIFEST,
};
use hoist_store::Digest;
use libfuzzer_sys::fuzz_target;

const MEDIA_TYPES: [&str; 9] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
    "application/json",
    "",
];

const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fuzz_target!(|data: &[u8]| {
    let [selector, document @ ..] = data else {
        return;
    };
    let digest: Digest = DIGEST.parse().expect("a valid digest");
    let media_type = MEDIA_TYPES[usize::from(*selector) % MEDIA_TYPES.len()];
    match parse(
        media_type,
        &digest,
        document,
        "fuzz/image:latest",
        &default_config_types(),
    ) {
        Ok(Parsed::Index(index)) => {
            for wanted in [
                "linux/amd64",
                "linux/arm64/v8",
                "linux/arm",
                "windows/amd64",
            ] {
                let wanted = Platform::parse(wanted).expect("a valid platform");
                let _ = index.candidates(&wanted);
            }
            let _ = index.platforms();
            for entry in &index.manifests {
                let _ = entry.kind();
            }
        }
        Ok(Parsed::Image(_)) | Err(_) => {}
    }
    if let Ok(config) = parse_config(&digest, document)
        && let Some(platform) = config.platform
    {
        let _ = Platform::host().matches(&platform);
    }
});
