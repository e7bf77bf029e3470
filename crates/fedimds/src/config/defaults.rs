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
/// Calls to Entra per second, sustained (`upstream.max_requests_per_second`). Entra publishes
/// no limit for workforce tenants; 20 a second per client address is the one figure Microsoft
/// states (External ID tenants), and it answers 429 with `Retry-After: 60` to clients that send
/// more (`docs/entra-exchange.md#entra-retries`). A sidecar needs a handful of calls an hour; a
/// node daemon holding thousands of keys is told at start whether they fit.
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: f64 = 20.0;
/// Calls to Entra at once after a quiet spell (`upstream.burst`): two seconds' worth, so a
/// sidecar's few cold keys at start all go at once.
pub const DEFAULT_BURST: u32 = 40;
/// Calls to the assertion source per second (`upstream.assertion_requests_per_second`): half of
/// IMDS's own limit for managed-identity requests (20 a second per VM,
/// `docs/entra-exchange.md#assertion-source`), which every process on the VM shares; the assertion
/// is cached for hours, so fedimds rarely needs one a minute.
pub const DEFAULT_ASSERTION_REQUESTS_PER_SECOND: f64 = 10.0;
/// Calls to the assertion source at once (`upstream.assertion_burst`): IMDS takes at most 5
/// managed-identity requests at once per VM.
pub const DEFAULT_ASSERTION_BURST: u32 = 5;
/// Start-up prefetch waits a random part of this first, so replicas started together do not
/// call Entra (and then refresh) in step; short, because `/readyz` waits for the prefetch.
pub const PREFETCH_SPREAD: Duration = Duration::from_secs(2);
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
/// How often the cache's bookkeeping runs on its own, at most: keys idle past
/// `cache.idle_ttl` leave within two of its passes even when no request comes. A short
/// `idle_ttl` makes the passes come more often ([`housekeeping_interval`]).
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest time between two passes of the cache's bookkeeping.
const MIN_HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);

/// How often the cache's bookkeeping runs for a given `cache.idle_ttl`: a quarter of it, at
/// most [`HOUSEKEEPING_INTERVAL`], so an idle key leaves within about one and a half times
/// `idle_ttl` (it is seen idle from the first pass after its last use). Ten seconds for
/// `idle_ttl = "5s"` kept keys four times as long as asked, and memory with them
/// (`BENCHMARKS.md`, the memory soak).
pub fn housekeeping_interval(idle_ttl: Duration) -> Duration {
    (idle_ttl / 4).clamp(MIN_HOUSEKEEPING_INTERVAL, HOUSEKEEPING_INTERVAL)
}
/// Keys not asked for in this long are dropped and no longer refreshed.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Largest form body accepted (Automation's POST carries two short parameters).
pub const MAX_BODY: usize = 16 * 1024;
/// The most of a caller secret file read: a few secrets, one per line, with room to spare.
pub const MAX_SECRET_FILE_BYTES: usize = 4096;
/// How often caller secret files are read again: a rotated Kubernetes Secret reaches the
/// mounted file within the kubelet's sync period (about a minute); a few seconds more is
/// nothing beside it, and reading a few small files that often costs nothing.
pub const SECRET_FILE_POLL: Duration = Duration::from_secs(2);
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

/// `[imds] upstream`: the real IMDS the passthrough forwards to (in capture mode fedimds's own
/// user is not captured, so this address reaches it).
pub const DEFAULT_IMDS_UPSTREAM: &str = "http://169.254.169.254";
/// Connecting to the real IMDS, a link-local address on the host: it answers in microseconds or
/// not at all, so a caller learns quickly that it is down (azcopy gives up after 3 s).
pub const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// From sending a forwarded request to the last byte of its answer: IMDS answers in
/// milliseconds; past this the caller gets a 504 rather than a stalled connection.
pub const PASSTHROUGH_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Forwarded requests in flight at most, on a bound of their own: a slow or hung real IMDS
/// holds at most these, never the token paths' connections or fetches; more get a 503 at once.
pub const PASSTHROUGH_MAX_IN_FLIGHT: usize = 64;
/// The largest forwarded answer: the whole instance document is a few tens of KB.
pub const PASSTHROUGH_MAX_ANSWER: usize = 1024 * 1024;
/// `app_service.legacy_expires_on`: chosen per caller, because the clients of the 2017-09-01
/// dialect disagree: pre-2022 azure-identity (Python 1.5, JS 1.x–2.x) parse only the date App
/// Service wrote, MSAL-era ones only epoch seconds (`docs/client-protocols.md#app-service-2017`).
pub const DEFAULT_LEGACY_EXPIRES_ON: super::LegacyExpiresOn = super::LegacyExpiresOn::Auto;
/// The name of the `[source]` table among the sources: what a target that names no source uses.
pub const DEFAULT_SOURCE: &str = "default";
