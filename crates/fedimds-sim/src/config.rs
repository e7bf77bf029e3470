//! The world the simulator knows: the home tenant and its managed identities, the multi-tenant
//! app registrations Entra knows, and the lifetimes of the tokens it issues.

use std::time::Duration;

use crate::fault::Route;
use crate::latency::Latency;

/// Default lifetime of managed-identity tokens; real IMDS hands out tokens valid for about 24 h.
pub const DEFAULT_MI_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Default `expires_in` of Entra app tokens; Entra answers client-credentials requests with
/// 3599 s (one hour minus the second it took).
pub const DEFAULT_ENTRA_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// Everything the simulator needs to know to answer like the real upstreams.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The tenant the managed identities live in; it names the issuer of their tokens.
    pub home_tenant: String,
    /// Managed identities that IMDS and the App Service endpoint can issue tokens for.
    pub identities: Vec<Identity>,
    /// Multi-tenant app registrations Entra knows, with their consents and FICs.
    pub apps: Vec<App>,
    /// The secret the App Service endpoint requires in `X-IDENTITY-HEADER`.
    pub identity_header: String,
    /// Lifetime of managed-identity tokens (IMDS and App Service).
    pub mi_token_lifetime: Duration,
    /// `expires_in` of Entra tokens.
    pub entra_token_lifetime: Duration,
    /// When set, Entra's 200 carries `refresh_in` with this many seconds.
    pub entra_refresh_in: Option<Duration>,
    /// How Entra signs the access tokens it issues: RS256 like Entra unless a soak test asks
    /// for the cheap [`TokenSigning::Hs256`].
    pub entra_token_signing: TokenSigning,
    /// Whether the simulator keeps a record of every Entra exchange and every token it
    /// issues (`Sim::exchanges`, `Sim::issued`, `GET /_sim/exchanges`): on, but for soak tests
    /// whose hundreds of thousands of exchanges would make them a gigabyte. Off, those stay
    /// empty and only the counters count (`Sim::counters`).
    pub keep_records: bool,
    /// OIDC issuers (e.g. a Kubernetes cluster) whose tokens Entra trusts; the simulator signs
    /// their tokens with its own key, so Entra "fetches" that key for them.
    pub k8s_issuers: Vec<String>,
    /// How long IMDS's token route waits before every answer (faults included); none = at once.
    pub imds_latency: Option<Latency>,
    /// The same for the App Service identity endpoint.
    pub app_service_latency: Option<Latency>,
    /// The same for Entra's token route.
    pub entra_latency: Option<Latency>,
}

/// How the simulator's Entra signs the access tokens it issues. Assertions (managed-identity
/// and service-account tokens) are always RS256: Entra verifies those, so they stay genuine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenSigning {
    /// RS256 with the simulator's key and `kid`, as Entra signs: the default.
    #[default]
    Rs256,
    /// HS256 with a fixed secret, for soak tests that have Entra issue hundreds of thousands
    /// of tokens: an RSA signature costs about a millisecond, an HMAC a microsecond. A resource
    /// that verified signatures would refuse these tokens; fedimds never verifies a target
    /// token (it serves it as it came), so it serves these the same. Never used by
    /// `fedimds demo` or `fedimds sim`: SDK clients there see tokens shaped like Entra's.
    Hs256,
}

/// A managed identity in the home tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The identity's client (application) id; ends up in `appid`/`azp`.
    pub client_id: String,
    /// The identity's object (principal) id; ends up in `sub`/`oid`, and is what a FIC names.
    pub object_id: String,
    /// The ARM resource id of the identity (`msi_res_id` / `mi_res_id`).
    pub resource_id: String,
    /// Whether this is the system-assigned identity, used when a request names no identity.
    pub system_assigned: bool,
}

/// A multi-tenant app registration, as Entra sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// The app's client id.
    pub client_id: String,
    /// Tenants in which the app has a service principal (admin consent was granted).
    pub consented_tenants: Vec<String>,
    /// The app's federated identity credentials.
    pub federated_credentials: Vec<FederatedCredential>,
}

/// A federated identity credential; Entra matches it exactly and case-sensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedCredential {
    /// Must equal the assertion's `iss` byte for byte.
    pub issuer: String,
    /// Must equal the assertion's `sub`.
    pub subject: String,
    /// Must equal the assertion's `aud`.
    pub audience: String,
}

// === impl SimConfig ===

impl SimConfig {
    /// A world with only a home tenant and default lifetimes; add identities and apps to it.
    pub fn empty(home_tenant: impl Into<String>) -> SimConfig {
        SimConfig {
            home_tenant: home_tenant.into(),
            identities: Vec::new(),
            apps: Vec::new(),
            identity_header: String::new(),
            mi_token_lifetime: DEFAULT_MI_TOKEN_LIFETIME,
            entra_token_lifetime: DEFAULT_ENTRA_TOKEN_LIFETIME,
            entra_refresh_in: None,
            entra_token_signing: TokenSigning::Rs256,
            keep_records: true,
            k8s_issuers: Vec::new(),
            imds_latency: None,
            app_service_latency: None,
            entra_latency: None,
        }
    }

    /// The issuer Entra puts in managed-identity tokens of the home tenant; FICs that trust a
    /// managed identity name exactly this value.
    pub fn mi_issuer(&self) -> String {
        mi_issuer(&self.home_tenant)
    }

    /// The latency configured for `route`.
    pub fn latency(&self, route: Route) -> Option<Latency> {
        match route {
            // The rest of IMDS is IMDS: the same host, the same wait.
            Route::Imds | Route::Metadata => self.imds_latency,
            Route::AppService => self.app_service_latency,
            Route::Entra => self.entra_latency,
        }
    }
}

/// The issuer of managed-identity tokens for `tenant` (global cloud).
pub fn mi_issuer(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/v2.0")
}
