//! Adaptive chunk reads: every fallback a registry's way with ranges calls for, through the fault
//! proxy, with the right bytes every time and the host's mode remembered for the next read.

use crate::*;
use futures_util::StreamExt;
use hoist_registry::{Chunk, RangeMode};
use hoist_test_support::{Action, LogEntry, Matcher, RangeFault, Rule};

/// A 1 MiB blob behind a proxy.
async fn setup(name: &str) -> Proxied {
    proxied(name, 1 << 20, 70).await
}

/// Five chunks far enough apart to be five ranges.
fn chunks() -> Vec<Chunk> {
    vec![
        Chunk::new(0, 100),
        Chunk::new(100_000, 5000),
        Chunk::new(300_000, 1),
        Chunk::new(600_000, 70_000),
        Chunk::new((1 << 20) - 10, 10),
    ]
}

/// Reads `chunks` and checks every byte against the blob; pieces must come in chunk order.
async fn read_and_check(s: &Proxied, chunks: &[Chunk]) {
    let mut got = vec![Vec::new(); chunks.len()];
    let mut last = 0;
    let mut stream = s.repo.get_blob_at(&s.digest, chunks).await.unwrap();
    while let Some(piece) = stream.next().await {
        let (i, b) = piece.unwrap();
        assert!(i >= last, "chunk {i} came after chunk {last}");
        last = i;
        got[i].extend_from_slice(&b);
    }
    for (c, g) in chunks.iter().zip(&got) {
        let start = c.offset as usize;
        assert_eq!(
            g.as_slice(),
            &s.data[start..start + c.length as usize],
            "chunk at {}",
            c.offset
        );
    }
}

fn blob_gets(s: &Proxied) -> Vec<LogEntry> {
    s.proxy.requests(&Matcher::get("/blobs/"))
}

fn ranges_in(e: &LogEntry) -> usize {
    e.range.as_deref().map_or(0, |r| r.split(',').count())
}

fn mode(s: &Proxied) -> RangeMode {
    s.repo.client().range_mode(&s.proxy.host())
}

#[tokio::test]
async fn the_real_registry_serves_all_chunks_in_one_multi_range_request() {
    let s = setup("m/multi").await;
    read_and_check(&s, &chunks()).await;
    let gets = blob_gets(&s);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(ranges_in(&gets[0]), 5);
    assert_eq!(gets[0].status, Some(206));
    assert_eq!(mode(&s), RangeMode::MultiRange);
}

#[tokio::test]
async fn at_most_n_ranges_go_in_one_request() {
    let s = setup("m/n-ranges").await;
    let options = hoist_registry::ChunkReadOptions {
        max_ranges_per_request: 2,
        ..Default::default()
    };
    let chunks = chunks();
    let mut stream = s
        .repo
        .get_blob_at_adaptive(&s.digest, &chunks, options)
        .await
        .unwrap();
    let mut total = 0;
    while let Some(p) = stream.next().await {
        total += p.unwrap().1.len() as u64;
    }
    assert_eq!(total, chunks.iter().map(|c| c.length).sum::<u64>());
    let per_request: Vec<usize> = blob_gets(&s).iter().map(ranges_in).collect();
    assert_eq!(per_request, vec![2, 2, 1]);
}

#[tokio::test]
async fn a_refused_multi_range_request_becomes_single_ranges_and_the_host_remembers() {
    let s = setup("m/refused").await;
    s.proxy.add_rule(Rule::get(
        "/blobs/",
        Action::Ranges(RangeFault::RefuseMultiRange { status: 416 }),
    ));
    read_and_check(&s, &chunks()).await;
    let gets = blob_gets(&s);
    assert_eq!(gets[0].status, Some(416));
    assert_eq!(gets.len(), 6, "one refused, then five single ranges");
    assert!(gets[1..].iter().all(|e| ranges_in(e) == 1), "{gets:?}");
    assert_eq!(mode(&s), RangeMode::SingleRanges);

    // The next read goes straight to single ranges.
    s.proxy.clear_log();
    read_and_check(&s, &chunks()).await;
    let gets = blob_gets(&s);
    assert_eq!(gets.len(), 5);
    assert!(
        gets.iter()
            .all(|e| ranges_in(e) == 1 && e.status == Some(206))
    );
}

#[tokio::test]
async fn a_single_range_answer_to_many_ranges_becomes_single_ranges() {
    let s = setup("m/first-only").await;
    s.proxy.add_rule(Rule::get(
        "/blobs/",
        Action::Ranges(RangeFault::FirstRangeOnly),
    ));
    read_and_check(&s, &chunks()).await;
    let gets = blob_gets(&s);
    assert_eq!(ranges_in(&gets[0]), 5);
    assert!(gets[1..].iter().all(|e| ranges_in(e) == 1), "{gets:?}");
    assert_eq!(mode(&s), RangeMode::SingleRanges);
}

#[tokio::test]
async fn ignored_multi_ranges_are_sliced_from_the_whole_body_without_another_request() {
    let s = setup("m/ignored-multi").await;
    s.proxy.add_rule(Rule::get(
        "/blobs/",
        Action::Ranges(RangeFault::IgnoreMultiRange),
    ));
    read_and_check(&s, &chunks()).await;
    let gets = blob_gets(&s);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].status, Some(200));
    assert_eq!(mode(&s), RangeMode::SingleRanges);
    s.proxy.clear_log();
    read_and_check(&s, &chunks()).await;
    assert!(blob_gets(&s).iter().all(|e| ranges_in(e) == 1));
}

#[tokio::test]
async fn a_host_that_ignores_every_range_gets_full_gets_from_then_on() {
    let s = setup("m/ignored-all").await;
    s.proxy.add_rule(Rule::get("/blobs/", Action::IgnoreRange));
    read_and_check(&s, &chunks()).await;
    assert_eq!(mode(&s), RangeMode::SingleRanges);
    read_and_check(&s, &chunks()).await;
    assert_eq!(mode(&s), RangeMode::FullBody);
    s.proxy.clear_log();
    read_and_check(&s, &chunks()).await;
    let gets = blob_gets(&s);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range, None, "no range is asked for any more");
}

#[tokio::test]
async fn refused_single_ranges_become_fewer_larger_ranges_then_a_full_get() {
    let s = setup("m/refused-all").await;
    s.proxy.add_rule(Rule::get(
        "/blobs/",
        Action::Ranges(RangeFault::RefuseAnyRange { status: 400 }),
    ));
    read_and_check(&s, &chunks()).await;
    let gets = blob_gets(&s);
    assert_eq!(ranges_in(&gets[0]), 5, "{gets:?}");
    let last = gets.last().unwrap();
    assert_eq!((last.range.as_deref(), last.status), (None, Some(200)));
    let singles = &gets[1..gets.len() - 1];
    assert!(singles.iter().all(|e| ranges_in(e) == 1), "{gets:?}");
    let width = |e: &LogEntry| {
        let r = e.range.as_deref().unwrap().trim_start_matches("bytes=");
        let (a, b) = r.split_once('-').unwrap();
        b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1
    };
    let widest = singles.iter().map(width).max().unwrap();
    assert!(
        widest > 70_000,
        "fewer, larger ranges were tried before the full GET: {gets:?}"
    );
    assert_eq!(mode(&s), RangeMode::FullBody);
}

#[tokio::test]
async fn a_wrong_range_in_single_range_mode_is_an_error_never_data() {
    let s = setup("m/wrong").await;
    s.proxy.add_rule(Rule::get(
        "/blobs/",
        Action::Ranges(RangeFault::RefuseMultiRange { status: 501 }),
    ));
    read_and_check(&s, &chunks()).await;
    assert_eq!(mode(&s), RangeMode::SingleRanges);
    s.proxy.clear_rules();
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::WrongContentRange));
    let chunks = chunks();
    let mut failed = false;
    match s.repo.get_blob_at(&s.digest, &chunks).await {
        Err(_) => failed = true,
        Ok(mut stream) => {
            while let Some(p) = stream.next().await {
                match p {
                    Ok((i, b)) => {
                        let c = chunks[i];
                        let start = c.offset as usize;
                        let want = &s.data[start..start + c.length as usize];
                        assert!(
                            want.windows(b.len()).any(|w| w == &b[..]),
                            "bytes handed out must be the chunk's"
                        );
                    }
                    Err(_) => failed = true,
                }
            }
        }
    }
    assert!(failed, "a shifted Content-Range must fail the read");
}
