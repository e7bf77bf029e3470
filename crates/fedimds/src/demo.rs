//! `fedimds demo` and `fedimds sim`: the built-in simulator, alone or with a daemon wired to it,
//! so fedimds can be tried, and SDKs pointed at it, with no Azure at all.

use std::future::Future;
use std::net::SocketAddr;

use fedimds_sim::{demo, Sim, SimConfig};

use crate::app::App;
use crate::config::raw::{RawCloud, RawServer, RawSource, RawTarget};
use crate::config::{self, Config, RawConfig};
use crate::http;

/// The daemon config for the demo world, pointed at a simulator at `sim_url`, as typed values:
/// tests start from it and change fields, never text.
pub fn raw_config(sim_url: &str, listen: SocketAddr) -> RawConfig {
    let target = |name: &str, tenant: &str, app: &str| RawTarget {
        name: Some(name.to_owned()),
        tenant_id: Some(tenant.to_owned()),
        client_id: Some(app.to_owned()),
        ..RawTarget::default()
    };
    RawConfig {
        server: RawServer {
            listen: Some(listen.to_string()),
            ..RawServer::default()
        },
        source: RawSource {
            kind: Some("imds".to_owned()),
            endpoint: Some(sim_url.to_owned()),
            client_id: Some(demo::MI_CLIENT_ID.to_owned()),
            ..RawSource::default()
        },
        cloud: RawCloud {
            name: Some("public".to_owned()),
            authority_host: Some(sim_url.to_owned()),
        },
        targets: vec![
            RawTarget {
                default: Some(true),
                allowed_tenants: Some(vec![demo::OTHER_TARGET_TENANT.to_owned()]),
                ..target("litware", demo::TARGET_TENANT, demo::APP_CLIENT_ID)
            },
            target("contoso", demo::OTHER_TARGET_TENANT, demo::APP_CLIENT_ID),
            target(
                "unconsented",
                demo::TARGET_TENANT,
                demo::UNCONSENTED_APP_CLIENT_ID,
            ),
        ],
        ..RawConfig::default()
    }
}

/// [`raw_config`] as TOML: what `fedimds sim` prints, and a worked example of the config format.
pub fn config_toml(sim_url: &str, listen: SocketAddr) -> String {
    toml::to_string(&raw_config(sim_url, listen))
        .unwrap_or_else(|e| unreachable!("the demo config renders as TOML: {e}"))
}

/// The validated demo config.
pub fn config(sim_url: &str, listen: SocketAddr) -> Config {
    let no_env = |_: &str| None;
    raw_config(sim_url, listen)
        .validate(&no_env)
        .unwrap_or_else(|e| unreachable!("the demo config is valid: {e}"))
}

/// Runs the simulator and a daemon wired to it until `shutdown`, after printing how to use it.
pub async fn run(
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let sim = Sim::start(SimConfig::demo(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot listen on {listen}: {e} (choose another address with --listen)")
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The admin listener on any free port beside the daemon, so the demo never collides.
    let admin = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
        .await
        .map_err(|e| format!("cannot listen for the admin endpoints: {e}"))?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let app = App::new(config(&sim.url(), addr)).map_err(|e| e.to_string())?;
    println!(
        "{}",
        instructions(addr, app.identity_header().expose(), &sim.url())
    );
    println!("Metrics: curl -s http://{admin_addr}/metrics\n");
    let listeners = http::Listeners {
        token: listener,
        unix: None,
        admin: Some(admin),
        service_fabric: None,
    };
    http::run(app, listeners, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Runs only the simulator of `world` (the demo world, perhaps with latencies) until `shutdown`.
pub async fn run_sim(
    world: SimConfig,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let latencies = [
        ("IMDS", world.imds_latency),
        ("App Service", world.app_service_latency),
        ("Entra", world.entra_latency),
    ];
    let sim = Sim::start(world, listen)
        .await
        .map_err(|e| format!("cannot start the simulator on {listen}: {e}"))?;
    let url = sim.url();
    let latency: String = latencies
        .iter()
        .filter_map(|(route, latency)| latency.map(|l| format!("  {route} answers after {l}\n")))
        .collect();
    println!(
        "fedimds simulator on {url}\n  IMDS:          {url}/metadata/identity/oauth2/token\n  App Service:   {url}/msi/token  (X-IDENTITY-HEADER: {header})\n  Entra:         {url}/{{tenant}}/oauth2/v2.0/token\n{latency}\nA daemon config for it:\n\n{config}",
        header = demo::IDENTITY_HEADER,
        config = config_toml(&url, config::DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!())),
    );
    shutdown.await;
    Ok(())
}

/// What `demo` prints: the lines that point each client at the daemon.
pub fn instructions(addr: SocketAddr, identity_header: &str, sim_url: &str) -> String {
    let base = format!("http://{addr}");
    format!(
        r#"fedimds demo: daemon on {base}, simulated IMDS and Entra on {sim_url}
Tokens are for target tenant {target} (app {app}).

curl (IMDS):
  curl -s -H 'Metadata: true' '{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com'

curl (App Service):
  curl -s -H 'X-IDENTITY-HEADER: {identity_header}' '{base}/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com'

Python azure-identity (IMDS mode):
  AZURE_POD_IDENTITY_AUTHORITY_HOST={base} python3 -c "from azure.identity import ManagedIdentityCredential as C; print(C().get_token('https://graph.microsoft.com/.default').token)"

Node @azure/identity (App Service mode):
  IDENTITY_ENDPOINT={base}/msi/token IDENTITY_HEADER={identity_header} node -e "new (require('@azure/identity').ManagedIdentityCredential)().getToken('https://graph.microsoft.com/.default').then(t => console.log(t.token))"

Rust azure_identity (App Service mode; its IMDS address is fixed at 169.254.169.254):
  export IDENTITY_ENDPOINT={base}/msi/token IDENTITY_HEADER={identity_header}
  # ManagedIdentityCredential::new(None)?.get_token(&["https://graph.microsoft.com/.default"], None).await?

Other targets: add tenant_id={other} (allowed for litware), or prefix the path with /targets/contoso.
A misconfigured target, to see fedimds's diagnosis: /targets/unconsented/metadata/identity/oauth2/token
Stop with Ctrl-C."#,
        target = demo::TARGET_TENANT,
        app = demo::APP_CLIENT_ID,
        other = demo::OTHER_TARGET_TENANT,
    )
}
