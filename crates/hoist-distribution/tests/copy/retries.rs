//! Transient failures while a blob moves are retried from the start, with progress saying so.

use hoist_distribution::copy::{CopyOptions, PlatformSelection};
use hoist_test_support::{Action, FaultProxy, Matcher, Registry, Rule};
use hoist_xfer::{ChannelProgress, Progress};

use crate::support::*;

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Progress>) -> Vec<Progress> {
    let mut out = Vec::new();
    while let Ok(p) = rx.try_recv() {
        out.push(p);
    }
    out
}

/// The last report about `blob` (progress ids are the first 12 hex digits).
fn last_report<'a>(reports: &'a [Progress], blob: &str) -> &'a Progress {
    let id = &blob["sha256:".len().."sha256:".len() + 12];
    reports
        .iter()
        .rfind(|p| p.id == id)
        .unwrap_or_else(|| panic!("no progress for {id}: {reports:?}"))
}

#[tokio::test]
async fn a_reset_and_a_corrupt_body_are_retried_and_the_copy_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = simple_layout(&dir.path().join("src"));
    let registry = Registry::start().await.unwrap();
    let ctx = registry_context();
    copy_names(
        &format!("oci:{}:v1", layout.root.display()),
        &format!("docker://{}/hoist/flaky:1", registry.host()),
        &ctx,
        &options(PlatformSelection::Current),
    )
    .await
    .unwrap();

    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    proxy.add_rule(Rule::get("/blobs/", Action::Reset { after_bytes: 100 }).once());
    proxy.add_rule(Rule::get("/blobs/", Action::FlipByte { offset: 50 }).nth(2));
    let (progress, mut rx) = ChannelProgress::shared();
    let opts = CopyOptions {
        progress,
        ..options(PlatformSelection::Current)
    };
    let dst = dir.path().join("dst");
    let report = copy_names(
        &format!("docker://{}/hoist/flaky:1", proxy.host()),
        &format!("oci:{}:v1", dst.display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.manifest_digest.to_string(), image.digest);
    assert_eq!(report.blobs_copied, 3);
    for blob in image.blobs() {
        assert!(layout_blobs(&dst).contains(&blob), "{blob}");
    }
    let blob_gets = proxy.count(&Matcher::get("/blobs/"));
    assert_eq!(blob_gets, 5, "three blobs, two of them fetched twice");

    let reports = drain(&mut rx);
    let retries: Vec<&Progress> = reports
        .iter()
        .filter(|p| p.action.starts_with("Retrying in"))
        .collect();
    assert_eq!(
        retries
            .iter()
            .map(|p| p.id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2,
        "two blobs were retried: {reports:?}"
    );
    assert!(
        retries.iter().any(|p| p
            .message
            .as_deref()
            .is_some_and(|m| m.contains("digest mismatch"))),
        "the corrupt body is named as the cause: {retries:?}"
    );
    for blob in image.blobs() {
        let last = last_report(&reports, &blob);
        assert_eq!(last.action, "Copied", "{last:?}");
        assert_eq!(Some(last.current), last.total, "{last:?}");
    }

    // The second time, every blob is already there and progress says so.
    let again = copy_names(
        &format!("docker://{}/hoist/flaky:1", proxy.host()),
        &format!("oci:{}:v1", dst.display()),
        &ctx,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(again.blobs_reused, 3);
    let reports = drain(&mut rx);
    for blob in image.blobs() {
        assert_eq!(last_report(&reports, &blob).action, "Already exists");
    }
}
