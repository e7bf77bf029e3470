use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use super::*;

fn temp_dir(name: &str, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fedimds-fsutil-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn replace_writes_0600_whatever_was_there() {
    let dir = temp_dir("replace", 0o755);
    let file = dir.join("secret");
    std::fs::write(&file, "old").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    replace(&file, b"new", Private::OWNER_ONLY).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
    assert_eq!(mode(&file), 0o600);
    // Nothing left beside it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn replace_follows_no_link_at_the_path_or_beside_it() {
    let dir = temp_dir("links", 0o755);
    let victim = dir.join("victim");
    std::fs::write(&victim, "important").unwrap();
    let file = dir.join("secret");
    // The old fixed temporary name, and the path itself, both links to the victim.
    std::os::unix::fs::symlink(&victim, dir.join("secret.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    replace(&file, b"new", Private::OWNER_ONLY).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "important");
    assert!(
        std::fs::symlink_metadata(&file).unwrap().is_file(),
        "the link was replaced"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_directory_others_can_write_is_refused_unless_sticky() {
    let dir = temp_dir("open-dir", 0o777);
    let err = replace(&dir.join("secret"), b"s", Private::OWNER_ONLY).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert!(text.contains("writable by group or others"), "{text}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).unwrap();
    assert!(replace(&dir.join("secret"), b"s", Private::OWNER_ONLY).is_err());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    replace(&dir.join("secret"), b"s", Private::OWNER_ONLY).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn create_never_opens_an_existing_file_or_link() {
    let dir = temp_dir("create", 0o755);
    let victim = dir.join("victim");
    std::fs::write(&victim, "important").unwrap();
    let key = dir.join("k.key");
    std::os::unix::fs::symlink(&victim, &key).unwrap();
    assert!(create(&key, b"key", Private::OWNER_ONLY).is_err());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "important");
    let key = dir.join("k2.key");
    create(
        &key,
        b"key",
        Private {
            mode: 0o640,
            group: None,
        },
    )
    .unwrap();
    assert_eq!(mode(&key), 0o640, "the umask takes nothing away");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn open_append_refuses_links_and_others_files_and_makes_its_own_private() {
    let dir = temp_dir("append", 0o755);
    let victim = dir.join("victim");
    std::fs::write(&victim, "important").unwrap();
    let log = dir.join("audit.jsonl");
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let err = open_append(&log).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    // A dangling link is not followed either: nothing is created at its target.
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(dir.join("created-through-link"), &log).unwrap();
    assert!(open_append(&log).is_err());
    assert!(!dir.join("created-through-link").exists());
    std::fs::remove_file(&log).unwrap();

    // New: 0600.
    open_append(&log).unwrap();
    assert_eq!(mode(&log), 0o600);
    // Ours but world-readable: made 0600.
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    open_append(&log).unwrap();
    assert_eq!(mode(&log), 0o600);
    // Someone else's (when the test may hand it to another uid): refused.
    if euid().unwrap() == 0 {
        std::os::unix::fs::chown(&log, Some(65534), None).unwrap();
        let err = open_append(&log).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
    // Not a regular file: refused.
    let err = open_append(&dir).unwrap_err();
    assert!(err.kind() != io::ErrorKind::NotFound, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn euid_is_the_owner_of_the_files_we_create() {
    let dir = temp_dir("euid", 0o755);
    let file = dir.join("f");
    create(&file, b"", Private::OWNER_ONLY).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), euid().unwrap());
    let _ = std::fs::remove_dir_all(dir);
}
