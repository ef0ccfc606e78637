//! Hostile archives: every one is refused with a typed error naming the entry (or handled
//! safely), nothing is registered, no temporary directory is left, and nothing outside the
//! store changes.

use std::io::Read;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use tar::EntryType;

use super::{Fixture, TarBuilder, options};
use crate::layer::path::PathError;
use crate::layer::{LayerError, StageOptions};

#[test]
fn dot_dot_escaping_the_root_is_refused() {
    let fx = Fixture::new();
    for name in [
        "../escape",
        "a/../../escape",
        "./../outside/secret",
        "/../escape",
    ] {
        let tar = TarBuilder::new()
            .file("ok", b"fine")
            .file(name, b"pwned")
            .finish();
        let err = fx.expect_refused(&tar, &options());
        match err {
            LayerError::BadName {
                entry,
                reason: PathError::Escapes,
            } => assert_eq!(entry, name),
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
}

#[test]
fn absolute_names_are_taken_relative_to_the_layer_root() {
    let fx = Fixture::new();
    let secret = fx.outside().join("secret");
    let name = secret.to_str().unwrap().to_owned();
    let tar = TarBuilder::new()
        .file(&name, b"inside the layer")
        .file("/abs/file", b"x")
        .finish();
    let before = fx.snapshot_outside();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    assert_eq!(fx.snapshot_outside(), before);
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert_eq!(
        std::fs::read(diff.join(name.trim_start_matches('/'))).unwrap(),
        b"inside the layer"
    );
    assert_eq!(std::fs::read(diff.join("abs/file")).unwrap(), b"x");
    assert_eq!(std::fs::read(secret).unwrap(), b"do not touch");
}

#[test]
fn writing_through_a_symlink_is_refused_wherever_it_points() {
    let fx = Fixture::new();
    let outside = fx.outside().to_str().unwrap().to_owned();
    let cases: Vec<(String, TarBuilder)> = vec![
        ("absolute target".into(), {
            let mut b = TarBuilder::new();
            b.symlink("evil", &outside).file("evil/pwned", b"x");
            b
        }),
        ("relative escape".into(), {
            let mut b = TarBuilder::new();
            b.symlink("evil", "../../../../../../../../..")
                .file("evil/pwned", b"x");
            b
        }),
        ("target inside the layer".into(), {
            let mut b = TarBuilder::new();
            b.dir("real", 0o755)
                .symlink("evil", "real")
                .file("evil/pwned", b"x");
            b
        }),
        ("directory through it".into(), {
            let mut b = TarBuilder::new();
            b.symlink("evil", &outside).dir("evil/newdir", 0o755);
            b
        }),
        ("deep component".into(), {
            let mut b = TarBuilder::new();
            b.dir("a", 0o755)
                .symlink("a/evil", &outside)
                .file("a/evil/b/c", b"x");
            b
        }),
        ("hard link through it".into(), {
            let mut b = TarBuilder::new();
            b.file("f", b"x")
                .symlink("evil", &outside)
                .hardlink("evil/pwned", "f");
            b
        }),
        ("symlink through it".into(), {
            let mut b = TarBuilder::new();
            b.symlink("evil", &outside)
                .symlink("evil/pwned", "/etc/passwd");
            b
        }),
    ];
    for (what, mut builder) in cases {
        let err = fx.expect_refused(&builder.finish(), &options());
        match err {
            LayerError::ThroughSymlink { entry, component } => {
                assert!(entry.contains("evil/"), "{what}: {entry}");
                assert!(component.ends_with("evil"), "{what}: {component}");
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

#[test]
fn a_whiteout_through_a_symlink_is_refused() {
    let fx = Fixture::new();
    let outside = fx.outside().to_str().unwrap().to_owned();
    let tar = TarBuilder::new()
        .symlink("evil", &outside)
        .file("evil/.wh.secret", b"")
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::ThroughSymlink { .. }
    ));
}

#[test]
fn an_entry_replacing_a_symlink_does_not_follow_it() {
    let fx = Fixture::new();
    let secret = fx.outside().join("secret");
    let tar = TarBuilder::new()
        .symlink("evil", secret.to_str().unwrap())
        .file("evil", b"replaced")
        .symlink("dangling", secret.to_str().unwrap())
        .dir("dangling", 0o755)
        .finish();
    let before = fx.snapshot_outside();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    assert_eq!(fx.snapshot_outside(), before);
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert_eq!(std::fs::read(diff.join("evil")).unwrap(), b"replaced");
    assert!(
        std::fs::symlink_metadata(diff.join("dangling"))
            .unwrap()
            .is_dir()
    );
}

#[test]
fn hard_links_outside_the_layer_are_refused() {
    let fx = Fixture::new();
    let secret = fx.outside().join("secret");
    let secret = secret.to_str().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            TarBuilder::new()
                .hardlink("link", "../../outside/secret")
                .finish(),
            "leaves the layer root",
        ),
        (
            "absolute",
            TarBuilder::new().hardlink("link", secret).finish(),
            "is not an earlier entry of this layer",
        ),
        (
            "system file",
            TarBuilder::new().hardlink("link", "/etc/passwd").finish(),
            "is not an earlier entry of this layer",
        ),
        (
            "through a symlink",
            TarBuilder::new()
                .symlink("s", fx.outside().to_str().unwrap())
                .hardlink("link", "s/secret")
                .finish(),
            "is not an earlier entry of this layer",
        ),
        (
            "to a directory",
            TarBuilder::new()
                .dir("d", 0o755)
                .hardlink("link", "d")
                .finish(),
            "is a directory",
        ),
        (
            "to a later entry",
            TarBuilder::new()
                .hardlink("link", "later")
                .file("later", b"x")
                .finish(),
            "is not an earlier entry of this layer",
        ),
        (
            "into what it replaces",
            TarBuilder::new()
                .dir("d", 0o755)
                .file("d/f", b"x")
                .hardlink("d", "d/f")
                .finish(),
            "lies inside the entry it would replace",
        ),
    ];
    for (what, tar, want) in cases {
        match fx.expect_refused(&tar, &options()) {
            LayerError::BadHardLink { entry, reason, .. } => {
                assert!(entry == "link" || entry == "d", "{what}: {entry}");
                assert_eq!(reason, want, "{what}");
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        std::fs::metadata(fx.outside().join("secret"))
            .unwrap()
            .nlink(),
        1
    );

    // A hard link to a symlink links the symlink itself, never what it points to.
    let tar = TarBuilder::new()
        .symlink("s", secret)
        .hardlink("h", "s")
        .finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert_eq!(
        std::fs::read_link(diff.join("h")).unwrap().to_str(),
        Some(secret)
    );
    assert_eq!(
        std::fs::metadata(fx.outside().join("secret"))
            .unwrap()
            .nlink(),
        1
    );
}

use std::os::unix::fs::MetadataExt;

#[test]
fn symlink_loops_are_never_followed() {
    let fx = Fixture::new();
    let tar = TarBuilder::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"x")
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::ThroughSymlink { .. }
    ));
    let tar = TarBuilder::new()
        .symlink("loop", "loop")
        .dir("loop/sub", 0o755)
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::ThroughSymlink { .. }
    ));
    // The loop itself is just two symlinks: fine to store.
    let tar = TarBuilder::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert_eq!(
        std::fs::read_link(diff.join("a")).unwrap().to_str(),
        Some("b")
    );
}

#[test]
fn device_nodes_are_skipped_when_unprivileged() {
    let fx = Fixture::new();
    let mut builder = TarBuilder::new();
    let mut h = TarBuilder::header(EntryType::Char, b"dev/null", 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    builder.dir("dev", 0o755).raw(h, b"");
    let mut h = TarBuilder::header(EntryType::Block, b"dev/sda", 0, 0o660);
    h.set_device_major(8).unwrap();
    h.set_device_minor(0).unwrap();
    builder
        .raw(h, b"")
        .hardlink("dev/null2", "dev/null")
        .file("dev/after", b"still extracted");
    let tar = builder.finish();
    let layer = fx
        .store
        .register(None, &tar[..], &StageOptions::default().rootless(true))
        .unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert!(!diff.join("dev/null").exists());
    assert!(!diff.join("dev/null2").exists());
    assert!(!diff.join("dev/sda").exists());
    assert_eq!(
        std::fs::read(diff.join("dev/after")).unwrap(),
        b"still extracted"
    );
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
}

#[test]
fn a_file_over_a_directory_and_back_is_handled_safely() {
    let fx = Fixture::new();
    let tar = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/f", b"first")
        .file("d", b"now a file")
        .dir("d", 0o700)
        .file("d/g", b"second")
        .finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert!(!diff.join("d/f").exists());
    assert_eq!(std::fs::read(diff.join("d/g")).unwrap(), b"second");
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());

    let fx = Fixture::new();
    let tar = TarBuilder::new()
        .file("x", b"file")
        .file("x/y", b"under a file")
        .finish();
    match fx.expect_refused(&tar, &options()) {
        LayerError::ThroughNonDirectory { entry, component } => {
            assert_eq!(entry, "x/y");
            assert_eq!(component, "x");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn names_over_4_kib_are_refused() {
    let fx = Fixture::new();
    let long = "d/".repeat(2100) + "f";
    let tar = TarBuilder::new()
        .pax(&[("path", long.as_bytes())])
        .file("short", b"x")
        .finish();
    match fx.expect_refused(&tar, &options()) {
        LayerError::BadName {
            entry,
            reason: PathError::TooLong { len },
        } => {
            assert_eq!(len, long.len());
            assert!(entry.len() < 300, "the error names a bounded prefix");
        }
        other => panic!("unexpected {other:?}"),
    }
    let tar = TarBuilder::new()
        .gnu_long_name(long.as_bytes())
        .file("short", b"x")
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::BadName {
            reason: PathError::TooLong { .. },
            ..
        }
    ));
    let long_component = "c".repeat(300);
    let tar = TarBuilder::new()
        .gnu_long_name(long_component.as_bytes())
        .file("short", b"x")
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::BadName {
            reason: PathError::ComponentTooLong { len: 300 },
            ..
        }
    ));
    // A long-name entry larger than any name is refused before it is buffered.
    let mut b = TarBuilder::new();
    let h = TarBuilder::header(EntryType::GNULongName, b"././@LongLink", 4 << 20, 0o644);
    let tar = b.raw(h, &vec![b'a'; 4 << 20]).file("short", b"x").finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::MalformedArchive { .. }
    ));
    let long_link = "t".repeat(5000);
    let tar = TarBuilder::new()
        .pax(&[("linkpath", long_link.as_bytes())])
        .symlink("s", "x")
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::BadName {
            reason: PathError::TooLong { .. },
            ..
        }
    ));
}

#[test]
fn pax_path_overrides_are_sanitised() {
    let fx = Fixture::new();
    let tar = TarBuilder::new()
        .pax(&[("path", b"../../outside/secret")])
        .file("harmless", b"pwned")
        .finish();
    match fx.expect_refused(&tar, &options()) {
        LayerError::BadName {
            entry,
            reason: PathError::Escapes,
        } => assert_eq!(entry, "../../outside/secret"),
        other => panic!("unexpected {other:?}"),
    }
    let outside = fx.outside().to_str().unwrap().to_owned();
    let tar = TarBuilder::new()
        .symlink("evil", &outside)
        .pax(&[("path", b"evil/pwned")])
        .file("harmless", b"pwned")
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::ThroughSymlink { .. }
    ));
}

#[test]
fn pax_size_overrides_frame_the_data() {
    let fx = Fixture::new();
    // The header claims 0 bytes, PAX says 10: the 10 bytes are the file's, and the next
    // header is found after them.
    let mut b = TarBuilder::new();
    b.pax(&[("size", b"10")]);
    let h = TarBuilder::header(EntryType::Regular, b"grown", 0, 0o644);
    b.raw(h, b"0123456789");
    // The header claims 4096 bytes, PAX says 3.
    b.pax(&[("size", b"3")]);
    let h = TarBuilder::header(EntryType::Regular, b"shrunk", 4096, 0o644);
    b.raw(h, b"abc");
    b.file("after", b"next entry");
    let tar = b.finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert_eq!(std::fs::read(diff.join("grown")).unwrap(), b"0123456789");
    assert_eq!(std::fs::read(diff.join("shrunk")).unwrap(), b"abc");
    assert_eq!(std::fs::read(diff.join("after")).unwrap(), b"next entry");

    // A PAX size larger than the stream: refused as truncated, not a hang or a huge file.
    let fx = Fixture::new();
    let mut b = TarBuilder::new();
    b.pax(&[("size", b"1000000")]);
    let h = TarBuilder::header(EntryType::Regular, b"liar", 0, 0o644);
    let tar = b.raw(h, b"short").finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::MalformedArchive { .. }
    ));
    // A PAX size that is not a number.
    let tar = TarBuilder::new()
        .pax(&[("size", b"-5")])
        .file("x", b"")
        .finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::MalformedArchive { .. }
    ));
}

#[test]
fn decompression_bombs_hit_the_limit() {
    let fx = Fixture::new();
    let limit = 1 << 20;
    let small = StageOptions::default().max_bytes(limit);
    // 64 MiB of zeros in one file entry, gzip-compressed to a few tens of KiB.
    let zeros = vec![0u8; 64 << 20];
    let mut b = TarBuilder::new();
    let h = TarBuilder::header(EntryType::Regular, b"bomb", zeros.len() as u64, 0o644);
    let tar = b.raw(h, &zeros).finish();
    let gz = gzip(&tar);
    assert!(gz.len() < tar.len() / 100);
    let before = fx.snapshot_outside();
    let err = fx
        .store
        .register(None, GzDecoder::new(&gz[..]), &small)
        .unwrap_err();
    assert!(
        matches!(err, LayerError::LimitExceeded { limit: l, what: "bytes" } if l == limit),
        "{err:?}"
    );
    assert!(err.to_string().contains("extraction limit"));
    assert_eq!(fx.snapshot_outside(), before);
    fx.assert_store_empty();

    // An endless run of zeros after the end-of-archive blocks is bounded too.
    let mut stream = TarBuilder::new().file("tiny", b"x").finish();
    stream.extend(std::iter::repeat_n(0u8, 32 << 20));
    let err = fx
        .store
        .register(None, GzDecoder::new(&gzip(&stream)[..]), &small)
        .unwrap_err();
    assert!(matches!(err, LayerError::LimitExceeded { .. }), "{err:?}");
    fx.assert_store_empty();

    // A sparse file declaring a terabyte of holes counts with its full size.
    let mut b = TarBuilder::new();
    b.pax(&[
        ("GNU.sparse.major", b"0"),
        ("GNU.sparse.minor", b"1"),
        ("GNU.sparse.map", b"0,1"),
        ("GNU.sparse.size", b"1099511627776"),
        ("GNU.sparse.name", b"holes"),
    ]);
    let h = TarBuilder::header(EntryType::Regular, b"GNUSparseFile.0/holes", 1, 0o644);
    let tar = b.raw(h, b"x").finish();
    let err = fx.expect_refused(&tar, &small);
    assert!(matches!(err, LayerError::LimitExceeded { .. }), "{err:?}");

    // Too many entries.
    let mut b = TarBuilder::new();
    for i in 0..20 {
        b.file(&format!("f{i}"), b"");
    }
    let err = fx.expect_refused(&b.finish(), &StageOptions::default().max_entries(10));
    assert!(
        matches!(
            err,
            LayerError::LimitExceeded {
                limit: 10,
                what: "entries"
            }
        ),
        "{err:?}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn malformed_archives_are_refused() {
    let fx = Fixture::new();
    // Bad checksum.
    let mut tar = TarBuilder::new().file("f", b"data").finish();
    tar[0] ^= 1;
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::MalformedArchive { .. }
    ));
    // Truncated in the middle of a file.
    let tar = TarBuilder::new().file("f", &[7u8; 2000]).finish();
    assert!(matches!(
        fx.expect_refused(&tar[..1200], &options()),
        LayerError::MalformedArchive { .. }
    ));
    // Truncated in the middle of a header.
    assert!(matches!(
        fx.expect_refused(&tar[..100], &options()),
        LayerError::MalformedArchive { .. }
    ));
    // A single zero block followed by more entries.
    let mut b = TarBuilder::new();
    b.file("a", b"a").bytes(&[0u8; 512]);
    let tar = b.file("hidden", b"b").finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::MalformedArchive { .. }
    ));
    // A PAX header with no entry after it.
    let mut b = TarBuilder::new();
    let tar = b.pax(&[("path", b"x")]).finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::MalformedArchive { .. }
    ));
    // Unsupported entry types.
    let mut b = TarBuilder::new();
    let h = TarBuilder::header(EntryType::new(b'V'), b"volume", 0, 0o644);
    let tar = b.raw(h, b"").finish();
    match fx.expect_refused(&tar, &options()) {
        LayerError::UnsupportedEntryType { entry, type_flag } => {
            assert_eq!(entry, "volume");
            assert_eq!(type_flag, 'V');
        }
        other => panic!("unexpected {other:?}"),
    }
    // A non-directory standing for the root.
    let tar = TarBuilder::new().file("./", b"x").finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::InvalidEntry { .. }
    ));
    // Invalid whiteouts.
    let tar = TarBuilder::new().file("a/.wh..", b"").finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::InvalidEntry { .. }
    ));
    // An empty symlink target.
    let tar = TarBuilder::new().symlink("s", "").finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        LayerError::InvalidEntry { .. }
    ));
}

#[test]
fn a_failing_reader_is_a_retryable_source_error() {
    struct Failing(Vec<u8>, usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 >= self.0.len() / 2 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "peer reset",
                ));
            }
            let n = buf.len().min(self.0.len() / 2 - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let fx = Fixture::new();
    let tar = TarBuilder::new()
        .file("a", &[1u8; 5000])
        .file("b", &[2u8; 5000])
        .finish();
    let err = fx
        .store
        .register(None, Failing(tar, 0), &options())
        .unwrap_err();
    assert!(matches!(err, LayerError::Source { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.is_invalid_layer());
    fx.assert_store_empty();
}

mod random_archives {
    use proptest::prelude::*;

    use super::super::{Fixture, TarBuilder, options};

    #[derive(Debug, Clone)]
    enum Op {
        File(&'static str),
        Dir(&'static str),
        Symlink(&'static str, usize),
        HardLink(&'static str, &'static str),
        Whiteout(&'static str),
    }

    const NAMES: &[&str] = &[
        "a", "b", "a/b", "a/b/c", "s", "s/x", "s/s", "/abs", "/a/b", "./a", "l", "l/x",
    ];
    const ESCAPING: &[&str] = &["../x", "a/../../x"];
    /// Symlink targets; index 0 is replaced by the fixture's outside directory.
    const TARGETS: &[&str] = &[
        "<outside>",
        "..",
        "../..",
        "/",
        "a",
        "a/b",
        "s",
        "l",
        "/etc",
    ];

    fn name() -> impl Strategy<Value = &'static str> {
        prop_oneof![12 => proptest::sample::select(NAMES), 1 => proptest::sample::select(ESCAPING)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => name().prop_map(Op::File),
            3 => name().prop_map(Op::Dir),
            3 => (name(), 0..TARGETS.len()).prop_map(|(n, t)| Op::Symlink(n, t)),
            1 => (name(), name()).prop_map(|(n, t)| Op::HardLink(n, t)),
            1 => name().prop_map(Op::Whiteout),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Whatever the archive, nothing outside the store changes; a registered layer verifies
        /// and unpacks, a refused one leaves nothing behind.
        #[test]
        fn random_archives_never_write_outside(ops in proptest::collection::vec(op(), 1..14)) {
            let fx = Fixture::new();
            let outside = fx.outside().to_str().unwrap().to_owned();
            let mut b = TarBuilder::new();
            for op in &ops {
                match op {
                    Op::File(n) => b.file(n, b"data"),
                    Op::Dir(n) => b.dir(n, 0o755),
                    Op::Symlink(n, t) => b.symlink(n, if *t == 0 { &outside } else { TARGETS[*t] }),
                    Op::HardLink(n, t) => b.hardlink(n, t),
                    Op::Whiteout(n) => {
                        let (dir, base) = n.rsplit_once('/').unwrap_or(("", n));
                        let name = if dir.is_empty() { format!(".wh.{base}") } else { format!("{dir}/.wh.{base}") };
                        b.file(&name, b"")
                    }
                };
            }
            let tar = b.finish();
            let before = fx.snapshot_outside();
            match fx.store.register(None, &tar[..], &options()) {
                Ok(layer) => {
                    let report = fx.store.verify(&layer.chain_id).unwrap();
                    prop_assert!(report.is_ok(), "{:?}", report.problems);
                    let dest = fx.tmp.path().join("outside/../rootfs");
                    fx.store.unpack(std::slice::from_ref(&layer), &dest, &crate::layer::UnpackOptions::default()).unwrap();
                    std::fs::remove_dir_all(&dest).unwrap();
                    prop_assert_eq!(fx.snapshot_outside(), before);
                    fx.store.remove(&layer.chain_id).unwrap();
                    fx.assert_store_empty();
                }
                Err(err) => {
                    prop_assert!(err.is_invalid_layer(), "{err:?}");
                    prop_assert_eq!(fx.snapshot_outside(), before);
                    fx.assert_store_empty();
                }
            }
        }
    }
}
