use crate::*;

#[tokio::test]
async fn a_pushed_blob_reads_back_identically_and_head_reports_its_size() {
    let (_r, repo) = plain("t/blobs").await;
    let data = blob(300_000, 1);
    let d = push(&repo, &data).await;
    assert_eq!(repo.head_blob(&d).await.unwrap(), Some(300_000));
    let resp = repo.get_blob(&d).await.unwrap();
    assert_eq!(resp.start, 0);
    assert_eq!(read_all(resp.body).await, data.to_vec());
}

#[tokio::test]
async fn head_of_a_missing_blob_is_none_and_get_is_not_found() {
    let (_r, repo) = plain("t/missing").await;
    let d = digest_of(b"never pushed");
    assert_eq!(repo.head_blob(&d).await.unwrap(), None);
    let err = repo.get_blob(&d).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn small_blobs_are_verified_against_their_digest() {
    let (_r, repo) = plain("t/small").await;
    let data = blob(1000, 2);
    let d = push(&repo, &data).await;
    assert_eq!(repo.get_blob_bytes(&d, 1 << 20).await.unwrap(), data);
    let err = repo.get_blob_bytes(&d, 100).await.unwrap_err();
    assert!(
        matches!(err, hoist_registry::Error::TooLarge { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_download_resumes_from_an_offset_with_a_closed_range() {
    let (_r, repo) = plain("t/resume").await;
    let data = blob(200_000, 3);
    let d = push(&repo, &data).await;
    let resp = repo.get_blob_from(&d, 123_456, 200_000).await.unwrap();
    assert_eq!(resp.start, 123_456);
    assert_eq!(read_all(resp.body).await, data[123_456..].to_vec());
}

#[tokio::test]
async fn a_resume_offset_past_the_end_is_refused() {
    let (_r, repo) = plain("t/resume-end").await;
    let data = blob(10, 4);
    let d = push(&repo, &data).await;
    let err = repo.get_blob_from(&d, 10, 10).await.unwrap_err();
    assert!(matches!(err, hoist_registry::Error::Range { .. }), "{err}");
}
