//! Answers no honest registry sends, from a server the test writes byte for byte: the client
//! ends each with a typed error, reads a bounded number of bytes, and never hands out wrong data.

use std::time::Duration;

use futures_util::StreamExt;
use hoist_registry::auth::credentials::Credentials;
use hoist_registry::{Chunk, Error};
use hoist_test_support::{Answer, HostileServer};

use crate::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A client on `server` (plain HTTP) for repository `h/img`, with a short stall timeout.
fn repo_on(server: &HostileServer, creds: Option<Credentials>) -> Repository {
    let mut b = RegistryClient::builder().stall_timeout(Duration::from_secs(2));
    if let Some(c) = creds {
        b = b.credentials(server.host(), c);
    }
    b.build()
        .unwrap()
        .repository(Endpoint::new(server.host(), Scheme::Http), "h/img")
}

/// `/v2/` answers 200; every other path gets `answer`.
async fn serving(answer: Answer) -> HostileServer {
    HostileServer::start(move |_, path| {
        if path == "/v2/" {
            Answer::new("200 OK").body("{}")
        } else {
            answer.clone()
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_megabyte_response_header_is_a_clean_error() {
    let huge = "a".repeat(1 << 20);
    let server = serving(
        Answer::new("200 OK")
            .header("Content-Type", OCI_MANIFEST)
            .header("X-Huge", &huge)
            .body("{}"),
    )
    .await;
    let err = repo_on(&server, None).get_manifest("1").await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    // Transport errors are retried like any broken connection; the retries are bounded.
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn an_endless_manifest_stops_at_the_four_mebibyte_cap() {
    let server = serving(
        Answer::new("200 OK")
            .header("Content-Type", OCI_MANIFEST)
            .endless_body(),
    )
    .await;
    let err = repo_on(&server, None).get_manifest("1").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                what: "manifest",
                limit,
                ..
            } if limit == 4 << 20
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    // What the server got rid of: the cap plus what the sockets buffer, not more.
    let sent = server.bytes_sent();
    assert!(sent < (4 << 20) + (16 << 20), "{sent} bytes sent");
}

#[tokio::test]
async fn an_endless_manifest_with_a_lying_content_length_stops_at_the_cap_too() {
    let server = serving(
        Answer::new("200 OK")
            .header("Content-Type", OCI_MANIFEST)
            .header("Content-Length", "1000")
            .endless_body(),
    )
    .await;
    // The body is read to its declared length: 1000 bytes of `x` are not the manifest asked for.
    let err = repo_on(&server, None)
        .get_manifest("sha256:0000000000000000000000000000000000000000000000000000000000000000")
        .await
        .unwrap_err();
    assert!(!matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(server.bytes_sent() < 20 << 20);
}

#[tokio::test]
async fn an_endless_error_body_is_drained_within_its_limit() {
    let server = serving(
        Answer::new("500 Internal Server Error")
            .header("Content-Type", "application/json")
            .endless_body(),
    )
    .await;
    let err = repo_on(&server, None).get_manifest("1").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(500), "{err}");
    assert!(err.is_retryable());
    assert!(server.bytes_sent() < 20 << 20, "{}", server.bytes_sent());
}

/// A registry that asks for a bearer token from its own `/token`, which `token` answers.
async fn token_registry(token: Answer) -> HostileServer {
    let realm = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let r = std::sync::Arc::clone(&realm);
    let server = HostileServer::start(move |_, path| {
        if path.starts_with("/token") {
            return token.clone();
        }
        let challenge = format!(
            "Bearer realm=\"{}/token\",service=\"hostile\"",
            r.lock().unwrap()
        );
        Answer::new("401 Unauthorized")
            .header("WWW-Authenticate", &challenge)
            .header("Content-Type", "application/json")
            .body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}"#)
    })
    .await
    .unwrap();
    *realm.lock().unwrap() = server.url();
    server
}

#[tokio::test]
async fn an_endless_token_answer_stops_at_the_one_mebibyte_cap() {
    let server = token_registry(
        Answer::new("200 OK")
            .header("Content-Type", "application/json")
            .endless_body(),
    )
    .await;
    let err = repo_on(&server, Some(Credentials::basic("u", "p")))
        .get_manifest("1")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == 1 << 20)
            || (matches!(err, Error::Token { .. }) && text.contains("1048576")),
        "{err}"
    );
    assert!(server.bytes_sent() < (1 << 20) + (16 << 20));
}

#[tokio::test]
async fn a_token_answer_that_is_not_json_is_a_token_error() {
    let server = token_registry(Answer::new("200 OK").body("<html>hello</html>")).await;
    let err = repo_on(&server, Some(Credentials::basic("u", "p")))
        .get_manifest("1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Token { .. }), "{err}");
}

#[tokio::test]
async fn malformed_challenges_are_clean_errors() {
    for challenge in [
        "Bearer realm=",
        "Bearer realm=\"unterminated",
        "Bearer ,,,,",
        "Bearer realm=\"ftp://elsewhere/token\"",
        "Bearer service=\"no-realm\"",
        "Negotiate abc==",
        "Bearer realm=\"http://[::1\"",
        "Basic realm=\"\u{e9}\"",
        "",
    ] {
        let c = challenge.to_owned();
        let server = HostileServer::start(move |_, _| {
            Answer::new("401 Unauthorized")
                .header("WWW-Authenticate", &c)
                .body("")
        })
        .await
        .unwrap();
        let err = repo_on(&server, Some(Credentials::basic("u", "p")))
            .get_manifest("1")
            .await
            .unwrap_err();
        // Never a hang or a panic; never a retry loop against a server that cannot be satisfied.
        assert!(!err.is_retryable(), "{challenge:?}: {err}");
        assert!(
            server.requests() <= 3,
            "{challenge:?}: {} requests",
            server.requests()
        );
    }
}

/// A blob server whose range answers are `answer`.
async fn ranges_server(answer: Answer) -> HostileServer {
    serving(answer).await
}

#[tokio::test]
async fn malformed_multipart_answers_are_errors_never_wrong_bytes() {
    let digest = digest_of(b"unused");
    let chunks = [Chunk::new(0, 10), Chunk::new(100, 10)];
    let part = |range: &str, data: &str| {
        format!(
            "--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {range}/1000\r\n\r\n{data}\r\n"
        )
    };
    let bodies: Vec<(&str, String)> = vec![
        ("no closing boundary", part("0-9", "0123456789")),
        (
            "a part of the wrong length",
            format!(
                "{}{}--B--\r\n",
                part("0-9", "0123"),
                part("100-109", "abcdefghij")
            ),
        ),
        (
            "a part outside what was asked",
            format!(
                "{}{}--B--\r\n",
                part("0-9", "0123456789"),
                part("500-509", "abcdefghij")
            ),
        ),
        (
            "parts without Content-Range",
            "--B\r\nContent-Type: x\r\n\r\n0123456789\r\n--B--\r\n".to_owned(),
        ),
        ("garbage", "this is not multipart at all".to_owned()),
        (
            "a header block that never ends",
            format!("--B\r\nX: {}", "y".repeat(64 * 1024)),
        ),
    ];
    for (name, body) in bodies {
        let server = ranges_server(
            Answer::new("206 Partial Content")
                .header("Content-Type", "multipart/byteranges; boundary=B")
                .body(body),
        )
        .await;
        let repo = repo_on(&server, None);
        let result = async {
            let mut s = repo.get_blob_at(&digest, &chunks).await?;
            let mut got = vec![Vec::new(); chunks.len()];
            while let Some(piece) = s.next().await {
                let (i, b) = piece?;
                got[i].extend_from_slice(&b);
            }
            Ok::<_, Error>(got)
        }
        .await;
        match result {
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        Error::Multipart { .. }
                            | Error::InvalidResponse { .. }
                            | Error::Range { .. }
                            | Error::Transport { .. }
                    ),
                    "{name}: {e}"
                );
            }
            Ok(got) => panic!("{name}: accepted {got:?}"),
        }
    }
}
