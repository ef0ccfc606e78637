//! What a well-formed layer extracts to.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;

use super::{Fixture, MTIME, TarBuilder, options, set_raw_name};
use crate::layer::StageOptions;

fn meta(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap()
}

#[test]
fn files_dirs_symlinks_hard_links_modes_and_mtimes_are_extracted() {
    let fx = Fixture::new();
    let mut b = TarBuilder::new();
    b.dir("./", 0o755)
        .dir("etc/", 0o750)
        .file_mode("etc/passwd", b"root:x:0:0\n", 0o644)
        .file_mode("etc/shadow", b"root:*:1:0\n", 0o000)
        .file_mode("bin/tool", b"#!/bin/sh\n", 0o755)
        .hardlink("bin/tool-link", "bin/tool")
        .hardlink("bin/tool-link2", "/bin/tool")
        .symlink("lib", "usr/lib")
        .symlink("abs", "/etc/passwd");
    let mut h = TarBuilder::header(EntryType::Regular, b"old-style-file", 3, 0o600);
    h.as_old_mut().linkflag[0] = 0;
    b.raw(h, b"old");
    let mut h = TarBuilder::header(EntryType::Regular, b"old-style-dir/", 0, 0o711);
    h.as_old_mut().linkflag[0] = 0;
    b.raw(h, b"");
    let mut h = TarBuilder::header(EntryType::Directory, b"timed", 0, 0o755);
    h.set_mtime(1_234_567_890);
    b.raw(h, b"");
    b.pax(&[("mtime", b"1500000000.123456789")])
        .file("precise", b"p");
    let tar = b.finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();

    assert_eq!(
        std::fs::read(diff.join("etc/passwd")).unwrap(),
        b"root:x:0:0\n"
    );
    assert_eq!(meta(&diff.join("etc")).mode() & 0o7777, 0o750);
    assert_eq!(meta(&diff.join("etc/passwd")).mode() & 0o7777, 0o644);
    let privileged = !options().rootless;
    let shadow_mode = meta(&diff.join("etc/shadow")).mode() & 0o7777;
    assert_eq!(shadow_mode, if privileged { 0o000 } else { 0o600 });
    let tool = meta(&diff.join("bin/tool"));
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!(tool.nlink(), 3);
    assert_eq!(meta(&diff.join("bin/tool-link")).ino(), tool.ino());
    assert_eq!(meta(&diff.join("bin/tool-link2")).ino(), tool.ino());
    assert_eq!(
        meta(&diff.join("bin")).mode() & 0o7777,
        0o755,
        "implicit directories are 0755"
    );
    assert_eq!(
        std::fs::read_link(diff.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    assert_eq!(
        std::fs::read_link(diff.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(std::fs::read(diff.join("old-style-file")).unwrap(), b"old");
    assert!(meta(&diff.join("old-style-dir")).is_dir());
    assert_eq!(meta(&diff.join("old-style-dir")).mode() & 0o7777, 0o711);
    assert_eq!(meta(&diff.join("etc/passwd")).mtime(), MTIME as i64);
    assert_eq!(
        meta(&diff.join("abs")).mtime(),
        MTIME as i64,
        "symlink times are set on the link"
    );
    assert_eq!(
        meta(&diff.join("timed")).mtime(),
        1_234_567_890,
        "directory mtimes survive their children"
    );
    assert_eq!(meta(&diff.join("etc")).mtime(), MTIME as i64);
    let precise = meta(&diff.join("precise"));
    assert_eq!(
        (precise.mtime(), precise.mtime_nsec()),
        (1_500_000_000, 123_456_789)
    );
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
}

#[test]
fn gnu_long_names_and_pax_names_are_used() {
    let fx = Fixture::new();
    let long = format!("{}/{}", "d".repeat(150), "f".repeat(120));
    let long_target = format!("{}/target", "t".repeat(150));
    let mut b = TarBuilder::new();
    b.gnu_long_name(long.as_bytes())
        .file("truncated-name", b"gnu");
    b.pax(&[
        ("path", b"pax/name with spaces"),
        ("linkpath", long_target.as_bytes()),
    ])
    .symlink("short", "ignored");
    b.pax(&[
        ("path", "pax/ünïcödé".as_bytes()),
        ("uid", b"1234"),
        ("gid", b"5678"),
    ])
    .file("x", b"unicode");
    let tar = b.finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert_eq!(std::fs::read(diff.join(&long)).unwrap(), b"gnu");
    assert_eq!(
        std::fs::read_link(diff.join("pax/name with spaces")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(std::fs::read(diff.join("pax/ünïcödé")).unwrap(), b"unicode");
    if !options().rootless {
        let m = meta(&diff.join("pax/ünïcödé"));
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
}

#[test]
fn user_xattrs_are_applied_and_privileged_ones_only_when_privileged() {
    let fx = Fixture::new();
    let mut b = TarBuilder::new();
    b.pax(&[
        ("SCHILY.xattr.user.comment", b"hello\nworld"),
        ("SCHILY.xattr.trusted.secret", b"t"),
    ])
    .file("f", b"x");
    let tar = b.finish();
    let layer = fx
        .store
        .register(None, &tar[..], &StageOptions::default().rootless(true))
        .unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    let file = std::fs::File::open(diff.join("f")).unwrap();
    let get = |name: &str| {
        let c = crate::layer::sys::cstring(name.as_bytes()).unwrap();
        crate::layer::sys::get_xattr_fd(std::os::fd::AsFd::as_fd(&file), &c)
    };
    match get("user.comment") {
        Ok(v) => assert_eq!(v.as_deref(), Some(&b"hello\nworld"[..])),
        // Filesystems without user xattrs (tmpfs on old kernels): nothing to check.
        Err(e) => eprintln!("user xattrs unsupported here: {e}"),
    }
    assert_eq!(
        get("trusted.secret").unwrap_or(None),
        None,
        "trusted.* needs privileges"
    );
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
}

#[test]
fn setuid_bits_are_kept_only_when_privileged() {
    let fx = Fixture::new();
    let tar = TarBuilder::new()
        .file_mode("su", b"binary", 0o4755)
        .dir("tmp", 0o1777)
        .finish();
    let rootless = fx
        .store
        .register(None, &tar[..], &StageOptions::default().rootless(true))
        .unwrap();
    let diff = fx.store.diff_dir(&rootless.chain_id).unwrap();
    assert_eq!(meta(&diff.join("su")).mode() & 0o7777, 0o755);
    assert_eq!(
        meta(&diff.join("tmp")).mode() & 0o7777,
        0o1777,
        "sticky is harmless and kept"
    );
    if crate::layer::sys::is_root() {
        let fx = Fixture::new();
        let layer = fx
            .store
            .register(None, &tar[..], &StageOptions::default().rootless(false))
            .unwrap();
        let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
        assert_eq!(meta(&diff.join("su")).mode() & 0o7777, 0o4755);
        assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
    }
}

#[test]
fn device_nodes_and_fifos_are_created_when_privileged() {
    let fx = Fixture::new();
    let mut b = TarBuilder::new();
    let mut h = TarBuilder::header(EntryType::Char, b"null", 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.raw(h, b"");
    let h = TarBuilder::header(EntryType::Fifo, b"pipe", 0, 0o640);
    b.raw(h, b"");
    let tar = b.finish();
    let privileged = crate::layer::sys::is_root();
    let layer = fx
        .store
        .register(
            None,
            &tar[..],
            &StageOptions::default().rootless(!privileged),
        )
        .unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    let pipe = meta(&diff.join("pipe"));
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o640);
    match std::fs::symlink_metadata(diff.join("null")) {
        Ok(null) => {
            assert!(privileged);
            assert!(null.file_type().is_char_device());
            assert_eq!(null.rdev(), libc::makedev(1, 3));
            assert_eq!(null.mode() & 0o7777, 0o666);
        }
        // Root without CAP_MKNOD (some containers): skipped with a warning.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
    }
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
}

fn sparse_file_content(size: usize, fragments: &[(usize, &[u8])]) -> Vec<u8> {
    let mut content = vec![0u8; size];
    for (offset, data) in fragments {
        content[*offset..offset + data.len()].copy_from_slice(data);
    }
    content
}

#[test]
fn old_gnu_sparse_files_are_extracted_with_holes() {
    let fx = Fixture::new();
    let src = fx.tmp.path().join("sparse-src");
    let size = 8 << 20;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(size as u64).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[0xAB; 4096]).unwrap();
        f.seek(SeekFrom::Start(6 << 20)).unwrap();
        f.write_all(&[0xCD; 8192]).unwrap();
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.sparse(true);
    builder
        .append_path_with_name(&src, "data/sparse.img")
        .unwrap();
    let tar = builder.into_inner().unwrap();
    assert_eq!(
        tar[156], b'S',
        "the archive must hold a GNU sparse entry for this test to mean anything"
    );
    assert!(tar.len() < 64 * 1024);
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let out = fx
        .store
        .diff_dir(&layer.chain_id)
        .unwrap()
        .join("data/sparse.img");
    let want = sparse_file_content(size, &[(1 << 20, &[0xAB; 4096]), (6 << 20, &[0xCD; 8192])]);
    assert!(std::fs::read(&out).unwrap() == want);
    assert!(meta(&out).blocks() * 512 < (1 << 20), "holes stay holes");
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
}

#[test]
fn pax_sparse_files_of_format_0_1_and_1_0_are_extracted() {
    let fx = Fixture::new();
    let size = 3 << 20;
    let mut b = TarBuilder::new();
    // Format 0.1: map in a PAX record.
    b.pax(&[
        ("GNU.sparse.major", b"0"),
        ("GNU.sparse.minor", b"1"),
        ("GNU.sparse.name", b"sparse/zero-one"),
        ("GNU.sparse.size", size.to_string().as_bytes()),
        ("GNU.sparse.map", b"0,5,2097152,5"),
    ]);
    let h = TarBuilder::header(EntryType::Regular, b"GNUSparseFile.0/zero-one", 10, 0o644);
    b.raw(h, b"helloworld");
    // Format 0.0: repeated offset/numbytes records.
    b.pax(&[
        ("GNU.sparse.size", size.to_string().as_bytes()),
        ("GNU.sparse.numblocks", b"2"),
        ("GNU.sparse.offset", b"100"),
        ("GNU.sparse.numbytes", b"3"),
        ("GNU.sparse.offset", b"3000000"),
        ("GNU.sparse.numbytes", b"3"),
        ("GNU.sparse.name", b"sparse/zero-zero"),
    ]);
    let h = TarBuilder::header(EntryType::Regular, b"GNUSparseFile.0/zero-zero", 6, 0o644);
    b.raw(h, b"abcdef");
    // Format 1.0: map at the start of the data, padded to a block.
    let mut data = b"2\n0\n5\n2097152\n5\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"HELLOWORLD");
    b.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"sparse/one-zero"),
        ("GNU.sparse.realsize", size.to_string().as_bytes()),
    ]);
    let h = TarBuilder::header(
        EntryType::Regular,
        b"GNUSparseFile.0/one-zero",
        data.len() as u64,
        0o644,
    );
    b.raw(h, &data);
    b.file("after", b"framing intact");
    let tar = b.finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    let read = |p: &str| std::fs::read(diff.join(p)).unwrap();
    assert!(
        read("sparse/zero-one") == sparse_file_content(size, &[(0, b"hello"), (2 << 20, b"world")])
    );
    assert!(
        read("sparse/zero-zero")
            == sparse_file_content(size, &[(100, b"abc"), (3_000_000, b"def")])
    );
    assert!(
        read("sparse/one-zero") == sparse_file_content(size, &[(0, b"HELLO"), (2 << 20, b"WORLD")])
    );
    assert_eq!(read("after"), b"framing intact");
    assert!(!diff.join("GNUSparseFile.0").exists());
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());
}

#[test]
fn inconsistent_sparse_maps_are_refused() {
    let fx = Fixture::new();
    let mut b = TarBuilder::new();
    b.pax(&[
        ("GNU.sparse.size", b"100"),
        ("GNU.sparse.map", b"50,10,40,10"),
        ("GNU.sparse.name", b"s"),
    ]);
    let h = TarBuilder::header(EntryType::Regular, b"s", 20, 0o644);
    let tar = b.raw(h, &[1u8; 20]).finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        crate::layer::LayerError::MalformedArchive { .. }
    ));
    let mut b = TarBuilder::new();
    b.pax(&[("GNU.sparse.major", b"7"), ("GNU.sparse.minor", b"0")]);
    let h = TarBuilder::header(EntryType::Regular, b"s", 1, 0o644);
    let tar = b.raw(h, b"x").finish();
    assert!(matches!(
        fx.expect_refused(&tar, &options()),
        crate::layer::LayerError::MalformedArchive { .. }
    ));
}

#[test]
fn ustar_prefix_names_are_joined() {
    let fx = Fixture::new();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(EntryType::Regular);
    h.set_size(2);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    set_raw_name(&mut h, b"file.txt");
    let prefix = "p".repeat(120);
    h.as_ustar_mut().unwrap().prefix[..prefix.len()].copy_from_slice(prefix.as_bytes());
    let tar = TarBuilder::new().raw(h, b"ok").finish();
    let layer = fx.store.register(None, &tar[..], &options()).unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    assert_eq!(
        std::fs::read(diff.join(&prefix).join("file.txt")).unwrap(),
        b"ok"
    );
}

#[test]
fn owners_are_applied_when_privileged() {
    if !crate::layer::sys::is_root() {
        eprintln!("SKIPPED owners_are_applied_when_privileged: needs root");
        return;
    }
    let fx = Fixture::new();
    let owned = |kind, name: &[u8], uid, gid| {
        let mut h = TarBuilder::header(kind, name, 0, 0o755);
        h.set_uid(uid);
        h.set_gid(gid);
        h
    };
    let mut b = TarBuilder::new();
    b.raw(owned(EntryType::Directory, b"d", 1000, 1000), b"");
    b.raw(owned(EntryType::Directory, b"d", 0, 0), b"");
    b.raw(owned(EntryType::Directory, b"e", 0, 0), b"");
    b.raw(owned(EntryType::Directory, b"e", 33, 44), b"");
    let mut h = owned(EntryType::Symlink, b"e/link", 55, 66);
    h.set_link_name_literal(b"target").unwrap();
    b.raw(h, b"");
    let mut h = owned(EntryType::Regular, b"e/file", 77, 88);
    h.set_size(1);
    b.raw(h, b"f");
    let tar = b.finish();
    let layer = fx
        .store
        .register(None, &tar[..], &StageOptions::default().rootless(false))
        .unwrap();
    let diff = fx.store.diff_dir(&layer.chain_id).unwrap();
    let ids = |p: &str| {
        let m = meta(&diff.join(p));
        (m.uid(), m.gid())
    };
    assert_eq!(
        ids("d"),
        (0, 0),
        "a merged directory takes the later entry's owner"
    );
    assert_eq!(ids("e"), (33, 44));
    assert_eq!(ids("e/link"), (55, 66));
    assert_eq!(ids("e/file"), (77, 88));
    assert!(fx.store.verify(&layer.chain_id).unwrap().is_ok());

    let dest = fx.tmp.path().join("rootfs");
    let unpack = crate::layer::UnpackOptions::default().rootless(false);
    fx.store
        .unpack(std::slice::from_ref(&layer), &dest, &unpack)
        .unwrap();
    let ids = |p: &str| {
        let m = meta(&dest.join(p));
        (m.uid(), m.gid())
    };
    assert_eq!(ids("d"), (0, 0));
    assert_eq!(ids("e"), (33, 44));
    assert_eq!(ids("e/link"), (55, 66));
    assert_eq!(ids("e/file"), (77, 88));
}
