//! What another user can do to the files fedimds writes (red-team F4, F8): the caller secret
//! file, the audit log, the Unix socket. Each test sets up what the attacker could in a directory it can write, then
//! starts the daemon as it would be started.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use fedimds::app::App;

use crate::support::*;

/// The demo config with no reachable simulator: these tests only start the daemon's state.
fn raw_config() -> RawConfig {
    fedimds::demo::raw_config("http://127.0.0.1:1", "127.0.0.1:0".parse().unwrap())
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn start_error(raw: &RawConfig) -> String {
    match App::new(load(raw)) {
        Ok(_) => panic!("the daemon started"),
        Err(e) => e.to_string(),
    }
}

/// A root-owned file the attacker wants overwritten, outside the shared directory.
fn victim(dir: &Path, name: &str) -> std::path::PathBuf {
    let victim = dir.join(name);
    std::fs::write(&victim, "important root-owned content").unwrap();
    chmod(&victim, 0o644);
    victim
}

#[tokio::test]
async fn a_secret_file_in_a_directory_others_can_write_is_refused() {
    let scratch = temp_dir("secret-shared");
    let victim = victim(&scratch, "victim.txt");
    let shared = scratch.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    // The attacker's link where fedimds used to write its temporary file.
    std::os::unix::fs::symlink(&victim, shared.join("identity-header.tmp")).unwrap();
    let mut raw = raw_config();
    raw.server.identity_header_file = Some(shared.join("identity-header"));
    let err = start_error(&raw);
    assert!(err.contains("server.identity_header_file"), "{err}");
    assert!(err.contains(&shared.display().to_string()), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important root-owned content"
    );
    assert!(!shared.join("identity-header").exists());
    let _ = std::fs::remove_dir_all(scratch);
}

#[tokio::test]
async fn a_secret_file_in_a_sticky_directory_follows_no_link_at_start_or_reload() {
    let scratch = temp_dir("secret-sticky");
    let victim = victim(&scratch, "victim.txt");
    // Like /tmp: anyone may create files, only a file's owner may rename or remove it.
    let shared = scratch.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    std::os::unix::fs::symlink(&victim, shared.join("identity-header.tmp")).unwrap();
    // And a file of its own, world-writable, under the temporary name it would use next, held
    // open to read the secret from.
    let held = shared.join("identity-header.new.tmp");
    std::fs::write(&held, "").unwrap();
    chmod(&held, 0o666);
    std::os::unix::fs::chown(&held, Some(65534), Some(65534)).unwrap();
    let file = shared.join("identity-header");
    let mut raw = raw_config();
    raw.server.identity_header_file = Some(file.clone());
    let app = App::new(load(&raw)).expect("starts");
    app.reload(load(&raw)).expect("reloads");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important root-owned content",
        "the link was not followed"
    );
    assert_eq!(
        std::fs::read_to_string(&held).unwrap(),
        "",
        "no secret in its file"
    );
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), fedimds::fsutil::euid().unwrap());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        app.identity_header().expose()
    );
    let _ = std::fs::remove_dir_all(scratch);
}

#[tokio::test]
async fn an_audit_log_that_is_a_link_or_someone_elses_file_is_refused() {
    let scratch = temp_dir("audit-shared");
    let victim = victim(&scratch, "victim.txt");
    let shared = scratch.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let log = shared.join("audit.jsonl");
    let mut raw = raw_config();
    raw.audit.path = Some(log.display().to_string());

    // A link to a file a shell later runs: lines would be appended to it.
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let err = start_error(&raw);
    assert!(
        err.contains("audit.path") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important root-owned content"
    );
    // A dangling link: its target is not created.
    std::fs::remove_file(&log).unwrap();
    let target = scratch.join("profile.d-script");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    start_error(&raw);
    assert!(!target.exists(), "nothing created through the link");
    std::fs::remove_file(&log).unwrap();

    // A file the attacker made, world-readable, to read every line from.
    std::fs::write(&log, "").unwrap();
    chmod(&log, 0o666);
    std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    let err = start_error(&raw);
    assert!(
        err.contains("audit.path") && err.contains("owned by uid 65534"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(scratch);
}

#[tokio::test]
async fn a_link_swapped_in_for_the_unix_socket_while_it_is_bound_is_not_followed() {
    use std::os::unix::fs::FileTypeExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let scratch = temp_dir("socket-swap");
    let victim = victim(&scratch, "victim.txt");
    let shared = scratch.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let socket = shared.join("fedimds.sock");
    // The attacker: whenever a socket appears at the path, put a link to the victim there,
    // hoping the daemon's chmod lands on it.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (socket, victim, stop) = (socket.clone(), victim.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swapped = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket())
                    && std::fs::remove_file(&socket).is_ok()
                    && std::os::unix::fs::symlink(&victim, &socket).is_ok()
                {
                    swapped += 1;
                }
            }
            swapped
        })
    };
    for _ in 0..300 {
        let _ = std::fs::remove_file(&socket);
        let _ = fedimds::http::listener::bind_unix(&socket, 0o666);
        if std::fs::metadata(&victim).unwrap().mode() & 0o777 != 0o644 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swapped = attacker.join().unwrap();
    assert!(swapped > 0, "the attacker got to swap sockets");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().mode() & 0o777,
        0o644,
        "the daemon's chmod followed the attacker's link ({swapped} swaps)"
    );
    let _ = std::fs::remove_dir_all(scratch);
}

#[tokio::test]
async fn the_unix_socket_replaces_a_stale_socket_and_nothing_else() {
    let scratch = temp_dir("socket-stale");
    let socket = scratch.join("fedimds.sock");
    let first = fedimds::http::listener::bind_unix(&socket, 0o600).unwrap();
    drop(first);
    // Left behind by the previous run: replaced, with the mode asked for this time.
    let _second = fedimds::http::listener::bind_unix(&socket, 0o660).unwrap();
    assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o660);
    let names: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["fedimds.sock"], "no private directory left behind");
    // Any other kind of file is not ours to replace.
    let file = scratch.join("not-a-socket");
    std::fs::write(&file, "keep").unwrap();
    assert!(fedimds::http::listener::bind_unix(&file, 0o660).is_err());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    let _ = std::fs::remove_dir_all(scratch);
}
