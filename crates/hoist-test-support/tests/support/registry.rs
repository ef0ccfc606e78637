//! The registry harness: start, modes, isolation, shutdown.

use std::time::Duration;

use hoist_test_support::{Error, Registry, TokenPolicy};
use http::{Method, StatusCode};

use crate::client;
use crate::content;

#[tokio::test]
async fn plain_registry_answers_v2_on_loopback() {
    let registry = Registry::start().await.unwrap();
    assert_eq!(registry.host(), format!("127.0.0.1:{}", registry.port()));
    assert_eq!(registry.url(), format!("http://{}", registry.host()));
    let reply = client::get(&format!("{}/v2/", registry.url())).send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert!(registry.storage_dir().is_dir());
    let config = std::fs::read_to_string(registry.dir().join("config.yml")).unwrap();
    assert!(config.contains("level: warn"), "{config}");
    assert!(registry.log_path().starts_with(registry.dir()));
}

#[tokio::test]
async fn registries_run_side_by_side_and_keep_their_content_apart() {
    let (a, b, c) = tokio::join!(Registry::start(), Registry::start(), Registry::start());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let mut ports = vec![a.port(), b.port(), c.port()];
    ports.dedup();
    assert_eq!(ports.len(), 3);
    let blob = content::random_bytes(1000);
    let digest = content::push_blob(&a.url(), "iso/app", &blob, None).await;
    let path = format!("/v2/iso/app/blobs/{digest}");
    assert_eq!(
        client::get(&format!("{}{path}", a.url())).send().await.body,
        blob
    );
    for other in [&b, &c] {
        let reply = client::get(&format!("{}{path}", other.url())).send().await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    assert!(std::fs::read_dir(a.storage_dir()).unwrap().next().is_some());
}

#[tokio::test]
async fn dropping_the_registry_kills_its_process_and_removes_its_directory() {
    let registry = Registry::start().await.unwrap();
    let pid = registry.pid();
    let dir = registry.dir().to_owned();
    let addr = registry.host();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("docker-registry"));
    drop(registry);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
    let err = tokio::net::TcpStream::connect(&addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn a_missing_binary_says_how_to_install_it() {
    let err = Registry::builder()
        .binary("/nonexistent/docker-registry")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RegistryBinaryMissing { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("apt-get install docker-registry"),
        "{err}"
    );
}

#[tokio::test]
async fn a_registry_that_exits_at_start_reports_its_log_tail() {
    // `sh serve CONFIG` fails at once, complaining about the file "serve".
    let err = Registry::builder()
        .binary("/bin/sh")
        .start_timeout(Duration::from_secs(20))
        .start()
        .await
        .unwrap_err();
    match &err {
        Error::RegistryExited { tail, .. } => assert!(tail.contains("serve"), "{tail}"),
        other => panic!("expected RegistryExited, got {other:?}"),
    }
    assert!(err.to_string().contains("last lines of"), "{err}");
}

/// Run by `registry_environment_overrides_do_not_reach_the_registry` in a child process
/// whose environment holds `REGISTRY_*` overrides.
#[tokio::test]
#[ignore = "run by registry_environment_overrides_do_not_reach_the_registry"]
async fn env_probe() {
    if std::env::var_os("HOIST_TEST_ENV_PROBE").is_none() {
        return;
    }
    assert!(std::env::var_os("REGISTRY_AUTH").is_some());
    let registry = Registry::start().await.unwrap();
    let reply = client::get(&format!("{}/v2/", registry.url())).send().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", registry.log_tail(20));
}

#[test]
fn registry_environment_overrides_do_not_reach_the_registry() {
    // Were they passed on, REGISTRY_AUTH* would turn on htpasswd auth with a missing
    // file and REGISTRY_HTTP_ADDR would move the registry to another port.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "registry::env_probe",
            "--ignored",
            "--test-threads=1",
        ])
        .env("HOIST_TEST_ENV_PROBE", "1")
        .env("REGISTRY_AUTH", "htpasswd")
        .env("REGISTRY_AUTH_HTPASSWD_REALM", "nowhere")
        .env("REGISTRY_AUTH_HTPASSWD_PATH", "/nonexistent/htpasswd")
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Run by `a_crashed_test_process_leaves_no_registry_behind` in a child process that
/// aborts (no destructors run) while its registry is up.
#[tokio::test]
#[ignore = "run by a_crashed_test_process_leaves_no_registry_behind"]
async fn orphan_probe() {
    if std::env::var_os("HOIST_TEST_ORPHAN_PROBE").is_none() {
        return;
    }
    let registry = Registry::start().await.unwrap();
    println!(
        "PROBE pid={} dir={}",
        registry.pid(),
        registry.dir().display()
    );
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    std::process::abort();
}

#[test]
fn a_crashed_test_process_leaves_no_registry_behind() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "registry::orphan_probe",
            "--ignored",
            "--nocapture",
        ])
        .env("HOIST_TEST_ORPHAN_PROBE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the probe must have aborted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .unwrap_or_else(|| panic!("no probe line in {stdout}"));
    let (pid, dir) = line.split_once(' ').unwrap();
    let pid: u32 = pid.strip_prefix("pid=").unwrap().parse().unwrap();
    let dir = dir.strip_prefix("dir=").unwrap();
    // The kernel delivers the parent-death signal as the process exits; the orphan may
    // linger as a zombie until its new parent reaps it. Wait (bounded) for it to die.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.to_owned()))
            .is_some_and(|rest| !rest.starts_with('Z'))
    };
    let mut tries = 0;
    while alive() && tries < 500 {
        std::thread::sleep(Duration::from_millis(10));
        tries += 1;
    }
    let survived = alive();
    // An aborted process cannot clean up after itself: remove what it left.
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        !survived,
        "registry {pid} outlived the aborted test process"
    );
}

#[tokio::test]
async fn pull_through_cache_serves_the_upstreams_content_and_refuses_pushes() {
    let upstream = Registry::start().await.unwrap();
    let image = content::push_image(&upstream.url(), "lib/app", "v1", 4096, None).await;
    let cache = Registry::builder()
        .pull_through(&upstream.url())
        .start()
        .await
        .unwrap();
    let manifest = client::get(&format!("{}/v2/lib/app/manifests/v1", cache.url()))
        .header("accept", content::OCI_MANIFEST)
        .send()
        .await;
    assert_eq!(manifest.status, StatusCode::OK);
    assert_eq!(manifest.body, image.manifest);
    let blob = client::get(&format!(
        "{}/v2/lib/app/blobs/{}",
        cache.url(),
        image.layer_digest
    ))
    .send()
    .await;
    assert_eq!(blob.status, StatusCode::OK);
    assert_eq!(blob.body, image.layer);
    let push = client::req(
        Method::POST,
        &format!("{}/v2/lib/app/blobs/uploads/", cache.url()),
    )
    .send()
    .await;
    assert!(push.status.is_client_error(), "{push:?}");
}

#[tokio::test]
async fn pull_through_cache_logs_in_to_a_token_auth_upstream() {
    // distribution 2.8 uses proxy credentials for the remote's bearer realm only.
    let policy =
        TokenPolicy::new()
            .user("mirror", "m-pass")
            .grant("mirror", "*", &["pull", "push"]);
    let upstream = Registry::start_with_token_auth(policy).await.unwrap();
    let tokens = upstream.token_server().unwrap();
    let url = format!(
        "{}?service={}&scope=repository:priv/app:pull,push",
        tokens.realm(),
        tokens.service()
    );
    let token = client::get(&url)
        .basic("mirror", "m-pass")
        .send()
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = content::random_bytes(2048);
    let auth = format!("Bearer {token}");
    let digest = content::push_blob(&upstream.url(), "priv/app", &blob, Some(&auth)).await;
    tokens.clear_requests();

    let cache = Registry::builder()
        .pull_through_with_credentials(&upstream.url(), "mirror", "m-pass")
        .start()
        .await
        .unwrap();
    let reply = client::get(&format!("{}/v2/priv/app/blobs/{digest}", cache.url()))
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", cache.log_tail(20));
    assert_eq!(reply.body, blob);
    let asked = tokens.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.username.as_deref() == Some("mirror") && r.status == 200),
        "{asked:?}"
    );
}

pub fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
