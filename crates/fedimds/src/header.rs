//! The request headers fedimds decides on that `http` has no constant for, as names made at
//! compile time: a lookup by `&str` parses and checks the name again on every request, and
//! these are read on every cache hit (`BENCHMARKS.md`, the hit path). A leaf.

use axum::http::HeaderName;

/// IMDS's `Metadata: true`.
pub const METADATA: HeaderName = HeaderName::from_static("metadata");

/// App Service's and Arc-era clients' caller secret.
pub const X_IDENTITY_HEADER: HeaderName = HeaderName::from_static("x-identity-header");

/// App Service 2017's and Service Fabric's caller secret.
pub const SECRET: HeaderName = HeaderName::from_static("secret");
