//! A writer process killed with SIGKILL at random offsets; the ingest is resumed and the
//! committed blob verified.

use std::io::{Read, Write};

use hoist_store::digests::sha256_of;
use hoist_store::{Store, StoreError};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::support::{ChildProc, data};

const RUNS: u64 = 24;

/// What one kill round observed.
enum Round {
    /// Killed after the child reported `reported` bytes flushed.
    Killed { reported: u64 },
    /// The child committed (or found the blob committed) before reaching the kill point.
    Finished,
}

fn run_child(
    root: &std::path::Path,
    seed: u64,
    size: usize,
    checkpoint: u64,
    kill_at: u64,
) -> (u64, Round) {
    let mut child = ChildProc::spawn(
        "crash-writer",
        &[
            ("CHILD_ROOT", root.display().to_string()),
            ("CHILD_REF", format!("crash-{seed}")),
            ("CHILD_SEED", seed.to_string()),
            ("CHILD_SIZE", size.to_string()),
            ("CHILD_CHECKPOINT", checkpoint.to_string()),
        ],
    );
    let first = child.expect_msg();
    if first == "exists" {
        child.wait_success();
        return (size as u64, Round::Finished);
    }
    let start: u64 = first.strip_prefix("offset ").unwrap().parse().unwrap();
    let mut reported = start;
    loop {
        match child.next_msg() {
            Some(m) if m == "committed" => {
                child.wait_success();
                return (start, Round::Finished);
            }
            Some(m) => {
                reported = m.strip_prefix("wrote ").unwrap().parse().unwrap();
                if reported >= kill_at {
                    // The child keeps writing while the kill is on its way: it lands anywhere.
                    child.kill();
                    return (start, Round::Killed { reported });
                }
            }
            None => panic!("crash writer exited early after {reported} bytes"),
        }
    }
}

/// Simulates a power loss on a stopped ingest: garbage past the data, and a different boot.
fn simulate_power_loss(root: &std::path::Path, rng: &mut StdRng) {
    for entry in std::fs::read_dir(root.join("ingest")).unwrap() {
        let dir = entry.unwrap().path();
        let mut garbage = vec![0u8; rng.random_range(1..20_000)];
        rng.fill(&mut garbage[..]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("data"))
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        let meta_path = dir.join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        meta["boot_id"] = serde_json::Value::String("boot-before-the-power-cut".into());
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    }
}

#[test]
fn writer_killed_at_random_offsets_resumes_and_commits_the_exact_blob() {
    let mut resumed_past_zero = 0;
    for seed in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        Store::open(root).unwrap();
        let mut rng = StdRng::seed_from_u64(0x5eed ^ seed);
        let size = rng.random_range(256 * 1024..3 * 1024 * 1024);
        let content = data(seed, size);
        let digest = sha256_of(&content);
        let checkpoint = rng.random_range(16 * 1024..512 * 1024);
        let rounds = rng.random_range(1..=3);
        let power_loss = seed % 4 == 3;

        let mut floor = 0u64; // bytes the next writer must at least find
        let mut finished = false;
        for _ in 0..rounds {
            // A kill that landed after the last write but before the commit leaves every
            // byte flushed: the next writer then has nothing left to write but the commit.
            let kill_at = if floor >= size as u64 {
                size as u64
            } else {
                rng.random_range(floor + 1..=size as u64)
            };
            let (start, round) = run_child(root, seed, size, checkpoint, kill_at);
            assert!(
                start >= floor,
                "seed {seed}: resumed at {start}, but {floor} bytes had been flushed"
            );
            if start > 0 {
                resumed_past_zero += 1;
            }
            match round {
                Round::Finished => {
                    finished = true;
                    break;
                }
                Round::Killed { reported } => floor = reported,
            }
        }

        let store = Store::open(root).unwrap();
        // A kill that landed inside the commit, after the rename, also finished the blob.
        finished |= store.content().contains(&digest).unwrap();
        if !finished && power_loss {
            let durable = store
                .content()
                .ingest_info(&format!("crash-{seed}"))
                .unwrap()
                .durable_offset;
            simulate_power_loss(root, &mut rng);
            floor = durable;
        }
        {
            match store
                .content()
                .writer(&format!("crash-{seed}"), Some(&digest), Some(size as u64))
            {
                Ok(mut w) => {
                    assert!(!finished, "seed {seed}: writer opened for a committed blob");
                    let at = w.offset();
                    if power_loss {
                        assert_eq!(
                            at, floor,
                            "seed {seed}: after a power loss, resume at the checkpoint"
                        );
                    } else {
                        assert!(
                            at >= floor,
                            "seed {seed}: lost flushed bytes ({at} < {floor})"
                        );
                    }
                    assert!(at <= size as u64);
                    w.write_all(&content[at as usize..]).unwrap();
                    let info = w.commit(Some(size as u64), Some(&digest)).unwrap();
                    assert_eq!(info.digest, digest);
                }
                // Committed already; opening the writer also cleans up an ingest left by a
                // kill between the rename and the cleanup of that commit.
                Err(StoreError::AlreadyExists { .. }) => assert!(finished),
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        let mut back = Vec::new();
        store
            .content()
            .reader(&digest)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == content, "seed {seed}: committed blob differs");
        assert!(
            store.content().ingests().unwrap().is_empty(),
            "seed {seed}: ingest left behind"
        );
        assert!(store.fsck(&Default::default()).unwrap().is_clean());
    }
    assert!(
        resumed_past_zero > 0,
        "no run resumed a partially written ingest; the test did not exercise resuming"
    );
}
