//! Credentials stay secret (logs, `Debug`, other hosts), token scopes are minimal, the store's
//! files are not writable by others, and `config.json` is only ever written by login/logout.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use crate::pull::{run, seed_image};
use crate::*;
use hoist_registry::auth::credentials::Credentials;
use hoist_registry::{Endpoint, RegistryClient, Scheme};
use hoist_test_support::{Action, FaultProxy, Rule, TokenPolicy};

const USER: &str = "writer";
const PASSWORD: &str = "s3cret-pa55";
/// base64("writer:s3cret-pa55"), as a Basic `Authorization` header carries it.
const BASIC: &str = "d3JpdGVyOnMzY3JldC1wYTU1";

/// Fails if `output` holds the password, the Basic header's secret, or a JWT (`eyJ...`, as every
/// token the token server issues begins).
fn assert_no_secret(what: &str, output: &str) {
    for secret in [PASSWORD, BASIC, "eyJ"] {
        assert!(
            !output.contains(secret),
            "{what}: a secret ({secret}) is in the output:\n{output}"
        );
    }
}

fn all_output(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// `repository:NAME:a,b` -> (NAME, {a, b}).
fn parse_scope(scope: &str) -> (String, BTreeSet<String>) {
    let rest = scope.strip_prefix("repository:").unwrap();
    let (name, actions) = rest.rsplit_once(':').unwrap();
    (
        name.to_owned(),
        actions.split(',').map(str::to_owned).collect(),
    )
}

fn actions(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// (mtime in ns, bytes) of a file.
fn fingerprint(path: &Path) -> (i128, Vec<u8>) {
    let m = std::fs::metadata(path).unwrap();
    (
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        std::fs::read(path).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_token_auth_secrets_stay_out_of_logs_scopes_are_minimal_and_config_json_is_untouched()
{
    let policy = TokenPolicy::new()
        .user(USER, PASSWORD)
        .grant(USER, "*", &["pull", "push"]);
    let registry = Registry::start_with_token_auth(policy).await.unwrap();
    let tokens = registry.token_server().unwrap();
    let open = Registry::start().await.unwrap();
    seed_image(&open, "sec/app", "v1").await;
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("store");
    let host = registry.host();

    let out = hoist(
        home.path(),
        &["-vv", "login", &host, "-u", USER, "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_secret("login -vv", &all_output(&out));
    let config = home.path().join("config.json");
    let before = fingerprint(&config);

    // Push: the image comes from the open registry, then goes to the token registry.
    let src = format!("{}/sec/app:v1", open.host());
    let app = format!("{host}/sec/app:v1");
    assert!(
        run(home.path(), &store, &["-q", "pull", &src])
            .status
            .success()
    );
    assert!(
        run(home.path(), &store, &["tag", &src, &app])
            .status
            .success()
    );
    tokens.clear_requests();
    let out = run(home.path(), &store, &["-vv", "push", &app]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = all_output(&out);
    assert!(log.contains("DEBUG"), "-vv logs at debug level: {log}");
    assert_no_secret("push -vv", &log);
    for request in tokens.requests() {
        for scope in &request.scopes {
            let (name, acts) = parse_scope(scope);
            assert_eq!(name, "sec/app", "push asked for {scope}");
            assert!(
                acts == actions(&["pull", "push"]) || acts == actions(&["pull"]),
                "push asked for {scope}"
            );
        }
    }
    assert!(
        tokens
            .requests()
            .iter()
            .flat_map(|r| r.scopes.clone())
            .any(|s| parse_scope(&s).1 == actions(&["pull", "push"])),
        "push never asked for push access"
    );

    // Push under another name: the blobs are mounted from sec/app, which needs pull there only.
    let copy = format!("{host}/sec/copy:v1");
    assert!(
        run(home.path(), &store, &["tag", &src, &copy])
            .status
            .success()
    );
    tokens.clear_requests();
    let out = run(home.path(), &store, &["-vv", "push", &copy]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Mounted from") || text(&out.stdout).contains("Mounted from"),
        "{}",
        text(&out.stdout)
    );
    assert_no_secret("push (mount) -vv", &all_output(&out));
    let mut mount_source_seen = false;
    for request in tokens.requests() {
        for scope in &request.scopes {
            let (name, acts) = parse_scope(scope);
            match name.as_str() {
                "sec/copy" => assert!(
                    acts == actions(&["pull", "push"]) || acts == actions(&["pull"]),
                    "{scope}"
                ),
                "sec/app" => {
                    assert_eq!(acts, actions(&["pull"]), "a mount source: {scope}");
                    mount_source_seen = true;
                }
                other => panic!("push of sec/copy asked for {other}: {scope}"),
            }
        }
    }
    assert!(mount_source_seen, "the mount never asked for its source");

    // Pull, tags and inspect ask for pull only.
    let app_repo = format!("{host}/sec/app");
    for args in [
        ["-vv", "pull", app.as_str()],
        ["-vv", "tags", app_repo.as_str()],
        ["-vv", "inspect", app.as_str()],
    ] {
        tokens.clear_requests();
        let fresh = home.path().join("fresh");
        let out = run(home.path(), &fresh, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_no_secret(&format!("{args:?}"), &all_output(&out));
        let requests = tokens.requests();
        assert!(!requests.is_empty(), "{args:?} asked for no token");
        for request in requests {
            assert!(request.had_credentials, "{args:?}: anonymous token request");
            for scope in &request.scopes {
                assert_eq!(
                    parse_scope(scope),
                    ("sec/app".to_owned(), actions(&["pull"])),
                    "{args:?} asked for {scope}"
                );
            }
        }
    }

    assert_eq!(
        fingerprint(&config),
        before,
        "config.json was rewritten by a command other than login/logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_of_clients_and_credentials_never_shows_a_secret() {
    let policy = TokenPolicy::new()
        .user(USER, PASSWORD)
        .grant(USER, "*", &["pull", "push"]);
    let registry = Registry::start_with_token_auth(policy).await.unwrap();
    let creds = Credentials::basic(USER, PASSWORD);
    assert_no_secret("Credentials", &format!("{creds:?} {creds}"));
    let token = Credentials::identity_token(Some(USER.into()), "eyJidentity");
    assert_no_secret("identity Credentials", &format!("{token:?} {token}"));
    let builder = RegistryClient::builder().credentials(registry.host(), creds.clone());
    assert_no_secret("ClientBuilder", &format!("{builder:?}"));
    let client = builder.build().unwrap();
    // Fetch a token, so that the client caches one.
    let repo = client.repository(Endpoint::new(registry.host(), Scheme::Http), "x/y");
    assert!(!repo.manifest_exists("v1").await.unwrap());
    assert!(registry.token_server().unwrap().request_count() > 0);
    assert_no_secret("RegistryClient", &format!("{client:?} {repo:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_on_another_host_never_receives_the_upstreams_credentials() {
    let upstream = Registry::start_with_basic_auth(USER, PASSWORD)
        .await
        .unwrap();
    let mirror = Registry::start().await.unwrap();
    seed_image(&mirror, "sec/app", "v1").await;
    let proxy = FaultProxy::start(&mirror.url()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = hoist(
        home.path(),
        &["login", &upstream.host(), "-u", USER, "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = home.path().join("hoist.toml");
    std::fs::write(
        &config,
        format!(
            "[registries.\"{}\"]\nmirrors = [\"{}\"]\n",
            upstream.host(),
            proxy.host()
        ),
    )
    .unwrap();
    let store = home.path().join("store");
    let image = format!("{}/sec/app:v1", upstream.host());
    let out = run(
        home.path(),
        &store,
        &["--config", config.to_str().unwrap(), "-vv", "pull", &image],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_secret("pull through a mirror", &all_output(&out));
    let log = proxy.log();
    assert!(
        log.iter().any(|e| e.path.contains("/blobs/")),
        "the mirror served nothing: {log:?}"
    );
    assert!(
        log.iter().all(|e| !e.authorization),
        "credentials reached the mirror: {log:?}"
    );
}

/// Paths under `dir`, not descending into `skip` (relative names at the top).
fn walk(dir: &Path, skip: &[&str], out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        out.push(path.clone());
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() && !skip.contains(&name.as_str()) {
            walk(&path, &[], out);
        }
    }
}

/// Runs hoist under umask 000, where only hoist's own modes protect what it creates.
fn spawn_with_umask_0(home: &Path, root: &Path, args: &[&str]) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_hoist"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("DOCKER_CONFIG", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_files_are_never_writable_by_others_and_the_database_is_private_whatever_the_umask() {
    let registry = Registry::start().await.unwrap();
    seed_image(&registry, "sec/app", "v1").await;
    // An image whose layer holds a world-writable directory, as /tmp is.
    let client = RegistryClient::builder().build().unwrap();
    let r = client.repository(Endpoint::new(registry.host(), Scheme::Http), "sec/tmp");
    let (blob, diff_id) = {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o1777);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, "tmp/", std::io::empty()).unwrap();
        let tar = tar.into_inner().unwrap();
        (
            bytes::Bytes::from(tar.clone()),
            hoist_registry::digest::sha256_of(&tar),
        )
    };
    r.push_blob_bytes(&diff_id, blob.clone()).await.unwrap();
    let arch = hoist_distribution::Platform::host();
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#,
        arch.architecture
    ));
    let config_d = hoist_registry::digest::sha256_of(&config);
    r.push_blob_bytes(&config_d, config.clone()).await.unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{diff_id}","size":{}}}]}}"#,
        config.len(),
        blob.len()
    );
    r.put_manifest(
        "v1",
        hoist_registry::manifest::OCI_MANIFEST,
        manifest.into(),
    )
    .await
    .unwrap();

    let proxy = FaultProxy::start(&registry.url()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("store");
    for image in ["sec/app:v1", "sec/tmp:v1"] {
        let child = spawn_with_umask_0(
            home.path(),
            &root,
            &["-q", "pull", &format!("{}/{image}", registry.host())],
        );
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // A pull that stalls mid-blob and is killed leaves an ingest behind.
    let big = crate::crash::noise(1 << 20, 9);
    let big_d = hoist_registry::digest::sha256_of(&big);
    r.push_blob_bytes(&big_d, bytes::Bytes::from(big.clone()))
        .await
        .unwrap();
    proxy.add_rule(Rule::get(
        &format!("/blobs/{big_d}"),
        Action::Stall {
            after_bytes: 300_000,
            duration: None,
        },
    ));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{big_d}","size":{}}}]}}"#,
        config.len(),
        big.len()
    );
    r.put_manifest(
        "stall",
        hoist_registry::manifest::OCI_MANIFEST,
        manifest.into(),
    )
    .await
    .unwrap();
    let mut child = spawn_with_umask_0(
        home.path(),
        &root,
        &[
            "-q",
            "pull",
            "--no-unpack",
            &format!("{}/sec/tmp:stall", proxy.host()),
        ],
    );
    let big_hex = big_d.to_string().replace(':', "_");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ingest_data = loop {
        let found = std::fs::read_dir(root.join("ingest"))
            .unwrap()
            .filter_map(|e| e.ok())
            // The stalled layer's ingest: the config's may commit and vanish before the walk.
            .filter(|e| e.file_name().to_string_lossy().contains(&big_hex[..32]))
            .map(|e| e.path().join("data"))
            .find(|p| p.metadata().is_ok_and(|m| m.len() > 0));
        if let Some(p) = found {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no ingest appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();

    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    // Layer contents keep their tars' modes (tmp/ is 1777 in there): layers/ and tmp/ are the
    // owner's alone, so nobody else reaches them.
    for private in ["layers", "tmp"] {
        assert_eq!(mode(&root.join(private)), 0o700, "{private}/");
    }
    let mut paths = vec![root.clone()];
    walk(&root, &["layers", "tmp"], &mut paths);
    assert!(paths.contains(&ingest_data), "{paths:?}");
    for path in &paths {
        let m = mode(path);
        if std::fs::symlink_metadata(path).unwrap().is_symlink() {
            continue;
        }
        assert_eq!(m & 0o002, 0, "{} is world-writable ({m:o})", path.display());
        assert_eq!(m & 0o020, 0, "{} is group-writable ({m:o})", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("metadata.db") {
            assert_eq!(m & 0o077, 0, "{} is not private ({m:o})", path.display());
        }
    }
    let out = run(home.path(), &root, &["fsck"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_registry_is_pulled_from_with_the_configured_ca_and_client_certificate() {
    let registry = Registry::builder()
        .tls(hoist_test_support::ClientAuth::Required)
        .start()
        .await
        .unwrap();
    seed_image(&registry, "sec/tls", "v1").await;
    let files = registry.tls_files().unwrap().clone();
    let home = tempfile::tempdir().unwrap();
    let image = format!("{}/sec/tls:v1", registry.host());

    // Nothing configured: the registry's CA is unknown; the error says so and is not retried.
    let out = run(home.path(), &home.path().join("s1"), &["pull", &image]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    assert!(
        !err.contains("Retrying"),
        "a refused certificate was retried: {err}"
    );

    // The system roots (read when a certificate is first verified) trusting the registry's CA:
    // the handshake gets as far as the missing client certificate, which the registry refuses.
    let no_dir = home.path().join("no-certs");
    std::fs::create_dir(&no_dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(["--root", home.path().join("s0").to_str().unwrap()])
        .args(["-vv", "pull", &image])
        .env("DOCKER_CONFIG", home.path())
        .env("HOME", home.path())
        .env("SSL_CERT_FILE", &files.ca)
        .env("SSL_CERT_DIR", &no_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("system root certificates read"), "{err}");
    assert!(
        !err.contains("UnknownIssuer"),
        "the CA from the system roots was not trusted: {err}"
    );

    let config = home.path().join("hoist.toml");
    std::fs::write(
        &config,
        format!(
            "[registries.\"{}\"]\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
            registry.host(),
            files.ca,
            files.client_cert,
            files.client_key
        ),
    )
    .unwrap();
    let store = home.path().join("s2");
    let out = run(
        home.path(),
        &store,
        &["--config", config.to_str().unwrap(), "pull", &image],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(home.path(), &store, &["fsck"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}
