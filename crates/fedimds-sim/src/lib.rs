//! A faithful local stand-in for the upstreams fedimds talks to: Azure IMDS, the App Service
//! identity endpoint (api 2019-08-01) and Entra's v2 token endpoint.
//!
//! The simulator signs managed-identity tokens like IMDS does, verifies client assertions like
//! Entra does (signature, time window, federated-credential match in Entra's order) and answers
//! with the real wire shapes, so the daemon can be tested end to end without a cloud. Scripted
//! faults, per-route counters and a log of every exchange let tests prove retry, caching and
//! single-flight behaviour. It serves the daemon's tests, `fedimds demo` and `fedimds sim`, and
//! must never ship as part of the daemon's request path.
//!
//! # Debug routes
//!
//! For tests in other processes (the benchmark, the SDK conformance suite), the simulator also
//! answers routes that a real upstream would not have:
//!
//! - `GET /_sim/counters`: `{"imds": n, "app_service": n, "entra": n}`, the requests per route;
//! - `GET /_sim/exchanges`: every request Entra's route received, in order, as a JSON array of
//!   `{"tenant", "client_id", "scope", "access_token"}`, with `"claims"` when the request sent
//!   some (or `"error"` instead of `"access_token"`: an `AADSTS…` code, or `fault:<status>`). It exposes issued tokens, which
//!   is fine only because the simulator is never a real upstream. (Empty in a soak world.)
//! - `POST /_sim/faults?route=entra&status=429&retry_after=30&times=forever` queues a scripted
//!   fault (as [`Sim::push_fault`]; `times` defaults to 1), and `DELETE /_sim/faults` drops
//!   them all: the benchmark opens and closes an Entra 429 window with them.
//!
//! # Soak worlds
//!
//! A test that has Entra issue hundreds of thousands of tokens (`crates/fedimds/tests/soak.rs`:
//! thirty days of hourly tokens for a thousand keys) sets two fields of [`SimConfig`], each
//! off by default and never set by `fedimds demo` or `fedimds sim`:
//!
//! - [`SimConfig::entra_token_signing`] = [`TokenSigning::Hs256`]: access tokens signed with an
//!   HMAC, a microsecond each, not RSA, a millisecond (fedimds never verifies an access token;
//!   assertions stay RS256, and Entra verifies them);
//! - [`SimConfig::keep_records`] = `false`: no record of each exchange and issued token, only
//!   the counters, so the simulator's memory stays flat.
//!
//! Entra remembers each assertion whose signature verified, by its exact bytes, in any world:
//! a daemon presents the same assertion to every exchange for hours, so a soak costs one RSA
//! verification per assertion; the time window and the federated credential are checked on
//! every exchange.
//!
//! # Layout
//!
//! - [`config`]: the world the simulator knows (tenants, identities, apps, lifetimes).
//! - [`demo`]: a ready-made world with fixed ids, for the demo and for tests.
//! - [`fault`]: scripted replies per route ([`Route`], [`Fault`]).
//! - [`latency`]: a per-route wait with jitter before every answer ([`Latency`]).
//! - `token`: signing keys, claim sets and the JWT helpers.
//! - `server`: the [`Sim`] handle and the axum router; it mounts the route modules.
//! - `imds`, `app_service`, `entra`: one module per upstream route, each owning its wire shapes;
//!   `metadata`: the rest of IMDS (instance metadata, attested document, scheduled events,
//!   versions), which fedimds's passthrough forwards to.
//! - `state`: what the routes share (the world, the keys, the counters, faults and records the
//!   handle reads back) and the one lock helper.
//! - `wire`: the query parsing and JSON replies the routes share.
//!
//! Dependencies point one way: `server` → the route modules → `state`, `wire`, `token`; nothing
//! below `server` imports it.

pub mod config;
pub mod demo;
pub mod fault;
pub mod latency;

mod app_service;
mod entra;
mod imds;
mod metadata;
mod server;
mod state;
mod token;
mod wire;

pub use config::{App, FederatedCredential, Identity, SimConfig, TokenSigning};
pub use fault::{Fault, Route};
pub use latency::Latency;
pub use metadata::{instance as instance_document, SERVER as METADATA_SERVER};
pub use server::Sim;
pub use state::{Counters, ExchangeRecord, MetadataRecord};
