use crate::*;

#[tokio::test]
async fn tags_are_listed_across_several_pages() {
    let (r, repo) = plain("t/tags").await;
    let (bytes, _) = push_image(&repo, "seed", 30).await;
    let mut want = vec!["seed".to_owned()];
    for i in 0..11 {
        let tag = format!("v{i:02}");
        repo.put_manifest(&tag, hoist_registry::manifest::OCI_MANIFEST, bytes.clone())
            .await
            .unwrap();
        want.push(tag);
    }
    want.sort();
    // 12 tags, 5 per page: 3 pages through Link headers.
    let mut got = repo.tags(Some(5)).await.unwrap();
    got.sort();
    assert_eq!(got, want);
    // Without a page size the registry answers in one page.
    let mut all = repo.tags(None).await.unwrap();
    all.sort();
    assert_eq!(all, want);

    let client = repo.client().clone();
    let ep = repo.endpoint().clone();
    repo.sibling("t/other");
    push_image(&repo.sibling("t/other"), "x", 31).await;
    let mut catalog = client.catalog(&ep, Some(1)).await.unwrap();
    catalog.sort();
    assert_eq!(catalog, vec!["t/other".to_owned(), "t/tags".to_owned()]);
    drop(r);
}

#[tokio::test]
async fn tags_of_an_unknown_repository_are_not_found() {
    let (_r, repo) = plain("t/none").await;
    let err = repo.tags(None).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
