//! fedimds: a local Azure managed-identity endpoint (IMDS and the App Service
//! `IDENTITY_ENDPOINT` family) that serves tokens for a **target tenant**. It gets a home-tenant
//! assertion, exchanges it at Entra as a `client_assertion` for a multi-tenant app, caches the
//! result and serves it to co-located processes.
//!
//! # Layout
//! Dependencies point down this list, never up: a module imports only modules below it.
//! - [`logging`]: tracing set-up (text or JSON, env filter).
//! - [`cli`]: the command line (`serve`, `check`, `config`, `demo`, `sim`).
//! - [`demo`]: the built-in simulator wired to a daemon, for `fedimds demo`.
//! - [`check`]: `fedimds check`, the whole chain walked once with a diagnosis at each step.
//! - [`reload`]: config reload on SIGHUP or a file change.
//! - [`http`]: the routers, binding and serving; [`http::call`] is the one request path, whose
//!   [`http::door`] refuses proxy, browser and ambiguous requests first;
//!   [`http::passthrough`] forwards the rest of IMDS; [`http::listener`] accepts connections
//!   (TCP, Unix, TLS with [`http::tls`]'s certificate) with limits and knows each peer.
//! - [`app`]: the shared state ([`app::App`]): settings swapped whole on reload, cache,
//!   metrics, audit, readiness, prefetch.
//! - [`dialect`]: the wire dialects; each parses its requests and renders its answers.
//! - [`refusal`]: why a request gets no token, and the one status table.
//! - [`caller`]: who is asking (peer, secret, `[[callers]]` rule), Host checks, rate limits.
//! - [`target`]: which target (tenant, app) a request means.
//! - [`audit`]: one JSON line per token served or refused.
//! - [`cache`]: the token cache: single-flight fetches, refresh ahead, remembered failures.
//! - [`upstream`]: a fetch = assertion ([`upstream::assertion`], one provider per source),
//!   then exchange ([`upstream::exchange`]), each call taking its turn in
//!   [`upstream::budget`]; the cache key; [`upstream::diagnosis`] explains AADSTS codes.
//! - [`retry`]: retry schedules, `Retry-After`, upstream error text.
//! - [`config`]: every key, environment variable and default; raw TOML to validated
//!   [`config::Config`].
//! - [`cloud`]: every per-cloud fact (hosts, audiences, ARM, consent URL).
//! - [`metrics`]: Prometheus metrics for the admin listener; a leaf.
//! - [`peer`]: the other end of a connection, and the owner of a local TCP peer's socket.
//! - [`fsutil`]: files other users must not read or redirect (secret, keys, audit); a leaf.
//! - [`header`]: the request headers read on every request, as names made once; a leaf.
//! - [`token`]: secrets and tokens as redacting types; refresh timing.

pub mod app;
pub mod audit;
pub mod cache;
pub mod caller;
pub mod check;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod demo;
pub mod dialect;
pub mod fsutil;
pub mod header;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod refusal;
pub mod reload;
pub mod retry;
pub mod target;
pub mod token;
pub mod upstream;
