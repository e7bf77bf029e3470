//! Cache hits against the baseline, on each dialect's path: IMDS (`Metadata: true`), App Service
//! (`X-IDENTITY-HEADER`) and Service Fabric (the `secret` header, over TLS). Each fedimds path is
//! measured side by side with a baseline (`src/bin/baseline.rs`) that makes the same check, over
//! the same transport, and answers with fedimds's own 200 body for that path, its token masked.
//! The two alternate, the first of each round flipping; every answer must be a 200.
//!
//! The App Service and Service Fabric paths share one daemon, set up as a user turns them on:
//! one caller secret (`server.identity_header`) and `[service_fabric] listen`. Its certificate,
//! and the Service Fabric baseline's, is one rcgen self-signed certificate for `localhost` and
//! `127.0.0.1`, the kind the daemon generates (crates/fedimds/src/http/tls.rs), given to both as
//! PEM files; the driver's TLS client trusts exactly that certificate.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_rustls::rustls::{self, pki_types::CertificateDer};
use tokio_rustls::TlsConnector;

use crate::load::{self, Conn, Endpoint, Paths, Run};
use crate::procs::{self, Proc};
use crate::{daemon_config, mask_token, path_str, RssSampler, Settings, World, RESOURCE};
use crate::{Error, Result};

/// Which endpoint a table measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitPath {
    /// `GET /metadata/identity/oauth2/token?api-version=2018-02-01` with `Metadata: true`.
    Imds,
    /// `GET /msi/token?api-version=2019-08-01` with `X-IDENTITY-HEADER`.
    AppService,
    /// `GET /metadata/identity/oauth2/token?api-version=2019-07-01-preview` over TLS with the
    /// `secret` header.
    ServiceFabric,
}

// === impl HitPath ===

impl HitPath {
    /// The table's heading, and the goals' prefix.
    pub fn label(self) -> &'static str {
        match self {
            HitPath::Imds => "IMDS",
            HitPath::AppService => "App Service",
            HitPath::ServiceFabric => "Service Fabric",
        }
    }

    /// The request path for `resource`.
    pub fn token_path(self, resource: &str) -> String {
        match self {
            HitPath::Imds => crate::token_path(resource),
            HitPath::AppService => format!("/msi/token?api-version=2019-08-01&resource={resource}"),
            HitPath::ServiceFabric => format!(
                "/metadata/identity/oauth2/token?api-version=2019-07-01-preview&resource={resource}"
            ),
        }
    }

    /// The baseline's `--dialect`.
    fn dialect(self) -> &'static str {
        match self {
            HitPath::Imds => "imds",
            HitPath::AppService => "app-service",
            HitPath::ServiceFabric => "service-fabric",
        }
    }
}

/// One path's cache-hit measurement.
pub struct HitTable {
    pub path: HitPath,
    /// fedimds's 200 body on this path, which the baseline returns masked.
    pub body_bytes: usize,
    /// Rounds of alternating runs.
    pub rounds: usize,
    /// ("fedimds" | "baseline", connections) → one run per round.
    pub runs: BTreeMap<(&'static str, usize), Vec<Run>>,
    /// Exchanges during the runs (0: every answer was a hit).
    pub exchanges: u64,
    /// KiB, the daemon's peak `VmRSS` during its runs.
    pub peak_rss: u64,
}

/// fedimds and its baseline on one path.
pub struct Pair<'a> {
    pub fedimds: &'a Endpoint,
    pub daemon: &'a mut Proc,
    pub baseline: &'a Endpoint,
    pub base: &'a mut Proc,
}

/// Cache hits on `path`, fedimds and the baseline alternately at each of `settings.conns`,
/// each round flipping who goes first; the exchanges they cost are the caller's to count.
pub async fn alternate(
    hit: HitPath,
    body_bytes: usize,
    pair: Pair<'_>,
    rounds: usize,
    settings: &Settings,
) -> Result<HitTable> {
    let mut table = HitTable {
        path: hit,
        body_bytes,
        rounds,
        runs: BTreeMap::new(),
        exchanges: 0,
        peak_rss: 0,
    };
    let paths = Paths::One(hit.token_path(RESOURCE).into());
    for round in 0..rounds {
        for &conns in &settings.conns {
            progress!(
                "cache hits ({}): round {}/{rounds}, {conns} connections",
                hit.label(),
                round + 1,
            );
            let fedimds_first = round % 2 == 0;
            for step in 0..2 {
                let (name, endpoint) = if (step == 0) == fedimds_first {
                    ("fedimds", pair.fedimds)
                } else {
                    ("baseline", pair.baseline)
                };
                let sampler = (name == "fedimds").then(|| RssSampler::start(pair.daemon.pid()));
                let run =
                    load::run(endpoint, &paths, conns, settings.warmup, settings.duration).await?;
                if let Some(sampler) = sampler {
                    table.peak_rss = table.peak_rss.max(sampler.stop().await);
                }
                table.runs.entry((name, conns)).or_default().push(run);
            }
            pair.daemon.check_alive()?;
            pair.base.check_alive()?;
        }
    }
    Ok(table)
}

/// Starts the baseline for `hit` with `body` (fedimds's, masked) and `extra` flags; its guard
/// and address.
pub fn spawn_baseline(
    baseline: &Path,
    run_dir: &Path,
    hit: HitPath,
    body: &[u8],
    extra: &[&str],
) -> Result<(Proc, SocketAddr)> {
    let name = format!("baseline-{}", hit.dialect());
    let body_file = run_dir.join(format!("{name}-body.json"));
    std::fs::write(&body_file, mask_token(body)?)?;
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--dialect",
        hit.dialect(),
        "--body",
        path_str(&body_file)?,
    ];
    args.extend_from_slice(extra);
    let (proc, stdout) = Proc::spawn(&name, baseline, &args, run_dir, &[])?;
    let addr = procs::read_line_after(stdout, "listening on ", "the baseline")?
        .parse()
        .map_err(|e| format!("baseline address: {e}"))?;
    Ok((proc, addr))
}

/// Checks that the baseline answers `path` as fedimds does: a 200, a body of the same size, the
/// same headers (`Date` aside).
pub async fn same_answer(fedimds: &Endpoint, baseline: &Endpoint, path: &str) -> Result<usize> {
    let (f_status, f_headers, f_body) =
        Conn::connect(fedimds).await?.get_with_headers(path).await?;
    let (b_status, b_headers, b_body) = Conn::connect(baseline)
        .await?
        .get_with_headers(path)
        .await?;
    if f_status != 200 || b_status != 200 {
        return Err(format!("GET {path}: fedimds {f_status}, the baseline {b_status}").into());
    }
    if f_body.len() != b_body.len() {
        return Err(format!(
            "GET {path}: the baseline body is {} bytes, fedimds's {}",
            b_body.len(),
            f_body.len()
        )
        .into());
    }
    let (f, b) = (header_list(&f_headers), header_list(&b_headers));
    if f != b {
        return Err(
            format!("GET {path}: headers differ: fedimds {f:?}, the baseline {b:?}").into(),
        );
    }
    Ok(f_body.len())
}

/// The headers but `Date`, sorted, as text.
fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| *name != hyper::header::DATE)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

/// The App Service and Service Fabric tables: one daemon serving both, a baseline for each.
pub async fn dialects(
    world: &World,
    baseline: &Path,
    settings: &Settings,
) -> Result<Vec<HitTable>> {
    let run_dir = &world.run_dir;
    let secret = random_secret()?;
    let secret_file = run_dir.join("bench-secret");
    write_private(&secret_file, secret.as_bytes())?;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| format!("cannot generate the certificate: {e}"))?;
    let (cert_file, key_file) = (run_dir.join("sf.crt"), run_dir.join("sf.key"));
    std::fs::write(&cert_file, certified.cert.pem())?;
    write_private(&key_file, certified.signing_key.serialize_pem().as_bytes())?;
    let tls = tls_client(certified.cert.der().clone())?;

    // Two free ports, bound together so they differ, then released for the daemon to bind.
    let ports = [
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
    ];
    let (addr, sf_addr) = (ports[0].local_addr()?, ports[1].local_addr()?);
    drop(ports);
    let config = dialects_config(
        addr,
        sf_addr,
        world.sim_url(),
        &secret,
        &cert_file,
        &key_file,
    )?;
    let mut daemon = world.daemon_with("dialects", addr, &config)?;
    let secret_value = |name: &'static str, value: &str| -> Result<(HeaderName, HeaderValue)> {
        let mut value = HeaderValue::from_str(value)?;
        value.set_sensitive(true);
        Ok((HeaderName::from_static(name), value))
    };
    let app_service = Endpoint {
        addr,
        tls: None,
        header: secret_value("x-identity-header", &secret)?,
    };
    let fabric = Endpoint {
        addr: sf_addr,
        tls: Some(tls),
        header: secret_value("secret", &secret)?,
    };

    let mut tables = Vec::new();
    for (hit, fedimds) in [
        (HitPath::AppService, app_service),
        (HitPath::ServiceFabric, fabric),
    ] {
        let path = hit.token_path(RESOURCE);
        // The first request may be a miss; the second's body is a hit's.
        Conn::connect(&fedimds).await?.get_ok(&path).await?;
        let body = Conn::connect(&fedimds).await?.get_ok(&path).await?;
        let mut extra = vec!["--secret-file", path_str(&secret_file)?];
        if hit == HitPath::ServiceFabric {
            extra.extend([
                "--cert",
                path_str(&cert_file)?,
                "--key",
                path_str(&key_file)?,
            ]);
        }
        let (mut base, base_addr) = spawn_baseline(baseline, run_dir, hit, &body, &extra)?;
        let base_end = Endpoint {
            addr: base_addr,
            ..fedimds.clone()
        };
        let body_bytes = same_answer(&fedimds, &base_end, &path).await?;
        refuses_a_wrong_secret(&fedimds, &base_end, &path).await?;
        let before = world.counters().await?;
        let pair = Pair {
            fedimds: &fedimds,
            daemon: &mut daemon.proc,
            baseline: &base_end,
            base: &mut base,
        };
        let mut table = alternate(hit, body_bytes, pair, settings.path_rounds, settings).await?;
        table.exchanges = world.counters().await?.entra - before.entra;
        tables.push(table);
    }
    Ok(tables)
}

/// Both sides refuse a secret of the right length but wrong, the baseline with a 401: proof
/// that each makes the check the table claims.
async fn refuses_a_wrong_secret(fedimds: &Endpoint, baseline: &Endpoint, path: &str) -> Result<()> {
    let mut wrong = fedimds.header.1.as_bytes().to_vec();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let mut value = HeaderValue::from_bytes(&wrong)?;
    value.set_sensitive(true);
    for (side, endpoint, want) in [
        ("fedimds", fedimds, None),
        ("the baseline", baseline, Some(401)),
    ] {
        let endpoint = Endpoint {
            header: (endpoint.header.0.clone(), value.clone()),
            ..endpoint.clone()
        };
        let (status, _) = Conn::connect(&endpoint).await?.get(path).await?;
        if status == 200 || want.is_some_and(|w| w != status) {
            return Err(format!("GET {path} with a wrong secret: {side} answered {status}").into());
        }
    }
    Ok(())
}

/// The demo world's daemon (`daemon_config`) with one caller secret and the Service Fabric
/// listener on the given certificate.
fn dialects_config(
    addr: SocketAddr,
    sf_addr: SocketAddr,
    sim_url: &str,
    secret: &str,
    cert: &Path,
    key: &Path,
) -> Result<String> {
    let base = daemon_config(addr, sim_url);
    let server = format!("[server]\nidentity_header = \"{secret}\"\n");
    let mut config = base.replacen("[server]\n", &server, 1);
    if config == base {
        return Err("the daemon's config has no [server] table".into());
    }
    config.push_str(&format!(
        "\n[service_fabric]\nlisten = \"{sf_addr}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        path_str(cert)?,
        path_str(key)?
    ));
    Ok(config)
}

/// 256 bits from the OS, hex-encoded: the kind of secret the daemon generates by default.
fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file only its owner may read (replacing one left by an earlier run).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    Ok(())
}

/// A TLS client (ring, as the servers) that trusts `cert` alone and offers `http/1.1`.
fn tls_client(cert: CertificateDer<'static>) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
