//! Applying image layers to a root filesystem, safely. Layers come from registries, so every
//! entry is treated as hostile:
//!
//! - paths are normalised and must stay inside the root: no `..` component may climb out, and
//!   absolute paths are taken relative to the root;
//! - nothing is ever written through a symlink: every existing ancestor of an entry is checked
//!   with `lstat`, so a layer that plants `etc -> /etc` and then writes `etc/passwd` is refused
//!   instead of touching the host;
//! - hard links must point at a file inside the root that the layers created, again without
//!   passing through symlinks;
//! - device nodes are refused (all of them, overlay-style 0:0 whiteouts too: OCI layers
//!   write whiteouts as `.wh.` files); FIFOs are allowed;
//! - whiteouts (`.wh.<name>`) remove what lower layers put there, where `<name>` must be one
//!   plain file name (`.wh.`, `.wh..`, `.wh...` are refused: they would name the directory
//!   itself or its parent); opaque markers (`.wh..wh..opq`) empty the directory of
//!   lower-layer content; other `.wh..wh.` names (aufs metadata) are skipped;
//! - a layer may hold at most [`Limits::max_entries`] entries and unpack to at most
//!   [`Limits::max_bytes`] bytes of file content (a gzip bomb stops at the limit);
//! - modes are kept, and ownership too when running as root.
//!
//! Layers are applied in order into one directory (the image's flattened root), which the
//! container runtime then mounts read-only as the lower layer of an overlay.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a layer was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?} is refused: {reason}")]
    Refused { path: String, reason: &'static str },
    #[error("layer exceeds the limit of {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn refused(path: &Path, reason: &'static str) -> UnpackError {
    UnpackError::Refused {
        path: path.display().to_string(),
        reason,
    }
}

/// The entry's path relative to the root, with `.` dropped; `None` if it climbs out.
pub fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Refuse if any existing ancestor of `rel` (inside `root`) is not a real directory.
fn check_ancestors(root: &Path, rel: &Path) -> Result<(), UnpackError> {
    let mut cur = root.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(rel, "a parent directory is a symlink"));
            }
            Ok(m) if !m.is_dir() => {
                // A file where a directory must be: replace it, as later layers may.
                fs::remove_file(&cur).map_err(io_err("remove", &cur))?;
                fs::create_dir(&cur).map_err(io_err("mkdir", &cur))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err("mkdir", &cur))?;
            }
            Err(e) => return Err(io_err("stat", &cur)(e)),
        }
    }
    Ok(())
}

/// Remove whatever is at `p` (file, link or tree) without following links.
fn remove_any(p: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(io_err("remove", p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", p)(e)),
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// How much one layer may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file content.
    pub max_bytes: u64,
    /// Entries of any kind (files, directories, links, whiteouts, skipped ones).
    pub max_entries: u64,
}

impl Default for Limits {
    /// Generous: 16 GiB and 1,000,000 entries (large real images stay far below both).
    fn default() -> Limits {
        Limits {
            max_bytes: 16 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// Apply one layer (an uncompressed or gzipped tar stream) onto `root`, within the
/// default [`Limits`].
pub fn apply_layer(root: &Path, layer: impl Read) -> Result<LayerStats, UnpackError> {
    apply_layer_within(root, layer, &Limits::default())
}

/// Apply one layer onto `root`, refusing it once it passes `limits`.
pub fn apply_layer_within(
    root: &Path,
    layer: impl Read,
    limits: &Limits,
) -> Result<LayerStats, UnpackError> {
    let mut buf = io::BufReader::with_capacity(1 << 20, layer);
    // Sniff gzip.
    let gz = {
        use io::BufRead;
        let head = buf.fill_buf().map_err(io_err("read", root))?;
        head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let mut archive = tar::Archive::new(reader);
    let as_root = is_root();
    let mut stats = LayerStats::default();
    // Directories made opaque in this layer, and paths this layer wrote (an opaque marker
    // must not remove siblings from the same layer that came before it).
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(io_err("read layer", root))?;
    let mut count = 0u64;
    for entry in entries {
        let mut e = entry.map_err(io_err("read layer", root))?;
        count += 1;
        if count > limits.max_entries {
            return Err(UnpackError::TooLarge {
                what: "entries",
                limit: limits.max_entries,
            });
        }
        let raw = e.path().map_err(io_err("read layer", root))?.into_owned();
        let rel = normalize(&raw).ok_or_else(|| refused(&raw, "path climbs out of the root"))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        check_ancestors(root, &rel)?;
        let target = root.join(&rel);
        // Whiteouts.
        if name == ".wh..wh..opq" {
            let dir = target.parent().unwrap_or(root).to_path_buf();
            if let Ok(rd) = fs::read_dir(&dir) {
                for child in rd.flatten() {
                    let cp = child.path();
                    let crel = cp.strip_prefix(root).unwrap_or(&cp).to_path_buf();
                    if !written.contains(&crel) {
                        remove_any(&cp)?;
                    }
                }
            }
            stats.whiteouts += 1;
            continue;
        }
        if name.starts_with(".wh..wh.") {
            // aufs metadata (`.wh..wh.plnk`, …): nothing to apply.
            stats.skipped += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            // One plain name beside the marker; `.`, `..` or nothing would name the
            // directory itself or its parent (the root's parent, for a top-level marker).
            // (`name` is one path component, so it holds no `/`.)
            if matches!(hidden, "" | "." | "..") {
                return Err(refused(&rel, "whiteout does not name a file"));
            }
            let victim = target.with_file_name(hidden);
            remove_any(&victim)?;
            stats.whiteouts += 1;
            continue;
        }
        let header = e.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        // Replace what a lower layer left, unless both are directories.
        if !kind.is_dir() || fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
            remove_any(&target)?;
        }
        match kind {
            tar::EntryType::Directory => {
                if !target.exists() {
                    fs::create_dir(&target).map_err(io_err("mkdir", &target))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let too_large = UnpackError::TooLarge {
                    what: "bytes",
                    limit: limits.max_bytes,
                };
                let left = limits.max_bytes.saturating_sub(stats.bytes);
                if e.size() > left {
                    return Err(too_large);
                }
                let mut f = fs::File::create(&target).map_err(io_err("create", &target))?;
                // Bounded whatever the header said (sparse entries expand).
                let n = io::copy(&mut (&mut e).take(left.saturating_add(1)), &mut f)
                    .map_err(io_err("write", &target))?;
                if n > left {
                    return Err(too_large);
                }
                stats.bytes += n;
                stats.files += 1;
            }
            tar::EntryType::Symlink => {
                let dest = e
                    .link_name()
                    .map_err(io_err("read layer", root))?
                    .ok_or_else(|| refused(&rel, "symlink without a target"))?;
                // The link itself may point anywhere (it is resolved inside the container's
                // root at run time); it is never followed here.
                std::os::unix::fs::symlink(&dest, &target).map_err(io_err("symlink", &target))?;
                stats.links += 1;
            }
            tar::EntryType::Link => {
                let dest = e
                    .link_name()
                    .map_err(io_err("read layer", root))?
                    .ok_or_else(|| refused(&rel, "hard link without a target"))?;
                let drel = normalize(&dest)
                    .ok_or_else(|| refused(&rel, "hard link target climbs out of the root"))?;
                check_ancestors(root, &drel)?;
                let src = root.join(&drel);
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => return Err(refused(&rel, "hard link target is not a regular file")),
                    Err(_) => return Err(refused(&rel, "hard link target does not exist")),
                }
                fs::hard_link(&src, &target).map_err(io_err("link", &target))?;
                stats.links += 1;
            }
            tar::EntryType::Fifo => {
                let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
                    .map_err(|_| refused(&rel, "path contains a NUL byte"))?;
                // SAFETY: `c` is a valid NUL-terminated path; mkfifo only reads it.
                let r = unsafe { libc_mkfifo(c.as_ptr(), 0o600) };
                if r != 0 {
                    return Err(io_err("mkfifo", &target)(io::Error::last_os_error()));
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(
                    &rel,
                    "device nodes are not allowed in image layers",
                ));
            }
            _ => {
                stats.skipped += 1;
                continue;
            }
        }
        written.insert(rel.clone());
        if kind != tar::EntryType::Symlink {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", &target))?;
        }
        if as_root {
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                .map_err(io_err("chown", &target))?;
            // chown clears set-id bits: put the mode back.
            if kind != tar::EntryType::Symlink && mode & 0o6000 != 0 {
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", &target))?;
            }
        }
    }
    Ok(stats)
}

unsafe extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

/// What applying a layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LayerStats {
    pub files: u64,
    pub bytes: u64,
    pub links: u64,
    pub whiteouts: u64,
    pub skipped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Dev(&'a str),
    }

    fn layer(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(0);
            match e {
                E::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::File(p, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    // Bypass the builder's own path checks: layers from registries may
                    // contain anything.
                    set_raw_path(&mut h, p);
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                }
                E::Sym(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::Hard(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    set_raw_path(&mut h, p);
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
                E::Dev(p) => {
                    h.set_entry_type(tar::EntryType::Char);
                    set_raw_path(&mut h, p);
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn set_raw_path(h: &mut tar::Header, p: &str) {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name = [0; 100];
        gnu.name[..p.len()].copy_from_slice(p.as_bytes());
    }

    #[test]
    fn layers_stack_with_whiteouts() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        apply_layer(
            r,
            &layer(&[
                E::Dir("etc"),
                E::File("etc/a", b"a"),
                E::File("etc/b", b"b"),
                E::Dir("var"),
                E::File("var/x", b"x"),
                E::Sym("bin", "usr/bin"),
                E::Hard("etc/a2", "etc/a"),
            ])[..],
        )
        .unwrap();
        assert_eq!(fs::read(r.join("etc/a2")).unwrap(), b"a");
        apply_layer(
            r,
            &layer(&[
                E::File("etc/.wh.a", b""),
                E::Dir("var"),
                E::File("var/.wh..wh..opq", b""),
                E::File("var/y", b"y"),
                E::File("etc/b", b"B"),
            ])[..],
        )
        .unwrap();
        assert!(!r.join("etc/a").exists());
        assert_eq!(fs::read(r.join("etc/b")).unwrap(), b"B");
        assert!(
            !r.join("var/x").exists(),
            "opaque dir hides the lower layer"
        );
        assert_eq!(fs::read(r.join("var/y")).unwrap(), b"y");
        assert_eq!(fs::read_link(r.join("bin")).unwrap(), Path::new("usr/bin"));
    }

    #[test]
    fn escapes_are_refused_and_the_host_is_untouched() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"original").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path().join("rootfs");
        fs::create_dir(&r).unwrap();
        let rel_out = format!(
            "../{}",
            outside.path().file_name().unwrap().to_string_lossy()
        );
        let dotdot = format!("{rel_out}/victim");
        let cases: Vec<Vec<u8>> = vec![
            layer(&[E::File(&dotdot, b"pwned")]),
            // A symlink to a host directory, then a write through it.
            layer(&[
                E::Sym("evil", outside.path().to_str().unwrap()),
                E::File("evil/victim", b"pwned"),
            ]),
            // Relative symlink climbing out, then a write through it.
            layer(&[E::Sym("up", &rel_out), E::File("up/victim", b"pwned")]),
            // Hard link to a host file.
            layer(&[E::Hard("h", victim.to_str().unwrap())]),
            layer(&[E::Hard("h2", &dotdot)]),
            layer(&[E::Dev("dev/null2")]),
        ];
        for (i, l) in cases.iter().enumerate() {
            let err = apply_layer(&r, &l[..]).expect_err(&format!("case {i} must be refused"));
            assert!(
                matches!(err, UnpackError::Refused { .. }),
                "case {i}: {err}"
            );
            assert_eq!(
                fs::read(&victim).unwrap(),
                b"original",
                "case {i} touched the host"
            );
        }
        assert!(normalize(Path::new("/a/../../b")).is_none());
        assert_eq!(
            normalize(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("a/c")
        );
    }

    #[test]
    fn whiteouts_naming_the_root_or_its_parent_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let sibling = outer.path().join("sibling");
        fs::write(&sibling, b"keep").unwrap();
        let r = outer.path().join("rootfs");
        fs::create_dir(&r).unwrap();
        apply_layer(&r, &layer(&[E::Dir("a"), E::File("a/keep", b"k")])[..]).unwrap();
        for bad in [".wh...", "a/.wh...", ".wh..", "a/.wh..", ".wh.", "a/.wh."] {
            let err = apply_layer(&r, &layer(&[E::File(bad, b"")])[..])
                .expect_err(&format!("{bad} must be refused"));
            assert!(matches!(err, UnpackError::Refused { .. }), "{bad}: {err}");
            assert_eq!(
                fs::read(&sibling).unwrap(),
                b"keep",
                "{bad} touched the host"
            );
            assert_eq!(
                fs::read(r.join("a/keep")).unwrap(),
                b"k",
                "{bad} emptied the root"
            );
        }
        // A plain name made of dots is still a file name; aufs metadata is skipped.
        fs::write(r.join("..."), b"dots").unwrap();
        let st = apply_layer(
            &r,
            &layer(&[E::File(".wh....", b""), E::File(".wh..wh.plnk", b"")])[..],
        )
        .unwrap();
        assert!(!r.join("...").exists());
        assert_eq!((st.whiteouts, st.skipped), (1, 1));
    }

    #[test]
    fn layers_past_their_limits_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let l = layer(&[
            E::File("a", &[1; 10]),
            E::File("b", &[2; 10]),
            E::File("c", &[3; 10]),
        ]);
        let small = |max_bytes, max_entries| Limits {
            max_bytes,
            max_entries,
        };
        let err = apply_layer_within(root.path(), &l[..], &small(25, 10)).unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::TooLarge {
                    what: "bytes",
                    limit: 25
                }
            ),
            "{err}"
        );
        assert!(
            !root.path().join("c").exists(),
            "stopped before the file past the limit"
        );
        let err = apply_layer_within(root.path(), &l[..], &small(1 << 20, 2)).unwrap_err();
        assert!(err.to_string().contains("2 entries"), "{err}");
        let st = apply_layer_within(root.path(), &l[..], &small(30, 3)).unwrap();
        assert_eq!((st.files, st.bytes), (3, 30));
    }
}
