//! Every environment variable, default and fixed limit the daemon reads, named once, each with
//! the reason for its value.

use std::time::Duration;

/// Environment variable naming the config file.
pub const ENV_CONFIG: &str = "FEDIMDS_CONFIG";
/// App Service-style source: the endpoint, as App Service sets it.
pub const ENV_IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// App Service-style source: the secret, as App Service sets it.
pub const ENV_IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// Token-file source: the projected service-account token, as workload identity sets it.
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// `server.identity_header` when the file has none, so a Kubernetes Secret can supply it.
pub const ENV_SERVER_IDENTITY_HEADER: &str = "FEDIMDS_IDENTITY_HEADER";
/// `upstream.entra_proxy = "env"`: the proxy, by the convention curl and reqwest share
/// (upper case first, as reqwest reads them).
pub const ENV_HTTPS_PROXY: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
/// `upstream.entra_proxy = "env"`: hosts reached directly, by the same convention.
pub const ENV_NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// The value of `upstream.entra_proxy` that reads [`ENV_HTTPS_PROXY`] and [`ENV_NO_PROXY`]:
/// one key for the proxy, so no config can both name a proxy and ask for the environment's.
pub const ENTRA_PROXY_FROM_ENV: &str = "env";
/// The log filter (tracing's env-filter syntax), before `RUST_LOG`.
pub const ENV_LOG: &str = "FEDIMDS_LOG";
/// `--log-format` when the flag is not given: `text` or `json`.
pub const ENV_LOG_FORMAT: &str = "FEDIMDS_LOG_FORMAT";

/// The log filter when no variable sets one: our own info lines (the daemon's and the
/// simulator's), others' warnings.
pub const DEFAULT_LOG_FILTER: &str = "fedimds=info,fedimds_sim=info,warn";
/// Where `fedimds sim` listens.
pub const DEFAULT_SIM_LISTEN: &str = "127.0.0.1:8282";
/// Loopback only, on a port nothing of Azure's uses.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8181";
/// The admin listener (health, readiness, metrics): loopback, next to the token port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8182";
/// Open connections at most; past this, accepting waits (backpressure, not failure).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Open connections from one peer at most (a local uid, or a remote address): half the
/// overall cap, so one caller can never take every place.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = DEFAULT_MAX_CONNECTIONS / 2;
/// New keys (tokens the cache does not hold) one caller may ask for per second, with a burst of
/// ten seconds' worth: an app starting with a few hundred resources gets them at once, and a
/// caller minting resources or tenants cannot make fedimds a flood of Entra calls.
pub const DEFAULT_NEW_KEYS_PER_SECOND: f64 = 50.0;
/// File descriptors kept free beside the connections: sockets to upstreams, files, the
/// listeners, the runtime's own.
pub const RESERVED_FDS: u64 = 64;
/// Upstream fetches in flight at most: cold keys beyond this wait their turn (within
/// `server.miss_timeout`), so a flood of new keys cannot open a connection to Entra each.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 16;
/// The cache's size bound in bytes (keys and tokens, with moka's own overhead).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// What an entry weighs besides its key and token: the slot, its timers, moka's bookkeeping.
pub const CACHE_ENTRY_OVERHEAD: u32 = 1024;
/// Tokens `fedimds_token_expiry_seconds` shows one by one (the soonest to expire), so
/// `/metrics` stays small whatever the number of keys; the soonest of all is its own gauge.
pub const MAX_EXPIRY_SERIES: usize = 64;
/// The largest upstream answer read: token answers are a few KB.
pub const MAX_UPSTREAM_BODY: usize = 1024 * 1024;
/// The shortest token lifetime accepted from Entra: anything shorter could not be served
/// before it expired, and would cost an exchange per request.
pub const MIN_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest resource accepted: real resource URIs are well under it, and a longer one can
/// only cost memory and an Entra call.
pub const MAX_RESOURCE_LEN: usize = 1024;
/// A client must send its whole request head within this, or is dropped (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line plus headers); SDK requests are under 2 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Mode of the Unix socket: owner and group may connect.
pub const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o660;
/// Where Arc clients insist on reading challenge key files.
pub const DEFAULT_ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";
/// Real IMDS.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Upstream connect timeout: a local IMDS or a healthy Entra front door answers in
/// milliseconds; a dead route should fail fast so the retry can go elsewhere.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upstream total timeout per attempt: Entra's p99 is well under this.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits on a cold miss before it gets 503 + Retry-After and its SDK's own
/// retry takes over. Below every SDK's own timeout, so callers see our answer, not theirs.
pub const DEFAULT_MISS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a permanent upstream error (a configuration error in Entra) is remembered, so a
/// crowd of callers sends Entra a handful of requests, never enough to trip its loop detection
/// (15 identical requests in 5 minutes).
pub const DEFAULT_ERROR_TTL: Duration = Duration::from_secs(30);
/// Cached (target, resource) keys at most; an entry is a few hundred bytes.
pub const DEFAULT_MAX_KEYS: u64 = 100_000;
/// How often one key's token may be dropped and fetched anew because a caller presented its
/// hash (a resource refused it): a client that retries a refused call at once gets the new
/// token from the cache, and a caller cannot use revocation to call Entra in a loop.
pub const DEFAULT_MIN_FORCED_REFRESH: Duration = Duration::from_secs(5);
/// How often the cache's bookkeeping runs on its own: keys idle past `cache.idle_ttl` leave
/// within this even when no request comes.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);
/// Keys not asked for in this long are dropped and no longer refreshed.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Largest form body accepted (Automation's POST carries two short parameters).
pub const MAX_BODY: usize = 16 * 1024;
/// How long in-flight requests get to finish after shutdown is asked for: short, so a
/// Kubernetes Job with fedimds as a sidecar finishes promptly.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// An Arc challenge key is good for this long: a client reads it and retries at once.
pub const ARC_KEY_TTL: Duration = Duration::from_secs(60);
/// Outstanding Arc challenges at most; past this, new challenges are refused (429) until keys
/// are used or expire, rather than outstanding ones dropped: a flood must not cost another
/// caller the key it is about to present.
pub const ARC_MAX_KEYS: usize = 256;
/// Outstanding Arc challenges per caller at most (a `[[callers]]` rule, else a peer address or
/// uid): a quarter of [`ARC_MAX_KEYS`], so one caller cannot take every place. A client
/// presents its key at once, so a caller rarely holds more than one.
pub const ARC_MAX_KEYS_PER_CALLER: usize = ARC_MAX_KEYS / 4;
/// The smallest request-head bound that still fits every SDK's request with room to spare.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// The name of the `[source]` table among the sources: what a target that names no source uses.
pub const DEFAULT_SOURCE: &str = "default";
