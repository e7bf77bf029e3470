//! fedimds: a local Azure managed-identity endpoint (IMDS and the App Service
//! `IDENTITY_ENDPOINT` family) that serves tokens for a **target tenant**. It gets a home-tenant
//! assertion, exchanges it at Entra as a `client_assertion` for a multi-tenant app, caches the
//! result and serves it to co-located processes.
//!
//! # Layout
//! - [`cli`]: the command line (`serve`, `check`, `config`, `demo`, `sim`).
//! - [`config`]: every key, environment variable and default; raw TOML to validated [`config::Config`].
//! - [`logging`]: tracing set-up (text or JSON, env filter).
//! - [`listener`]: accepting TCP and Unix-socket connections with limits; the peer's identity.
//! - [`caller`]: who is asking (peer, secret, `[[callers]]` rule), Host checks, rate limits.
//! - [`audit`]: one JSON line per token served or refused.
//! - [`metrics`]: Prometheus metrics for the admin listener.
//! - [`reload`]: config reload on SIGHUP or a file change.
//! - [`server`]: shared state ([`server::App`]), the router, serve and graceful shutdown.
//! - [`dialect`]: the wire dialects; each parses its requests and renders its answers.
//! - [`target`]: which target (tenant, app) a request means.
//! - [`cache`]: the token cache: single-flight fetches, refresh ahead, remembered failures.
//! - [`upstream`]: a fetch = assertion, then exchange; the cache key.
//! - [`assertion`]: the home-tenant assertion from IMDS, an identity endpoint, or a token file.
//! - [`exchange`]: the Entra client and the AADSTS diagnoses.
//! - [`retry`]: retry schedules, `Retry-After`, upstream error text.
//! - [`token`]: secrets and tokens as redacting types; refresh timing.
//! - [`demo`]: the built-in simulator wired to a daemon, for `fedimds demo`.
//! - [`check`]: `fedimds check`, the whole chain walked once with a diagnosis at each step.

pub mod assertion;
pub mod audit;
pub mod cache;
pub mod caller;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dialect;
pub mod exchange;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod retry;
pub mod server;
pub mod target;
pub mod token;
pub mod upstream;
