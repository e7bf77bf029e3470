//! Files other users must neither read nor redirect: the caller secret file, the Arc key files,
//! the audit log. Every one is opened without following a symbolic link, a new one is created
//! exclusively (never an existing file, never a file someone else made), and each ends up owned
//! by fedimds's user with exactly the mode asked for.
//!
//! A leaf: it imports nothing from the crate.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// How a private file is made: its mode, and a group that may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Private {
    /// The file's mode: 0600, or 0640 with a group.
    pub mode: u32,
    /// The group it is handed to (`fchown`), if any.
    pub group: Option<u32>,
}

impl Private {
    /// Readable and writable by fedimds's user only.
    pub const OWNER_ONLY: Private = Private {
        mode: 0o600,
        group: None,
    };
}

/// Creates `path` holding `contents`: never an existing file (`O_EXCL`), never through a link
/// (`O_NOFOLLOW`), with mode `how.mode` whatever the umask. The file is removed again when any
/// step fails.
pub fn create(path: &Path, contents: &[u8], how: Private) -> io::Result<File> {
    let mut file = open_new(path, how.mode)?;
    let written = (|| {
        if let Some(gid) = how.group {
            std::os::unix::fs::fchown(&file, None, Some(gid))?;
        }
        // The umask may have taken away bits asked for (a group's read).
        file.set_permissions(std::fs::Permissions::from_mode(how.mode))?;
        file.write_all(contents)
    })();
    match written {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Replaces `path` with a file holding `contents`, atomically: a reader sees the old file or
/// the whole new one. It is written to a new, randomly named file beside it ([`create`]),
/// synced, then renamed over `path` (a link at `path` is replaced, not followed).
///
/// The directory must be one only fedimds's user (or root) can change, as sshd's StrictModes
/// asks of `~/.ssh`: anyone else who can write there can rename a file away and put their own
/// in its place, or swap the temporary file before the rename. A sticky directory (`/tmp`)
/// is accepted: there only a file's owner may rename or remove it.
pub fn replace(path: &Path, contents: &[u8], how: Private) -> io::Result<()> {
    let dir = parent(path);
    check_dir(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let (tmp, file) = (0..8)
        .find_map(|_| {
            let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), random_hex()?));
            match create(&tmp, contents, how) {
                // Someone else's file under the random name: try another name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                other => Some(other.map(|file| (tmp, file))),
            }
        })
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "cannot create a temporary file with a new name",
            ))
        })?;
    let published = file.sync_all().and_then(|()| std::fs::rename(&tmp, path));
    if published.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    published
}

/// Opens `path` to append to, creating it with mode 0600 when absent, never through a link.
/// An existing file must be a regular file owned by fedimds's user; group and other bits are
/// taken away (with a warning in the log), so a file made world-readable stays private from
/// now on.
pub fn open_append(path: &Path) -> io::Result<File> {
    // Someone who can change the directory could rename the file away and put theirs there.
    check_dir(&parent(path))?;
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| explain_link(path, e))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refused(
            "it is not a regular file (\"-\" is standard output)".to_owned(),
        ));
    }
    let ours = euid()?;
    if meta.uid() != ours {
        return Err(refused(format!(
            "it is owned by uid {}, not by fedimds's uid {ours}: another user could read or rewrite it",
            meta.uid()
        )));
    }
    // A second name for the file could be a hard link to a file of root's that another user
    // planted: appending to it, and making it 0600, would change that file.
    if meta.nlink() > 1 {
        return Err(refused(format!(
            "it has {} names (hard links): fedimds appends only to a file of its own",
            meta.nlink()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.mode() & 0o777),
            "the file was readable or writable by others; made 0600"
        );
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// The user id files fedimds creates get (the filesystem uid), from `/proc/self/status`: std
/// has no `geteuid`, and this crate forbids `unsafe` (which libc's would need).
pub fn euid() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    // "Uid:\treal\teffective\tsaved\tfilesystem"
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(3))
        .and_then(|fs| fs.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "cannot read fedimds's uid from /proc/self/status",
            )
        })
}

/// Refuses a directory that a user other than fedimds's (or root) could change files in.
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let ours = euid()?;
    let (mode, owner) = (meta.mode(), meta.uid());
    if owner != ours && owner != 0 {
        return Err(refused(format!(
            "its directory {} is owned by uid {owner}, who could replace the file; use a directory owned by fedimds's user (uid {ours})",
            dir.display()
        )));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(refused(format!(
            "its directory {} is writable by group or others (mode {:o}), who could replace the file or read it as it is written; use a directory only fedimds's user can write (0755 or 0700)",
            dir.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

/// The directory `path` is in (`.` for a bare name).
pub fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// 16 hex digits from the OS: names nobody can guess ahead of time.
pub fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| explain_link(path, e))
}

/// `O_NOFOLLOW` on a link fails with `ELOOP`, "too many levels of symbolic links": say why.
fn explain_link(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return refused(format!(
            "{} is a symbolic link, which fedimds does not follow",
            path.display()
        ));
    }
    e
}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, message)
}

#[cfg(test)]
mod tests;
