//! The demo world's ids are defined once, in `src/demo.rs`. Configs, suites, drivers, the
//! benchmark and the docs hold copies of them; these tests walk every git-tracked text file and
//! fail, naming `file:line`, on any string shaped like a demo id that is not exactly one of
//! demo.rs's constants, so a copy that drifts breaks the build instead of a demo or a suite.
//!
//! "Shaped like a demo id" means: containing a *mark*. Each demo GUID gives two marks, its
//! first group with the dash (`aaaaaaaa-`) and its three middle groups (`-0000-4000-8000-`);
//! the other ids have the literal marks in [`TEXT_MARKS`]. A few strings carry a mark on purpose
//! without being demo ids; [`LOOK_ALIKES`] lists them with the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use fedimds_sim::{demo, SimConfig};

/// Every id of the demo world, as `src/demo.rs` defines it. The FIC audiences are left out:
/// they are Azure's values, not the demo's.
const DEMO_IDS: &[&str] = &[
    demo::HOME_TENANT,
    demo::TARGET_TENANT,
    demo::OTHER_TARGET_TENANT,
    demo::APP_CLIENT_ID,
    demo::UNCONSENTED_APP_CLIENT_ID,
    demo::MI_CLIENT_ID,
    demo::MI_OBJECT_ID,
    demo::MI_RESOURCE_ID,
    demo::SYSTEM_MI_CLIENT_ID,
    demo::SYSTEM_MI_OBJECT_ID,
    demo::SYSTEM_MI_RESOURCE_ID,
    demo::IDENTITY_HEADER,
    demo::K8S_ISSUER,
    demo::K8S_SUBJECT,
];

/// Marks of the ids that are not GUIDs (compared without regard to ASCII case).
const TEXT_MARKS: &[&str] = &[
    // The demo's resource names and its identity-header secret.
    "fedimds-demo",
    // The demo's resource group, inside both ARM ids.
    "/resourcegroups/demo/",
    // The demo cluster's issuer.
    "oidc.demo.fedimds",
    // The service account the demo FIC trusts.
    "system:serviceaccount:default:",
];

/// Strings that carry a mark on purpose but are not demo ids, and why.
const LOOK_ALIKES: &[(&str, &str)] = &[
    (
        "11111111-1111-1111-1111-111111111111",
        "placeholder of the example config and its tests",
    ),
    (
        "22222222-2222-2222-2222-222222222222",
        "placeholder of the example config and its tests",
    ),
    (
        "33333333-3333-3333-3333-333333333333",
        "placeholder of the example config",
    ),
    (
        "bbbbbbbb-0000-4000-8000-0000000000ff",
        "a client id no demo identity has (fedimds check's test)",
    ),
    (
        "ffffffff-0000-4000-8000-00000000ffff",
        "a client id no demo identity has (the conformance drivers)",
    ),
    (
        "0c0c0c0c-0000-4000-8000-0000000c0c01",
        "the conformance config's object-id alias of its contoso target, no identity",
    ),
    (
        "system:serviceaccount:default:other",
        "a subject the demo FIC does not trust",
    ),
    (
        "system:serviceaccount:default:other-and-longer",
        "a subject the demo FIC does not trust",
    ),
];

/// Lock files hold registry checksums, not ids.
const SKIPPED_FILE_NAMES: &[&str] = &["Cargo.lock", "package-lock.json"];

/// Where the constants live, and this file, which spells the marks and look-alikes themselves.
const DEMO_RS: &str = "crates/fedimds-sim/src/demo.rs";
const THIS_FILE: &str = "crates/fedimds-sim/tests/demo_ids.rs";

/// The daemon configs that run against `fedimds sim`'s demo world.
const DEMO_CONFIGS: &[&str] = &["config/demo.toml", "deploy/compose/fedimds.toml"];

// === the scan ===

/// A string that carries a mark, where it was found.
#[derive(Debug, PartialEq, Eq)]
struct Hit {
    line: usize,
    text: String,
}

/// One mark and the characters a string that carries it may extend over.
struct Mark {
    lower: String,
    extends_over: fn(u8) -> bool,
}

/// The demo ids plus the GUIDs inside them (the subscription of the ARM ids, the home tenant of
/// the MI issuer): each GUID is checked on its own, wherever it is embedded.
fn known_ids() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = DEMO_IDS.iter().map(|id| id.to_string()).collect();
    known.extend(DEMO_IDS.iter().flat_map(|id| guids_in(id)));
    known
}

fn marks() -> Vec<Mark> {
    let mut guid_marks = BTreeSet::new();
    for guid in DEMO_IDS.iter().flat_map(|id| guids_in(id)) {
        guid_marks.insert(guid[..9].to_ascii_lowercase());
        guid_marks.insert(guid[8..24].to_ascii_lowercase());
    }
    let guid_marks = guid_marks.into_iter().map(|lower| Mark {
        lower,
        extends_over: |b| b.is_ascii_alphanumeric() || b == b'-',
    });
    let text_marks = TEXT_MARKS.iter().map(|mark| Mark {
        lower: mark.to_ascii_lowercase(),
        extends_over: |b| !b.is_ascii_whitespace() && !b"\"'`()[]{}<>,;|\\&=".contains(&b),
    });
    guid_marks.chain(text_marks).collect()
}

/// Every `8-4-4-4-12` hex GUID in `text`.
fn guids_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let shape = [8, 4, 4, 4, 12];
    let mut found = Vec::new();
    let mut start = 0;
    while start + 36 <= bytes.len() {
        let candidate = &bytes[start..start + 36];
        let mut at = 0;
        let fits = shape.iter().enumerate().all(|(i, &len)| {
            let group = candidate[at..at + len].iter().all(u8::is_ascii_hexdigit);
            at += len;
            let dash = i == 4 || candidate[at] == b'-';
            at += 1;
            group && dash
        });
        if fits {
            found.push(text[start..start + 36].to_owned());
            start += 36;
        } else {
            start += 1;
        }
    }
    found
}

/// Every string in `text` that carries one of `marks`, once each, in order.
fn hits(text: &str, marks: &[Mark]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let lower = line.to_ascii_lowercase();
        let mut spans = BTreeSet::new();
        for mark in marks {
            for (at, _) in lower.match_indices(&mark.lower) {
                let mut start = at;
                while start > 0 && (mark.extends_over)(bytes[start - 1]) {
                    start -= 1;
                }
                let mut end = at + mark.lower.len();
                while end < bytes.len() && (mark.extends_over)(bytes[end]) {
                    end += 1;
                }
                // A sentence may end right after an id; no demo id ends in a full stop.
                while end > at + mark.lower.len() && bytes[end - 1] == b'.' {
                    end -= 1;
                }
                spans.insert((start, end));
            }
        }
        // Both marks of a GUID find the same string; a text mark may find a longer one.
        hits.extend(spans.into_iter().map(|(start, end)| Hit {
            line: index + 1,
            text: line[start..end].to_owned(),
        }));
    }
    hits
}

/// The hits in `text` that are neither a demo id nor a listed look-alike.
fn drifted(text: &str, marks: &[Mark], known: &BTreeSet<String>) -> Vec<Hit> {
    hits(text, marks)
        .into_iter()
        .filter(|hit| !known.contains(&hit.text) && !is_look_alike(&hit.text))
        .collect()
}

fn is_look_alike(text: &str) -> bool {
    LOOK_ALIKES
        .iter()
        .any(|(look_alike, _)| *look_alike == text)
}

/// The string at `key`, if `table` has one.
fn str_at<'t>(table: &'t toml::Table, key: &str) -> Option<&'t str> {
    table.get(key).and_then(|v| v.as_str())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every git-tracked file, relative to the repository root.
fn tracked_files() -> Vec<String> {
    let output = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo_root())
        .output()
        .expect("git runs: this test needs a git checkout");
    assert!(
        output.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("tracked paths are UTF-8")
        .split('\0')
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect()
}

// === tests ===

#[test]
fn every_copy_of_a_demo_id_is_exact() {
    let (marks, known) = (marks(), known_ids());
    let mut scanned = Vec::new();
    let mut drifts = Vec::new();
    let mut look_alikes_seen = BTreeSet::new();
    for path in tracked_files() {
        let name = Path::new(&path).file_name().unwrap_or_default();
        if SKIPPED_FILE_NAMES.iter().any(|skip| name == *skip) || path == THIS_FILE {
            continue;
        }
        let Ok(bytes) = std::fs::read(repo_root().join(&path)) else {
            continue; // deleted from the work tree, so it holds no copy
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue; // not text
        };
        for hit in hits(&text, &marks) {
            if is_look_alike(&hit.text) {
                look_alikes_seen.insert(hit.text);
            } else if !known.contains(&hit.text) {
                drifts.push(format!("{path}:{}: {}", hit.line, hit.text));
            }
        }
        scanned.push(path);
    }
    assert!(
        scanned.iter().any(|p| p == DEMO_RS),
        "the scan must see demo.rs itself; it saw {} files",
        scanned.len()
    );
    assert!(
        drifts.is_empty(),
        "these look like demo ids but are none of {DEMO_RS}'s constants (copy the constant \
         exactly, or list a deliberate look-alike in LOOK_ALIKES):\n{}",
        drifts.join("\n")
    );
    let unused: Vec<_> = LOOK_ALIKES
        .iter()
        .filter(|(look_alike, _)| !look_alikes_seen.contains(*look_alike))
        .collect();
    assert!(
        unused.is_empty(),
        "no file uses these LOOK_ALIKES any more; drop them: {unused:?}"
    );
}

#[test]
fn the_scan_reports_drifted_copies_and_passes_exact_ones() {
    let (marks, known) = (marks(), known_ids());
    // Built at run time, so this file holds no drifted id for the repository scan to find.
    let drifts = [
        demo::APP_CLIENT_ID.replace("a001", "a010"),
        demo::MI_CLIENT_ID.to_ascii_uppercase(),
        demo::HOME_TENANT[..35].to_owned(),
        demo::TARGET_TENANT.replacen("22222222", "2222222", 1),
        demo::MI_RESOURCE_ID.replace("fedimds-demo", "fedimds-demo2"),
        demo::K8S_ISSUER.trim_end_matches('/').to_owned(),
        demo::K8S_SUBJECT.replace(":app", ":apps"),
        demo::IDENTITY_HEADER.replace("secret", "secrets"),
    ];
    for drift in &drifts {
        let text = format!("before\nclient_id = \"{drift}\"  # a copy\n");
        let found = drifted(&text, &marks, &known);
        assert_eq!(found.len(), 1, "{drift} is reported: {found:?}");
        assert_eq!(found[0].line, 2);
    }
    let exact = format!(
        "tenant_id = \"{}\"\nurl = {}/{}/oauth2/v2.0/token?client_id={}&x=1\n\
         `{}`. resource_id={}&resource={}\nsub: '{}', fic: {}/v2.0\n",
        demo::HOME_TENANT,
        "http://127.0.0.1:8282",
        demo::TARGET_TENANT,
        demo::APP_CLIENT_ID,
        demo::K8S_SUBJECT,
        demo::MI_RESOURCE_ID,
        demo::K8S_ISSUER,
        demo::IDENTITY_HEADER,
        SimConfig::demo().mi_issuer(),
    );
    assert_eq!(drifted(&exact, &marks, &known), Vec::new());
    assert!(hits(&exact, &marks).len() >= 8, "exact copies are seen");
    let look_alikes: String = LOOK_ALIKES.iter().map(|(l, _)| format!("{l}\n")).collect();
    assert_eq!(drifted(&look_alikes, &marks, &known), Vec::new());
}

#[test]
fn every_demo_id_carries_a_mark() {
    let marks = marks();
    for id in DEMO_IDS {
        let found = hits(id, &marks);
        assert!(
            found.iter().any(|hit| hit.text == *id),
            "{id} carries no mark, so the scan cannot see its copies: add one to TEXT_MARKS"
        );
    }
    for (look_alike, why) in LOOK_ALIKES {
        assert!(!DEMO_IDS.contains(look_alike), "{look_alike} ({why})");
        assert!(
            !hits(look_alike, &marks).is_empty(),
            "{look_alike} needs no listing"
        );
    }
}

/// The demo configs' source names a demo identity, and every target names a demo app in a
/// tenant that consented to it (or the app consented nowhere) whose FICs trust that identity.
#[test]
fn the_demo_configs_agree_with_the_demo_world() {
    let world = SimConfig::demo();
    for path in DEMO_CONFIGS {
        let text = std::fs::read_to_string(repo_root().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e} (moved? update DEMO_CONFIGS)"));
        let config: toml::Table = text.parse().unwrap_or_else(|e| panic!("{path}: {e}"));

        let table = |key: &str| config.get(key).and_then(|v| v.as_table());
        let source = table("source").unwrap_or_else(|| panic!("{path}: no [source]"));
        assert_eq!(
            str_at(source, "kind"),
            Some("imds"),
            "{path}: [source] kind"
        );
        let identity = world
            .identities
            .iter()
            .find(|i| match str_at(source, "client_id") {
                Some(client_id) => i.client_id == client_id,
                None => i.system_assigned,
            })
            .unwrap_or_else(|| panic!("{path}: [source] names no identity of the demo world"));
        let cloud = table("cloud");
        assert_eq!(
            str_at(source, "endpoint"),
            cloud.and_then(|c| str_at(c, "authority_host")),
            "{path}: IMDS and Entra are the same simulator"
        );
        let audience = match cloud.and_then(|c| str_at(c, "name")).unwrap_or("public") {
            "public" => demo::EXCHANGE_AUDIENCE,
            "usgov" => demo::EXCHANGE_AUDIENCE_USGOV,
            "china" => demo::EXCHANGE_AUDIENCE_CHINA,
            other => panic!("{path}: cloud {other} has no demo FIC audience"),
        };

        let targets = config.get("targets").and_then(|v| v.as_array());
        let targets = targets.filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("{path}: no [[targets]]")) {
            let target = target.as_table().expect("[[targets]] holds tables");
            let name = str_at(target, "name").unwrap_or("(unnamed)");
            let client_id = str_at(target, "client_id").unwrap_or_default();
            let app = world
                .apps
                .iter()
                .find(|app| app.client_id == client_id)
                .unwrap_or_else(|| panic!("{path}: target {name}: no demo app {client_id}"));
            let trusted = app.federated_credentials.iter().any(|fic| {
                fic.issuer == world.mi_issuer()
                    && fic.subject == identity.object_id
                    && fic.audience == audience
            });
            assert!(
                trusted,
                "{path}: target {name}: the app's FICs do not trust the source"
            );
            if app.consented_tenants.is_empty() {
                continue; // the app consented nowhere: the target exists to be refused
            }
            let allowed = target
                .get("allowed_tenants")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str());
            for tenant in str_at(target, "tenant_id").into_iter().chain(allowed) {
                assert!(
                    app.consented_tenants.iter().any(|t| t == tenant),
                    "{path}: target {name}: the app has no consent in {tenant}"
                );
            }
        }
    }
}
