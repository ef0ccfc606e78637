use crate::*;
use futures_util::StreamExt;
use hoist_registry::Chunk;

async fn collect_chunks(
    repo: &Repository,
    d: &Digest,
    chunks: &[Chunk],
) -> Result<Vec<Vec<u8>>, hoist_registry::Error> {
    let mut out = vec![Vec::new(); chunks.len()];
    let mut s = repo.get_blob_at(d, chunks).await?;
    while let Some(piece) = s.next().await {
        let (i, b) = piece?;
        out[i].extend_from_slice(&b);
    }
    Ok(out)
}

#[tokio::test]
async fn discontiguous_chunks_come_back_exactly_from_a_multi_range_request() {
    let (_r, repo) = plain("t/ranges").await;
    let data = blob(1 << 20, 40);
    let d = push(&repo, &data).await;
    let chunks = [
        Chunk::new(0, 10),
        Chunk::new(1000, 5000),
        Chunk::new(500_000, 1),
        Chunk::new((1 << 20) - 100, 100),
    ];
    let got = collect_chunks(&repo, &d, &chunks).await.unwrap();
    for (c, g) in chunks.iter().zip(&got) {
        let start = c.offset as usize;
        assert_eq!(g.as_slice(), &data[start..start + c.length as usize]);
    }
}

#[tokio::test]
async fn a_single_chunk_uses_a_single_range() {
    let (_r, repo) = plain("t/range1").await;
    let data = blob(100_000, 41);
    let d = push(&repo, &data).await;
    let got = collect_chunks(&repo, &d, &[Chunk::new(4242, 777)])
        .await
        .unwrap();
    assert_eq!(got[0].as_slice(), &data[4242..4242 + 777]);
}

#[tokio::test]
async fn overlapping_or_unsorted_chunks_are_refused_before_any_request() {
    let (_r, repo) = plain("t/range-bad").await;
    let d = digest_of(b"x");
    let err = repo
        .get_blob_at(&d, &[Chunk::new(10, 10), Chunk::new(5, 10)])
        .await
        .unwrap_err();
    assert!(matches!(err, hoist_registry::Error::Range { .. }), "{err}");
}
