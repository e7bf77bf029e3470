//! A ready-made world with fixed, GUID-looking ids, shared by `fedimds demo`, `fedimds sim` and
//! the tests, so every one of them can name the same identities and apps.
//!
//! This file is where the ids are defined. Copies elsewhere in the repository (configs, suites,
//! drivers, the benchmark, docs) must match these constants exactly: `tests/demo_ids.rs` scans
//! every tracked file for strings shaped like them and fails on any that drifted.

use crate::config::{mi_issuer, App, FederatedCredential, Identity, SimConfig};

/// The tenant the managed identities live in.
pub const HOME_TENANT: &str = "11111111-1111-4111-8111-111111111111";
/// A tenant where [`APP_CLIENT_ID`] is consented.
pub const TARGET_TENANT: &str = "22222222-2222-4222-8222-222222222222";
/// A second tenant where [`APP_CLIENT_ID`] is consented.
pub const OTHER_TARGET_TENANT: &str = "33333333-3333-4333-8333-333333333333";
/// The multi-tenant app whose FICs trust the demo identities.
pub const APP_CLIENT_ID: &str = "aaaaaaaa-0000-4000-8000-00000000a001";
/// An app that exists but is consented nowhere (AADSTS700016 in every tenant).
pub const UNCONSENTED_APP_CLIENT_ID: &str = "aaaaaaaa-0000-4000-8000-00000000a002";
/// Client id of the user-assigned identity.
pub const MI_CLIENT_ID: &str = "bbbbbbbb-0000-4000-8000-00000000b001";
/// Object (principal) id of the user-assigned identity.
pub const MI_OBJECT_ID: &str = "cccccccc-0000-4000-8000-00000000c001";
/// ARM resource id of the user-assigned identity.
pub const MI_RESOURCE_ID: &str = "/subscriptions/dddddddd-0000-4000-8000-00000000d001/resourceGroups/demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/fedimds-demo";
/// Client id of the system-assigned identity.
pub const SYSTEM_MI_CLIENT_ID: &str = "bbbbbbbb-0000-4000-8000-00000000b002";
/// Object (principal) id of the system-assigned identity.
pub const SYSTEM_MI_OBJECT_ID: &str = "cccccccc-0000-4000-8000-00000000c002";
/// ARM resource id of the system-assigned identity (the VM itself).
pub const SYSTEM_MI_RESOURCE_ID: &str = "/subscriptions/dddddddd-0000-4000-8000-00000000d001/resourceGroups/demo/providers/Microsoft.Compute/virtualMachines/fedimds-demo-vm";
/// The App Service `X-IDENTITY-HEADER` secret of the demo world.
pub const IDENTITY_HEADER: &str = "fedimds-demo-identity-header-secret";
/// A Kubernetes OIDC issuer; the trailing slash is deliberate, as on AKS.
pub const K8S_ISSUER: &str = "https://oidc.demo.fedimds.invalid/cluster/";
/// The service-account subject the demo FIC trusts.
pub const K8S_SUBJECT: &str = "system:serviceaccount:default:app";
/// The FIC audience of the global cloud.
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The FIC audience of the US Government cloud.
pub const EXCHANGE_AUDIENCE_USGOV: &str = "api://AzureADTokenExchangeUSGov";
/// The FIC audience of the China cloud.
pub const EXCHANGE_AUDIENCE_CHINA: &str = "api://AzureADTokenExchangeChina";

impl SimConfig {
    /// The demo world: one user-assigned and one system-assigned identity in [`HOME_TENANT`],
    /// [`APP_CLIENT_ID`] consented in two target tenants and trusting both identities and the
    /// demo cluster, and [`UNCONSENTED_APP_CLIENT_ID`] consented nowhere.
    pub fn demo() -> SimConfig {
        let issuer = mi_issuer(HOME_TENANT);
        let fic = |issuer: &str, subject: &str, audience: &str| FederatedCredential {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            audience: audience.to_owned(),
        };
        SimConfig {
            identities: vec![
                Identity {
                    client_id: MI_CLIENT_ID.to_owned(),
                    object_id: MI_OBJECT_ID.to_owned(),
                    resource_id: MI_RESOURCE_ID.to_owned(),
                    system_assigned: false,
                },
                Identity {
                    client_id: SYSTEM_MI_CLIENT_ID.to_owned(),
                    object_id: SYSTEM_MI_OBJECT_ID.to_owned(),
                    resource_id: SYSTEM_MI_RESOURCE_ID.to_owned(),
                    system_assigned: true,
                },
            ],
            apps: vec![
                App {
                    client_id: APP_CLIENT_ID.to_owned(),
                    consented_tenants: vec![
                        TARGET_TENANT.to_owned(),
                        OTHER_TARGET_TENANT.to_owned(),
                    ],
                    federated_credentials: vec![
                        fic(&issuer, MI_OBJECT_ID, EXCHANGE_AUDIENCE),
                        fic(&issuer, SYSTEM_MI_OBJECT_ID, EXCHANGE_AUDIENCE),
                        fic(K8S_ISSUER, K8S_SUBJECT, EXCHANGE_AUDIENCE),
                        // Entra allows one audience per FIC, so each cloud needs its own.
                        fic(&issuer, MI_OBJECT_ID, EXCHANGE_AUDIENCE_USGOV),
                        fic(&issuer, MI_OBJECT_ID, EXCHANGE_AUDIENCE_CHINA),
                    ],
                },
                App {
                    client_id: UNCONSENTED_APP_CLIENT_ID.to_owned(),
                    consented_tenants: Vec::new(),
                    federated_credentials: vec![fic(&issuer, MI_OBJECT_ID, EXCHANGE_AUDIENCE)],
                },
            ],
            identity_header: IDENTITY_HEADER.to_owned(),
            k8s_issuers: vec![K8S_ISSUER.to_owned()],
            ..SimConfig::empty(HOME_TENANT)
        }
    }
}
