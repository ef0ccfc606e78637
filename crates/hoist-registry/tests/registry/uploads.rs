use crate::*;
use hoist_registry::MountResult;

#[tokio::test]
async fn a_chunked_upload_of_several_patches_completes_with_the_digest() {
    let (_r, repo) = plain("t/chunked").await;
    let data = blob(1_000_000, 20);
    let d = digest_of(&data);
    let mut s = repo.start_upload().await.unwrap();
    assert_eq!(s.offset(), 0);
    for part in data.chunks(300_000) {
        let b = Bytes::copy_from_slice(part);
        let before = s.offset();
        let after = s
            .patch(stream_of(b, 8192), part.len() as u64)
            .await
            .unwrap();
        assert_eq!(after, before + part.len() as u64);
    }
    s.finish(&d, None).await.unwrap();
    assert_eq!(repo.head_blob(&d).await.unwrap(), Some(1_000_000));
    assert_eq!(
        read_all(repo.get_blob(&d).await.unwrap().body).await,
        data.to_vec()
    );
}

#[tokio::test]
async fn an_interrupted_upload_resumes_from_the_offset_the_registry_reports() {
    let (_r, repo) = plain("t/resume-up").await;
    let data = blob(500_000, 21);
    let d = digest_of(&data);
    let mut first = repo.start_upload().await.unwrap();
    first
        .patch(stream_of(data.slice(..200_000), 4096), 200_000)
        .await
        .unwrap();
    let location = first.location().to_owned();
    drop(first);
    // Another handle (as another process would) picks the session up by its location.
    let mut resumed = repo.resume_upload(&location).await.unwrap();
    assert_eq!(resumed.offset(), 200_000);
    resumed
        .patch(stream_of(data.slice(200_000..), 4096), 300_000)
        .await
        .unwrap();
    resumed.finish(&d, None).await.unwrap();
    assert_eq!(
        read_all(repo.get_blob(&d).await.unwrap().body).await,
        data.to_vec()
    );
}

#[tokio::test]
async fn the_final_put_may_carry_the_last_bytes() {
    let (_r, repo) = plain("t/final-put").await;
    let data = blob(70_000, 22);
    let d = digest_of(&data);
    let mut s = repo.start_upload().await.unwrap();
    s.patch(stream_of(data.slice(..50_000), 4096), 50_000)
        .await
        .unwrap();
    s.finish(&d, Some((stream_of(data.slice(50_000..), 4096), 20_000)))
        .await
        .unwrap();
    assert_eq!(repo.head_blob(&d).await.unwrap(), Some(70_000));
}

#[tokio::test]
async fn a_wrong_digest_at_the_end_is_refused_and_nothing_is_stored() {
    let (_r, repo) = plain("t/wrong-digest").await;
    let data = blob(10_000, 23);
    let wrong = digest_of(b"something else");
    let s = repo.start_upload().await.unwrap();
    let err = s
        .finish(&wrong, Some((stream_of(data, 4096), 10_000)))
        .await
        .unwrap_err();
    assert!(
        err.error_codes()
            .any(|c| *c == hoist_registry::error_body::ErrorCode::DigestInvalid),
        "{err}"
    );
    assert_eq!(repo.head_blob(&wrong).await.unwrap(), None);
}

#[tokio::test]
async fn a_blob_mounts_across_repositories_and_an_unknown_one_opens_a_session() {
    let (_r, src) = plain("t/mount-src").await;
    let dst = src.sibling("t/mount-dst");
    let data = blob(5000, 24);
    let d = push(&src, &data).await;
    match dst.mount_blob(&d, "t/mount-src").await.unwrap() {
        MountResult::Mounted => {}
        other => panic!("expected a mount, got {other:?}"),
    }
    assert_eq!(dst.head_blob(&d).await.unwrap(), Some(5000));

    let unknown = digest_of(b"not anywhere");
    match dst.mount_blob(&unknown, "t/mount-src").await.unwrap() {
        MountResult::NotMounted(session) => {
            assert_eq!(session.offset(), 0);
            session.cancel().await.unwrap();
        }
        MountResult::Mounted => panic!("an unknown blob cannot be mounted"),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_cancelled_session_is_gone() {
    let (_r, repo) = plain("t/cancel").await;
    let mut s = repo.start_upload().await.unwrap();
    s.patch(stream_of(blob(1000, 25), 100), 1000).await.unwrap();
    let location = s.location().to_owned();
    s.cancel().await.unwrap();
    let err = repo.resume_upload(&location).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
