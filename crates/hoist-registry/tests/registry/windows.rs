//! Windowed blob downloads ([`Repository::get_blob_windowed`]) against the real registry, through
//! the fault proxy: exact bytes from any offset, one ranged request per window, requests sent
//! only as the reader nears the end of a window, and registries that ignore or garble ranges.

use crate::*;
use futures_util::StreamExt;
use hoist_registry::{RangeMode, WindowConfig};
use hoist_test_support::{Action, Matcher, Rule};

const WINDOW: u64 = 64 << 10;
const LEAD: u64 = 16 << 10;
/// Not a multiple of the window: the last window is shorter.
const LEN: usize = (1 << 20) + 1000;

async fn setup(name: &str) -> Proxied {
    proxied(name, LEN, 91).await
}

fn config() -> WindowConfig {
    WindowConfig::new(WINDOW, LEAD)
}

fn blob_gets(s: &Proxied) -> usize {
    s.proxy.count(&Matcher::get("/blobs/"))
}

/// Reads a windowed download from `offset` to its end; returns its start and the bytes read
/// before the end or the first error, and that error.
async fn read_from(s: &Proxied, offset: u64) -> (u64, Vec<u8>, Option<hoist_registry::Error>) {
    let size = s.data.len() as u64;
    let resp = s
        .repo
        .get_blob_windowed(&s.digest, offset, size, config())
        .await
        .unwrap();
    assert_eq!(resp.total, Some(size));
    let mut body = resp.body;
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(e) => return (resp.start, got, Some(e)),
        }
    }
    (resp.start, got, None)
}

#[tokio::test]
async fn windowed_reads_give_the_exact_bytes_with_one_ranged_request_per_window() {
    let s = setup("win/exact").await;
    let len = s.data.len() as u64;
    let last_window = len - WINDOW / 2;
    for offset in [0, len / 2 + 7, last_window] {
        s.proxy.clear_log();
        let (start, got, err) = read_from(&s, offset).await;
        assert!(err.is_none(), "offset {offset}: {err:?}");
        assert_eq!(start, offset);
        assert!(
            got == s.data[offset as usize..],
            "offset {offset}: wrong bytes"
        );
        let expected = (len - offset).div_ceil(WINDOW) as usize;
        assert_eq!(blob_gets(&s), expected, "offset {offset}");
        let ranged = s
            .proxy
            .requests(&Matcher::get("/blobs/"))
            .iter()
            .filter(|e| e.range.is_some())
            .count();
        // Under two windows' worth is one plain resume, ranged only when it starts mid-blob.
        assert_eq!(ranged, expected, "offset {offset}");
    }
}

#[tokio::test]
async fn the_next_window_is_requested_only_once_the_reader_nears_the_end_of_the_current() {
    let s = setup("win/ahead").await;
    let size = s.data.len() as u64;
    let resp = s
        .repo
        .get_blob_windowed(&s.digest, 0, size, config())
        .await
        .unwrap();
    assert!(resp.body.is_windowed());
    let mut body = resp.body;
    let mut read = 0u64;
    while read < WINDOW - LEAD - 1 {
        let Some(chunk) = body.next().await else {
            break;
        };
        let chunk = chunk.unwrap();
        read += chunk.len() as u64;
        if read < WINDOW - LEAD {
            assert_eq!(blob_gets(&s), 1, "after {read} bytes");
        }
    }
    while let Some(chunk) = body.next().await {
        read += chunk.unwrap().len() as u64;
    }
    assert_eq!(read, size);
    assert_eq!(blob_gets(&s), size.div_ceil(WINDOW) as usize);
}

#[tokio::test]
async fn a_registry_ignoring_ranges_is_read_whole_with_one_request_and_remembered() {
    let s = setup("win/ignored").await;
    s.proxy.add_rule(Rule::get("/blobs/", Action::IgnoreRange));
    let offset = 300_001;
    let (start, got, err) = read_from(&s, offset).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        start, 0,
        "the whole blob came: the caller skips to its offset"
    );
    assert!(got == s.data[..], "wrong bytes");
    assert_eq!(blob_gets(&s), 1);
    assert_eq!(
        s.repo.client().range_mode(&s.proxy.host()),
        RangeMode::FullBody
    );
    // Known now: the next download asks for the whole blob at once.
    s.proxy.clear_rules();
    s.proxy.clear_log();
    let (start, got, err) = read_from(&s, 0).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(start, 0);
    assert!(got == s.data[..], "wrong bytes");
    assert_eq!(blob_gets(&s), 1);
}

#[tokio::test]
async fn a_wrong_content_range_for_a_later_window_is_a_retryable_error_never_wrong_bytes() {
    let s = setup("win/wrong").await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::WrongContentRange).nth(3));
    let offset = 1000;
    let (start, got, err) = read_from(&s, offset).await;
    assert_eq!(start, offset);
    let err = err.expect("the third window's answer is wrong");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("retry"), "{err}");
    assert_eq!(
        got.len() as u64,
        2 * WINDOW,
        "the two good windows, no more"
    );
    assert!(
        got == s.data[offset as usize..offset as usize + got.len()],
        "wrong bytes"
    );
    // What was read is a resume point: the rest follows from there.
    s.proxy.clear_rules();
    let resumed = offset + got.len() as u64;
    let (start, rest, err) = read_from(&s, resumed).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(start, resumed);
    assert!(rest == s.data[resumed as usize..], "wrong bytes");
}

#[tokio::test]
async fn a_wrong_content_range_for_the_first_window_restarts_from_byte_zero() {
    let s = setup("win/wrong-first").await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::WrongContentRange).once());
    let (start, got, err) = read_from(&s, 5000).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(start, 0);
    assert!(got == s.data[..], "wrong bytes");
}

#[tokio::test]
async fn a_window_reset_mid_body_is_a_retryable_error_after_only_right_bytes() {
    let s = setup("win/reset").await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::Reset { after_bytes: 5000 }).nth(2));
    let (start, got, err) = read_from(&s, 0).await;
    assert_eq!(start, 0);
    let err = err.expect("the second window was reset");
    assert!(err.is_retryable(), "{err}");
    assert!(got.len() as u64 >= WINDOW && (got.len() as u64) < 2 * WINDOW);
    assert!(got == s.data[..got.len()], "wrong bytes");
}

#[tokio::test]
async fn small_blobs_and_disabled_windows_are_one_plain_request() {
    let s = setup("win/small").await;
    let size = s.data.len() as u64;
    for cfg in [WindowConfig::disabled(), WindowConfig::new(size, 0)] {
        s.proxy.clear_log();
        let resp = s
            .repo
            .get_blob_windowed(&s.digest, 0, size, cfg)
            .await
            .unwrap();
        assert!(!resp.body.is_windowed());
        let mut body = resp.body;
        let mut got = Vec::new();
        while let Some(c) = body.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert!(got == s.data[..], "wrong bytes");
        let gets = s.proxy.requests(&Matcher::get("/blobs/"));
        assert_eq!(gets.len(), 1);
        assert!(gets[0].range.is_none());
    }
}
