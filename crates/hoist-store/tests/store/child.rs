//! The child side of the multi-process tests: this test binary re-executed with `ROLE` set.
//!
//! Each role talks to the parent through lines starting with `@@ ` on stdout.

use std::io::{BufRead, Write};
use std::str::FromStr;

use hoist_store::{Digest, LeaseOptions, LeaseResource, Store, StoreError};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::support::{ROLE, data};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set for the child"))
}

fn num(name: &str) -> u64 {
    var(name).parse().unwrap()
}

fn say(msg: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {msg}").unwrap();
    out.flush().unwrap();
}

fn wait_for_parent() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

/// Entry point of every child role; does nothing unless started by a multi-process test.
#[test]
#[ignore = "entry point of child processes started by the multi-process tests"]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        eprintln!("{ROLE} not set: this entry point only runs as a child of the store tests");
        return;
    };
    let store = Store::open(var("CHILD_ROOT")).unwrap();
    match role.as_str() {
        "crash-writer" => crash_writer(&store),
        "hold-then-commit" => hold_then_commit(&store),
        "try-then-wait" => try_then_wait(&store),
        "race" => race(&store),
        "lease-and-exit" => lease_and_exit(&store),
        "tagger" => tagger(&store),
        other => panic!("unknown child role {other}"),
    }
}

/// Writes a seeded blob from wherever the ingest stands, in random chunks, reporting the offset
/// after each flushed chunk, until the parent kills it (or it commits).
fn crash_writer(store: &Store) {
    let seed = num("CHILD_SEED");
    let size = num("CHILD_SIZE") as usize;
    let content = data(seed, size);
    let digest = hoist_store::digests::sha256_of(&content);
    let mut w = match store
        .content()
        .writer(&var("CHILD_REF"), Some(&digest), Some(size as u64))
    {
        Ok(w) => w,
        Err(StoreError::AlreadyExists { .. }) => {
            say("exists");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    w.set_checkpoint_interval(num("CHILD_CHECKPOINT"));
    say(format!("offset {}", w.offset()));
    let mut rng = StdRng::seed_from_u64(seed ^ w.offset());
    let mut pos = w.offset() as usize;
    while pos < size {
        let n = rng.random_range(1..=64 * 1024).min(size - pos);
        w.write_all(&content[pos..pos + n]).unwrap();
        w.flush().unwrap();
        pos += n;
        say(format!("wrote {pos}"));
    }
    w.commit(Some(size as u64), Some(&digest)).unwrap();
    say("committed");
}

/// Writes half of a blob, then waits for the parent before finishing and committing.
fn hold_then_commit(store: &Store) {
    let content = data(num("CHILD_SEED"), num("CHILD_SIZE") as usize);
    let digest = hoist_store::digests::sha256_of(&content);
    let mut w = store
        .content()
        .writer(&var("CHILD_REF"), Some(&digest), Some(content.len() as u64))
        .unwrap();
    let half = content.len() / 2;
    w.write_all(&content[..half]).unwrap();
    w.flush().unwrap();
    say("half");
    wait_for_parent();
    w.write_all(&content[half..]).unwrap();
    w.commit(None, None).unwrap();
    say("committed");
}

/// Tries the ingest (expecting it locked), then waits for it and reports what it found.
fn try_then_wait(store: &Store) {
    let content = data(num("CHILD_SEED"), num("CHILD_SIZE") as usize);
    let digest = hoist_store::digests::sha256_of(&content);
    let r = var("CHILD_REF");
    match store
        .content()
        .try_writer(&r, Some(&digest), Some(content.len() as u64))
    {
        Err(StoreError::Locked { .. }) => say("locked"),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => say("not-locked"),
    }
    write_or_report(store, &r, &content, &digest);
}

/// Ingests a blob as fast as it can; another process may be doing the same.
fn race(store: &Store) {
    let content = data(num("CHILD_SEED"), num("CHILD_SIZE") as usize);
    let digest = hoist_store::digests::sha256_of(&content);
    say("ready");
    wait_for_parent();
    write_or_report(store, &var("CHILD_REF"), &content, &digest);
}

fn write_or_report(store: &Store, r: &str, content: &[u8], digest: &Digest) {
    match store
        .content()
        .writer(r, Some(digest), Some(content.len() as u64))
    {
        Err(StoreError::AlreadyExists { .. }) => say("exists"),
        Err(e) => panic!("unexpected {e}"),
        Ok(mut w) => {
            let start = w.offset() as usize;
            for chunk in content[start..].chunks(32 * 1024) {
                w.write_all(chunk).unwrap();
            }
            w.commit(Some(content.len() as u64), Some(digest)).unwrap();
            say("committed");
        }
    }
}

/// Takes a process-bound lease on a blob and exits without releasing it (as a crash would).
fn lease_and_exit(store: &Store) {
    let lease = store.lease(&LeaseOptions::default()).unwrap();
    let digest = Digest::from_str(&var("CHILD_DIGEST")).unwrap();
    lease.add(&LeaseResource::Blob(digest)).unwrap();
    say(lease.id());
    // Exit without running destructors, like a killed process.
    std::process::exit(0);
}

/// Adds `CHILD_COUNT` references to one image, named after `CHILD_PREFIX`.
fn tagger(store: &Store) {
    let manifest = hoist_store::Descriptor::new(
        hoist_store::MediaType::ImageManifest,
        num("CHILD_MANIFEST_SIZE"),
        Digest::from_str(&var("CHILD_DIGEST")).unwrap(),
    );
    let prefix = var("CHILD_PREFIX");
    for i in 0..num("CHILD_COUNT") {
        store
            .add_reference(&format!("127.0.0.1:5000/{prefix}/img:{i}"), &manifest)
            .unwrap();
    }
    say("done");
}
