//! Black-box tests: the daemon on 127.0.0.1:0, against the simulator on 127.0.0.1:0, over real
//! HTTP. One test binary; one module per concern.

// A test crate has no public API: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

mod support;

mod bounds;
mod budget;
mod check;
mod dialects;
mod door;
mod dotnet_replay;
mod end_to_end;
mod errors;
mod files;
mod hardening;
mod home;
mod leaks;
mod legacy_dates;
mod node_mode;
mod operations;
mod passthrough;
mod proxy;
mod resilience;
mod revocation;
mod security;
mod service_fabric;
mod soak;
mod sources;
mod throttle;
