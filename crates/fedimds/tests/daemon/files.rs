//! What another user can do to the files fedimds writes, and what becomes of them (red-team F4,
//! F8, F12): the caller secret file, the audit log, the Unix socket, the Arc key files. Each test sets up what the attacker could in a directory it can write, then
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
    // A directory anyone can write to is refused outright: the file could be renamed away.
    let err = start_error(&raw);
    assert!(
        err.contains("audit.path") && err.contains("writable by group or others"),
        "{err}"
    );
    // In a sticky one (as /tmp), only the file itself can be attacked.
    chmod(&shared, 0o1777);

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
    // A second name for a file of root's: appending to it would change that file.
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&victim, "important root-owned content").unwrap();
    chmod(&victim, 0o600);
    std::fs::hard_link(&victim, &log).unwrap();
    let err = start_error(&raw);
    assert!(
        err.contains("audit.path") && err.contains("hard links"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important root-owned content"
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
    // A directory anyone can write to is refused outright:
    chmod(&shared, 0o777);
    let socket = shared.join("fedimds.sock");
    let err = fedimds::http::listener::bind_unix(&socket, 0o666)
        .unwrap_err()
        .to_string();
    assert!(err.contains("writable by group or others"), "{err}");
    // ...so the attacker works in a sticky one (as /tmp), where a socket can still be swapped.
    chmod(&shared, 0o1777);
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

const ARC: &str = "/arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https://graph.microsoft.com";

/// An Arc challenge: its status, and the key file's contents when it was a challenge.
async fn arc_challenge(h: &Harness, secret: Option<&str>) -> (u16, Option<String>, bool) {
    let mut request = h
        .http
        .get(format!("{}{ARC}", h.url))
        .header("Metadata", "true");
    if let Some(secret) = secret {
        request = request.header("X-IDENTITY-HEADER", secret);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let key = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok()?.strip_prefix("Basic realm="))
        .map(|path| std::fs::read_to_string(path).unwrap());
    (status, key, retry_after)
}

async fn arc_redeem(h: &Harness, key: &str, secret: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = h
        .http
        .get(format!("{}{ARC}", h.url))
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"));
    if let Some(secret) = secret {
        request = request.header("X-IDENTITY-HEADER", secret);
    }
    status_json(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_flood_of_arc_challenges_costs_no_one_the_key_it_holds() {
    let dir = temp_dir("arc-flood");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.server.arc_key_dir = Some(dir.clone());
    })
    .await;
    let (status, key, _) = arc_challenge(&h, None).await;
    assert_eq!(status, 401);
    let key = key.expect("a key file");
    // No credentials needed to ask for a challenge: 256 more, as the red team sent.
    let mut refused = 0;
    for _ in 0..256 {
        match arc_challenge(&h, None).await {
            (401, Some(_), _) => {}
            (429, None, retry_after) => {
                assert!(retry_after, "429 says when to retry");
                refused += 1;
            }
            (status, ..) => panic!("a challenge or 429, not {status}"),
        }
    }
    let (status, body) = arc_redeem(&h, &key, None).await;
    assert_eq!(status, 200, "the key handed out first still works: {body}");
    assert!(refused > 0, "past the bound, challenges are refused");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn one_caller_cannot_take_every_arc_challenge() {
    const FLOODER: &str = "secret-of-the-flooder-0123456789";
    const AGENT: &str = "secret-of-the-arc-agent-0123456789";
    let dir = temp_dir("arc-per-caller");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.server.arc_key_dir = Some(dir.clone());
        for (name, secret) in [("flooder", FLOODER), ("agent", AGENT)] {
            raw.callers.push(RawCaller {
                name: Some(name.into()),
                secret: Some(secret.into()),
                targets: strings(&["*"]),
                ..RawCaller::default()
            });
        }
    })
    .await;
    let mut first_refused = None;
    for n in 0..300 {
        if arc_challenge(&h, Some(FLOODER)).await.0 == 429 {
            first_refused = Some(n);
            break;
        }
    }
    let n = first_refused.expect("the flooder is refused at some point");
    assert!(n < 256, "refused before it holds the whole table ({n})");
    let (status, key, _) = arc_challenge(&h, Some(AGENT)).await;
    assert_eq!(status, 401, "another caller still gets a challenge");
    let (status, body) = arc_redeem(&h, &key.unwrap(), Some(AGENT)).await;
    assert_eq!(status, 200, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn arc_key_files_do_not_outlive_the_daemon_and_only_ours_are_removed() {
    let dir = temp_dir("arc-stale");
    // Left by a previous run: ours by name and owner.
    let stale = dir.join("0123456789abcdef.key");
    std::fs::write(&stale, "old key").unwrap();
    // Not ours: another name, another owner, a link (to a file that must survive).
    let keep = dir.join("keep.txt");
    std::fs::write(&keep, "keep").unwrap();
    let others = [
        dir.join("notes.key"),
        dir.join("0123456789ABCDEF.key"),
        dir.join("0123456789abcde.key"),
        dir.join("fedcba9876543210.key"),
        dir.join("00112233445566ff.key"),
    ];
    for other in &others[..3] {
        std::fs::write(other, "someone else's").unwrap();
    }
    std::fs::write(&others[3], "uid 65534's").unwrap();
    std::os::unix::fs::chown(&others[3], Some(65534), None).unwrap();
    std::os::unix::fs::symlink(&keep, &others[4]).unwrap();

    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.server.arc_key_dir = Some(dir.clone());
    })
    .await;
    assert!(
        !stale.exists(),
        "a previous run's key file is removed at start"
    );
    for other in &others {
        assert!(
            std::fs::symlink_metadata(other).is_ok(),
            "{} is not fedimds's and stays",
            other.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "keep");

    let mut issued = Vec::new();
    for _ in 0..3 {
        let r = h
            .http
            .get(format!("{}{ARC}", h.url))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        let realm = r.headers()["www-authenticate"].to_str().unwrap();
        issued.push(std::path::PathBuf::from(
            realm.strip_prefix("Basic realm=").unwrap(),
        ));
    }
    assert!(issued.iter().all(|p| p.exists()));
    // Shutdown (the harness dropped) removes the keys still outstanding.
    drop(h);
    for _ in 0..100 {
        if issued.iter().all(|p| !p.exists()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for path in &issued {
        assert!(!path.exists(), "{} outlived the daemon", path.display());
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), others.len() + 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// The value of `fedimds_audit_failures_total`.
async fn audit_failures(h: &Harness) -> f64 {
    let text = h.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix("fedimds_audit_failures_total "))
        .unwrap_or_else(|| panic!("no audit failure counter in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn readyz(h: &Harness) -> (u16, String) {
    let r = h
        .http
        .get(format!("{}/readyz", h.admin_url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Audit lines in `path` so far.
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `check` every 50 ms for at most 5 s (the writer looks at the file every second).
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn the_audit_log_is_reopened_after_rotation() {
    let dir = temp_dir("audit-rotate");
    let log = dir.join("audit.jsonl");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.audit.path = Some(log.display().to_string());
    })
    .await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert!(eventually(|| async { audit_lines(&log).len() == 1 }).await);
    // logrotate's default: rename the file; the daemon is expected to start a new one.
    let rotated = dir.join("audit.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    let served_after = eventually(|| async {
        assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
        !audit_lines(&log).is_empty()
    })
    .await;
    assert!(
        served_after,
        "lines after the rotation go to a new audit.jsonl"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().mode() & 0o777,
        0o600,
        "the new file is private"
    );
    assert_eq!(audit_failures(&h).await, 0.0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn with_fail_closed_no_token_is_served_unaudited() {
    let dir = temp_dir("audit-fail-closed");
    let log = dir.join("audit.jsonl");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.audit.path = Some(log.display().to_string());
        raw.audit.fail_closed = Some(true);
    })
    .await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    // The log can no longer be written where audit.path says: a directory took its place.
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let mut refusal = None;
    for _ in 0..100 {
        let r = h.imds_request().send().await.unwrap();
        if r.status().as_u16() != 200 {
            let retry_after = r.headers().contains_key("retry-after");
            refusal = Some((r.status().as_u16(), retry_after, r.text().await.unwrap()));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, retry_after, body) =
        refusal.expect("tokens are refused once the log cannot record");
    assert_eq!(status, 503, "{body}");
    assert!(retry_after);
    assert!(
        body.contains("audit") && !body.contains("access_token"),
        "{body}"
    );
    assert!(audit_failures(&h).await >= 1.0);
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 503, "not ready while no token is served: {body}");

    // Fixed: the file is reopened, and tokens are served (and audited) again.
    std::fs::remove_dir(&log).unwrap();
    let served = eventually(|| async { h.imds_token(GRAPH, "").await.0 == 200 }).await;
    assert!(served, "served again once the log records");
    assert!(
        eventually(|| async { audit_lines(&log).iter().any(|l| l["event"] == "served") }).await
    );
    assert_eq!(readyz(&h).await.0, 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_fail_closed_an_audit_log_that_cannot_record_is_counted_and_said() {
    let dir = temp_dir("audit-fail-open");
    let log = dir.join("audit.jsonl");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.audit.path = Some(log.display().to_string());
    })
    .await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let counted = eventually(|| async {
        assert_eq!(h.imds_token(GRAPH, "").await.0, 200, "fail-open serves");
        audit_failures(&h).await >= 1.0
    })
    .await;
    assert!(counted, "each line lost is counted");
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 200);
    assert!(body.contains("audit log cannot record"), "{body}");
    let _ = std::fs::remove_dir_all(dir);
}
