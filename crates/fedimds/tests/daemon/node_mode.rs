//! Node mode: one daemon serving many callers told apart by their own secrets, each read from
//! a file (a mounted Kubernetes Secret) and read again when it changes
//! (`deploy/kubernetes/node/`, README "Node mode").

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedimds::config::SECRET_FILE_POLL;
use fedimds_sim::SimConfig;

use crate::support::*;

const CALLERS: usize = 50;
const TARGETS: usize = 5;

fn target_name(i: usize) -> String {
    format!("team-{i}")
}

fn resource_of(i: usize) -> String {
    format!("https://r{i}.node-mode.example")
}

fn secret_of(j: usize, generation: u32) -> String {
    format!("caller-{j:02}-secret-generation-{generation}-0123456789")
}

/// The targets caller `j` is granted: two of the five.
fn grants(j: usize) -> [usize; 2] {
    [j % TARGETS, (j + 1) % TARGETS]
}

/// Replaces the file at once, as the kubelet updates a mounted Secret (a new directory swapped
/// in by a rename): a reader never sees it half written.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A daemon with five targets (one app and tenant, five resources) and fifty callers, each
/// recognised by the secret in its own file and granted two targets.
async fn start_node() -> (Harness, Vec<PathBuf>) {
    let dir = temp_dir("node-mode");
    let files: Vec<PathBuf> = (0..CALLERS)
        .map(|j| {
            let path = dir.join(format!("caller-{j:02}"));
            write(&path, &format!("{}\n", secret_of(j, 1)));
            path
        })
        .collect();
    let paths = files.clone();
    let h = start_with(SimConfig::demo(), move |raw| {
        let template = target(raw, "litware").clone();
        raw.targets = (0..TARGETS)
            .map(|i| RawTarget {
                name: Some(target_name(i)),
                resources: strings(&[&resource_of(i)]),
                default: None,
                allowed_tenants: None,
                ..template.clone()
            })
            .collect();
        raw.callers = paths
            .iter()
            .enumerate()
            .map(|(j, path)| RawCaller {
                name: Some(format!("ns-{j:02}")),
                secret_file: Some(path.clone()),
                targets: Some(grants(j).iter().map(|&i| target_name(i)).collect()),
                ..Default::default()
            })
            .collect();
    })
    .await;
    (h, files)
}

async fn ask(h: &Harness, secret: &str, i: usize) -> (u16, serde_json::Value) {
    let url = format!(
        "{}/targets/{}/msi/token?api-version=2019-08-01&resource={}",
        h.url,
        target_name(i),
        resource_of(i)
    );
    status_json(
        h.http
            .get(url)
            .header("X-IDENTITY-HEADER", secret)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn fifty_callers_each_get_their_own_targets_and_nothing_else() {
    let (h, _files) = start_node().await;
    for j in 0..CALLERS {
        let secret = secret_of(j, 1);
        for i in 0..TARGETS {
            let (status, body) = ask(&h, &secret, i).await;
            if grants(j).contains(&i) {
                assert_eq!(status, 200, "caller {j}, target {i}: {body}");
                assert_eq!(body["resource"], resource_of(i).as_str());
            } else {
                assert_eq!(status, 403, "caller {j}, target {i}: {body}");
                let message = body["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!("ns-{j:02}")),
                    "the refusal names the caller: {message}"
                );
            }
        }
    }
    // A secret no file holds gets nowhere.
    let (status, _) = ask(&h, "a-secret-nobody-was-given-0123456789", 0).await;
    assert_eq!(status, 401);
    // Five keys, one exchange each, whoever asked.
    assert_eq!(h.sim.exchanges().len(), TARGETS);
}

/// Waits (on paused time) until `ok` holds, at most a few poll periods.
async fn eventually<F: std::future::Future<Output = bool>>(mut ok: impl FnMut() -> F) {
    for _ in 0..10 {
        if ok().await {
            return;
        }
        tokio::time::sleep(SECRET_FILE_POLL).await;
    }
    panic!("not within ten polls of the secret files");
}

#[tokio::test(start_paused = true)]
async fn a_rotated_secret_file_changes_who_gets_in_without_a_restart() {
    let (h, files) = start_node().await;
    let (old, new) = (secret_of(0, 1), secret_of(0, 2));
    let (status, body) = ask(&h, &old, 0).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ask(&h, &new, 0).await.0, 401);

    // The rotation, the careful way: the new secret is added first, so both work while the
    // apps move over...
    write(&files[0], &format!("{old}\n{new}\n"));
    eventually(|| async { ask(&h, &new, 0).await.0 == 200 }).await;
    assert_eq!(
        ask(&h, &old, 0).await.0,
        200,
        "both work during the rotation"
    );
    // ...then the old one is taken out, and stops working.
    write(&files[0], &format!("{new}\n"));
    eventually(|| async { ask(&h, &old, 0).await.0 == 401 }).await;
    assert_eq!(ask(&h, &new, 0).await.0, 200);
    // Caller 0's grants came with its rule, not its secret: still only its own targets.
    assert_eq!(ask(&h, &new, 2).await.0, 403);
    // The others were never touched.
    assert_eq!(ask(&h, &secret_of(1, 1), 1).await.0, 200);

    // A file that goes away lets nobody in with it (and says so in the log).
    std::fs::remove_file(&files[1]).unwrap();
    eventually(|| async { ask(&h, &secret_of(1, 1), 1).await.0 == 401 }).await;
    write(&files[1], &secret_of(1, 3));
    eventually(|| async { ask(&h, &secret_of(1, 3), 1).await.0 == 200 }).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn a_secret_file_that_cannot_serve_is_a_config_error_naming_its_key() {
    let dir = temp_dir("node-mode-bad");
    for (text, why) in [
        ("short\n", "at least 16 characters"),
        ("\n\n", "holds no secret"),
    ] {
        let path = dir.join("caller");
        write(&path, text);
        let mut raw =
            fedimds::demo::raw_config("http://127.0.0.1:1", "127.0.0.1:0".parse().unwrap());
        raw.callers = vec![RawCaller {
            secret_file: Some(path),
            targets: strings(&["*"]),
            ..Default::default()
        }];
        let err = fedimds::config::Config::from_toml(&render(&raw), "test", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("callers[0].secret_file") && err.contains(why),
            "{err}"
        );
    }
    let mut raw = fedimds::demo::raw_config("http://127.0.0.1:1", "127.0.0.1:0".parse().unwrap());
    raw.callers = vec![RawCaller {
        secret_file: Some(dir.join("missing")),
        targets: strings(&["*"]),
        ..Default::default()
    }];
    let err = fedimds::config::Config::from_toml(&render(&raw), "test", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("callers[0].secret_file"), "{err}");
}
