//! The fault proxy in front of the real registry: each action, visibly.

use std::time::{Duration, Instant};

use hoist_test_support::{Action, FaultProxy, Listener, Matcher, Registry, Rule};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::client::{self, io_kind, read_partial};
use crate::content;
use crate::registry::basic_header;

const BLOB_LEN: usize = 256 * 1024;

/// A registry holding one random blob, and a proxy in front of it.
struct Setup {
    _registry: Registry,
    proxy: FaultProxy,
    blob: Vec<u8>,
    blob_url: String,
}

async fn setup() -> Setup {
    let registry = Registry::start().await.unwrap();
    let blob = content::random_bytes(BLOB_LEN);
    let digest = content::push_blob(&registry.url(), "fault/app", &blob, None).await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let blob_url = format!("{}/v2/fault/app/blobs/{digest}", proxy.url());
    Setup {
        _registry: registry,
        proxy,
        blob,
        blob_url,
    }
}

#[tokio::test]
async fn requests_pass_through_unchanged_and_are_logged() {
    let s = setup().await;
    let reply = client::get(&s.blob_url).send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, s.blob);
    let head = client::req(Method::HEAD, &s.blob_url).send().await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.header("content-length"),
        Some(BLOB_LEN.to_string().as_str())
    );

    // A push through the proxy: the upload Location names the proxy, not the registry.
    let big = content::random_bytes(3 * 1024 * 1024 + 7);
    let digest = content::push_blob(&s.proxy.url(), "fault/pushed", &big, None).await;
    let uploads = s
        .proxy
        .requests(&Matcher::new(Method::POST, "/blobs/uploads/"));
    assert_eq!(uploads.len(), 1);
    let put = s
        .proxy
        .requests(&Matcher::new(Method::PUT, "*/blobs/uploads/*"));
    assert_eq!(put.len(), 1, "the PUT went to the proxy");
    assert!(
        put[0]
            .query
            .as_deref()
            .unwrap()
            .contains(&format!("digest={digest}"))
    );
    let back = client::get(&format!("{}/v2/fault/pushed/blobs/{digest}", s.proxy.url()))
        .send()
        .await;
    assert_eq!(back.body, big);

    let gets = s.proxy.requests(&Matcher::get("/blobs/"));
    assert_eq!(gets.len(), 2);
    assert!(
        gets.iter()
            .all(|e| e.status == Some(200) && e.completed && e.fault.is_none())
    );
    assert_eq!(
        s.proxy.bytes_sent(&Matcher::get("/blobs/")),
        (BLOB_LEN + big.len()) as u64
    );
    assert_eq!(s.proxy.count(&Matcher::head("/blobs/")), 1);
    assert_eq!(s.proxy.count(&Matcher::get("/manifests/")), 0);
    s.proxy.clear_log();
    assert!(s.proxy.log().is_empty());
}

#[tokio::test]
async fn reset_after_n_bytes_delivers_n_bytes_then_a_connection_reset() {
    let s = setup().await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::Reset { after_bytes: 1000 }).once());
    let resp = client::get(&s.blob_url).send_streaming().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (got, err) = read_partial(resp.into_body()).await;
    assert_eq!(got.len(), 1000);
    assert_eq!(&got[..], &s.blob[..1000]);
    let err = err.expect("the body must fail");
    assert_eq!(
        io_kind(&err),
        Some(std::io::ErrorKind::ConnectionReset),
        "{err:?}"
    );
    // Once: the next request passes.
    assert_eq!(client::get(&s.blob_url).send().await.body, s.blob);
    let log = s.proxy.requests(&Matcher::get("/blobs/"));
    assert_eq!(log[0].fault, Some(Action::Reset { after_bytes: 1000 }));
    assert_eq!(log[0].bytes_sent, 1000);
    assert!(!log[0].completed);
    assert!(log[1].completed && log[1].fault.is_none());
}

#[tokio::test]
async fn reset_before_response_gives_no_answer_at_all() {
    let s = setup().await;
    s.proxy
        .add_rule(Rule::get("/manifests/", Action::ResetBeforeResponse).once());
    let url = format!("{}/v2/fault/app/manifests/latest", s.proxy.url());
    let err = client::get(&url).send_streaming().await.unwrap_err();
    let hyper_err = err.downcast_ref::<hyper::Error>().unwrap();
    assert!(
        io_kind(hyper_err) == Some(std::io::ErrorKind::ConnectionReset)
            || hyper_err.is_incomplete_message(),
        "{hyper_err:?}"
    );
    assert_eq!(
        s.proxy.requests(&Matcher::get("/manifests/"))[0].status,
        None
    );
    let again = client::get(&url).send().await;
    assert_eq!(
        again.status,
        StatusCode::NOT_FOUND,
        "the registry answers the retry"
    );
}

#[tokio::test]
async fn status_faults_answer_with_their_code_and_retry_after() {
    let s = setup().await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::status_with_retry_after(503, "2")).nth(1));
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::status_with_retry_after(429, "1")).nth(2));
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::status(500)).nth(3));
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::status(502)).nth(4));

    let expected = [
        (503, Some("2"), "UNAVAILABLE"),
        (429, Some("1"), "TOOMANYREQUESTS"),
        (500, None, "UNKNOWN"),
        (502, None, "UNKNOWN"),
    ];
    for (status, retry_after, code) in expected {
        let reply = client::get(&s.blob_url).send().await;
        assert_eq!(reply.status.as_u16(), status);
        assert_eq!(reply.header("retry-after"), retry_after);
        assert_eq!(reply.json()["errors"][0]["code"], code);
    }
    let fifth = client::get(&s.blob_url).send().await;
    assert_eq!(fifth.status, StatusCode::OK);
    assert_eq!(fifth.body, s.blob);
    let statuses: Vec<Option<u16>> = s
        .proxy
        .requests(&Matcher::get("/blobs/"))
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(
        statuses,
        vec![Some(503), Some(429), Some(500), Some(502), Some(200)]
    );
}

#[tokio::test]
async fn stall_forever_sends_n_bytes_then_nothing() {
    let s = setup().await;
    s.proxy.add_rule(Rule::get(
        "/blobs/",
        Action::Stall {
            after_bytes: 500,
            duration: None,
        },
    ));
    let resp = client::get(&s.blob_url).send_streaming().await.unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < 500 {
        let frame = body.frame().await.unwrap().unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(got, &s.blob[..500]);
    let next = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(next.is_err(), "no byte may follow a stall");
    assert_eq!(
        s.proxy.requests(&Matcher::get("/blobs/"))[0].bytes_sent,
        500
    );
}

#[tokio::test]
async fn stall_for_a_duration_delays_then_completes() {
    let s = setup().await;
    let pause = Duration::from_millis(300);
    s.proxy.add_rule(Rule::get(
        "/blobs/",
        Action::Stall {
            after_bytes: 10_000,
            duration: Some(pause),
        },
    ));
    let started = Instant::now();
    let reply = client::get(&s.blob_url).send().await;
    assert!(started.elapsed() >= pause);
    assert_eq!(reply.body, s.blob);
    assert!(s.proxy.requests(&Matcher::get("/blobs/"))[0].completed);
}

#[tokio::test]
async fn truncate_keeps_the_content_length_but_ends_early() {
    let s = setup().await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::Truncate { after_bytes: 4321 }));
    let resp = client::get(&s.blob_url).send_streaming().await.unwrap();
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        BLOB_LEN.to_string()
    );
    let (got, err) = read_partial(resp.into_body()).await;
    assert_eq!(&got[..], &s.blob[..4321]);
    let err = err.expect("a short body is an error");
    assert_ne!(
        io_kind(&err),
        Some(std::io::ErrorKind::ConnectionReset),
        "{err:?}"
    );
}

#[tokio::test]
async fn flip_byte_corrupts_exactly_one_byte() {
    let s = setup().await;
    let offset = 100_000;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::FlipByte { offset }).once());
    let reply = client::get(&s.blob_url).send().await;
    assert_eq!(reply.body.len(), BLOB_LEN);
    let diffs: Vec<usize> = (0..BLOB_LEN)
        .filter(|&i| reply.body[i] != s.blob[i])
        .collect();
    assert_eq!(diffs, vec![offset as usize]);
    assert_eq!(reply.body[offset as usize], !s.blob[offset as usize]);
    assert_ne!(content::digest(&reply.body), content::digest(&s.blob));
}

#[tokio::test]
async fn ignore_range_answers_200_with_the_whole_body() {
    let s = setup().await;
    let honoured = client::get(&s.blob_url)
        .header("range", "bytes=10-19")
        .send()
        .await;
    assert_eq!(honoured.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(honoured.body, s.blob[10..20]);
    assert_eq!(
        honoured.header("content-range"),
        Some(format!("bytes 10-19/{BLOB_LEN}").as_str())
    );

    s.proxy.add_rule(Rule::get("/blobs/", Action::IgnoreRange));
    let ignored = client::get(&s.blob_url)
        .header("range", "bytes=10-19")
        .send()
        .await;
    assert_eq!(ignored.status, StatusCode::OK);
    assert_eq!(ignored.body, s.blob);
    let log = s.proxy.requests(&Matcher::get("/blobs/"));
    assert_eq!(log[1].range.as_deref(), Some("bytes=10-19"));
    assert_eq!(log[1].fault, Some(Action::IgnoreRange));
}

#[tokio::test]
async fn wrong_content_range_misplaces_the_partial_answer() {
    let s = setup().await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::WrongContentRange));
    let reply = client::get(&s.blob_url)
        .header("range", "bytes=10-19")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes 11-20/{BLOB_LEN}").as_str())
    );
    assert_eq!(reply.body, s.blob[10..20], "the bytes are those asked for");
}

#[tokio::test]
async fn redirects_go_to_a_foreign_host_that_serves_the_same_bytes() {
    let registry = Registry::start_with_basic_auth("u", "p").await.unwrap();
    let auth = basic_header("u", "p");
    let blob = content::random_bytes(50_000);
    let digest = content::push_blob(&registry.url(), "r/app", &blob, Some(&auth)).await;
    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    proxy.add_rule(Rule::get("/blobs/", Action::RedirectToForeignHost));
    assert_ne!(proxy.foreign_url(), proxy.url());

    let first = client::get(&format!("{}/v2/r/app/blobs/{digest}", proxy.url()))
        .auth(Some(&auth))
        .send()
        .await;
    assert_eq!(first.status, StatusCode::TEMPORARY_REDIRECT);
    let location = first.header("location").unwrap().to_owned();
    assert!(location.starts_with(&proxy.foreign_url()), "{location}");
    assert!(location.starts_with("http://127.0.0.2:"), "{location}");

    // Followed as a careful client does: without credentials.
    let followed = client::get(&location).send().await;
    assert_eq!(followed.status, StatusCode::OK);
    assert_eq!(followed.body, blob);
    assert!(!proxy.foreign_saw_authorization());
    let foreign = proxy.foreign_requests();
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign[0].listener, Listener::Foreign);
    assert_eq!(foreign[0].path, format!("/v2/r/app/blobs/{digest}"));

    // Followed carelessly: the foreign host notices the leak.
    let leaked = client::get(&location).auth(Some(&auth)).send().await;
    assert_eq!(leaked.status, StatusCode::OK);
    assert!(proxy.foreign_saw_authorization());
    // Redirects and foreign requests are told apart in the counts.
    assert_eq!(proxy.count(&Matcher::get("/blobs/")), 1);
}

#[tokio::test]
async fn refused_connections_until_accepted_again() {
    let s = setup().await;
    s.proxy.refuse_connections().await;
    let err = client::get(&s.blob_url).try_send().await.unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    s.proxy.accept_connections().await.unwrap();
    assert_eq!(client::get(&s.blob_url).send().await.body, s.blob);
}

#[tokio::test]
async fn rules_pick_occurrences_and_can_be_cleared_at_run_time() {
    let s = setup().await;
    s.proxy
        .add_rule(Rule::get("/blobs/", Action::status(500)).nth(2));
    s.proxy.add_rule(
        Rule::new(
            Matcher::any_method("/v2/*/blobs/sha256:*"),
            Action::status(503),
        )
        .first(4),
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(client::get(&s.blob_url).send().await.status.as_u16());
    }
    // The 503 rule counted all five, the 500 rule took the second.
    assert_eq!(statuses, vec![503, 500, 503, 503, 200]);
    s.proxy.add_rule(Rule::get("/blobs/", Action::status(502)));
    assert_eq!(
        client::get(&s.blob_url).send().await.status,
        StatusCode::BAD_GATEWAY
    );
    s.proxy.clear_rules();
    assert_eq!(client::get(&s.blob_url).send().await.status, StatusCode::OK);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_port() {
    let s = setup().await;
    let host = s.proxy.host();
    drop(s.proxy);
    // The listener task is aborted asynchronously: wait (bounded) for it to go.
    let mut refused = false;
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(&host).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused);
}
