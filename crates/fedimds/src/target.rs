//! Which target a request means: a `/targets/{name}` path prefix; else an identity parameter
//! (`client_id`, `object_id`, a resource id) naming a target; else the default target. A
//! `tenant_id` parameter picks the tenant among those the target allows.

use crate::config::{is_guid, AllowedTenants, Config, Target};

/// What a request says about the identity it wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selector<'a> {
    /// The `/targets/{name}` prefix.
    pub prefix: Option<&'a str>,
    /// `client_id` (or `clientid`).
    pub client_id: Option<&'a str>,
    /// `object_id` / `principal_id`.
    pub object_id: Option<&'a str>,
    /// `msi_res_id` / `mi_res_id` / `resource_id` / `msi-res-id`.
    pub resource_id: Option<&'a str>,
    /// `tenant_id`.
    pub tenant_id: Option<&'a str>,
}

/// Why no target fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Nothing matches; dialects answer with their "identity not found".
    #[error("Identity not found")]
    IdentityNotFound,
    /// Several targets match and no `tenant_id` tells them apart.
    #[error("several targets match {id}; add tenant_id= to choose one of tenants {tenants}")]
    Ambiguous {
        /// The identifier given.
        id: String,
        /// The candidate tenants.
        tenants: String,
    },
    /// The target exists but may not be used for that tenant.
    #[error(
        "target '{target}' does not allow tenant '{tenant}' (set allowed_tenants to allow it)"
    )]
    TenantNotAllowed {
        /// The target.
        target: String,
        /// The tenant asked for.
        tenant: String,
    },
    /// A tenant named by a domain where only an id will do.
    #[error("tenant_id '{tenant}' must be the tenant's id (a GUID): with [[callers]] grants, a domain name could name the tenant of a target the caller is not granted")]
    TenantNotAnId {
        /// The tenant asked for.
        tenant: String,
    },
    /// The resource is not on the target's allow-list.
    #[error("resource '{resource}' is not allowed for target '{target}' (allowed: {allowed})")]
    ResourceNotAllowed {
        /// The resource asked for.
        resource: String,
        /// The target.
        target: String,
        /// Its allow-list.
        allowed: String,
    },
}

/// A resolved request: the target and the tenant to ask for.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'c, 'r> {
    /// The target.
    pub target: &'c Target,
    /// The tenant: the target's own, or one it allows.
    pub tenant: &'r str,
    /// The resource to key and scope by: the allow-list's own spelling of what was asked
    /// (case and a trailing slash aside), or the request's when the target has no list, so
    /// spellings of one resource share one token and one Entra call.
    pub resource: &'r str,
}

/// Finds the target and tenant a request means, and checks the resource against the allow-list.
pub fn resolve<'c: 'r, 'r>(
    config: &'c Config,
    sel: &Selector<'r>,
    resource: &'r str,
) -> Result<Resolved<'c, 'r>, TargetError> {
    let target = pick(config, sel, resource)?;
    // The tenant as the config spells it, when the config names it: one key, one Entra URL,
    // whatever spelling the caller used.
    let tenant = match sel.tenant_id {
        None => target.tenant_id.as_str(),
        Some(t) if t.eq_ignore_ascii_case(&target.tenant_id) => target.tenant_id.as_str(),
        // With grants, a tenant is told apart from another target's only by its id: a domain
        // name could be another name of that very tenant.
        Some(t) if !config.callers.is_empty() && !is_guid(t) => {
            return Err(TargetError::TenantNotAnId {
                tenant: t.to_owned(),
            })
        }
        Some(t) => match &target.allowed_tenants {
            AllowedTenants::Listed(list) => list
                .iter()
                .find(|listed| listed.eq_ignore_ascii_case(t))
                .map(String::as_str)
                .ok_or_else(|| TargetError::TenantNotAllowed {
                    target: target.name.clone(),
                    tenant: t.to_owned(),
                })?,
            // Already lower case (the dialects lower it).
            AllowedTenants::Any => t,
            AllowedTenants::None => {
                return Err(TargetError::TenantNotAllowed {
                    target: target.name.clone(),
                    tenant: t.to_owned(),
                })
            }
        },
    };
    let Some(resource) = target.allowed_spelling(resource) else {
        return Err(TargetError::ResourceNotAllowed {
            resource: resource.to_owned(),
            target: target.name.clone(),
            allowed: target.resources.as_deref().unwrap_or_default().join(", "),
        });
    };
    Ok(Resolved {
        target,
        tenant,
        resource,
    })
}

fn pick<'c>(
    config: &'c Config,
    sel: &Selector<'_>,
    resource: &str,
) -> Result<&'c Target, TargetError> {
    if let Some(name) = sel.prefix {
        return config.target(name).ok_or(TargetError::IdentityNotFound);
    }
    let id = match (sel.client_id, sel.object_id, sel.resource_id) {
        (Some(id), _, _) => Id::Client(id),
        (None, Some(id), _) => Id::Object(id),
        (None, None, Some(id)) => Id::Resource(id),
        (None, None, None) => return routed(config, resource),
    };
    let candidates: Vec<&Target> = config.targets.iter().filter(|t| id.matches(t)).collect();
    match candidates.as_slice() {
        [] => Err(TargetError::IdentityNotFound),
        [one] => Ok(one),
        several => {
            // Several targets share an app: the tenant tells them apart, own tenant first.
            if let Some(tenant) = sel.tenant_id {
                if let Some(t) = several
                    .iter()
                    .find(|t| t.tenant_id.eq_ignore_ascii_case(tenant))
                {
                    return Ok(t);
                }
                let allowing: Vec<_> = several.iter().filter(|t| t.allows_tenant(tenant)).collect();
                if let [one] = allowing.as_slice() {
                    return Ok(one);
                }
            }
            // Home-identity targets of one identity share its client id; their resource lists
            // tell them apart.
            let listing: Vec<_> = several
                .iter()
                .filter(|t| !t.exchange && t.resources.is_some() && t.allows_resource(resource))
                .collect();
            if let [one] = listing.as_slice() {
                return Ok(one);
            }
            Err(TargetError::Ambiguous {
                id: id.value().to_owned(),
                tenants: several
                    .iter()
                    .map(|t| t.tenant_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

/// An identity parameter, and how it names a target.
#[derive(Debug, Clone, Copy)]
enum Id<'a> {
    /// A target's app client id, or its name.
    Client(&'a str),
    /// A target's declared `object_id` alias.
    Object(&'a str),
    /// A target's declared `resource_id` alias.
    Resource(&'a str),
}

impl<'a> Id<'a> {
    fn matches(self, t: &Target) -> bool {
        let alias = |declared: &Option<String>, id: &str| {
            declared
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(id))
        };
        match self {
            Id::Client(id) => t.client_id.eq_ignore_ascii_case(id) || t.name == id,
            Id::Object(id) => alias(&t.object_id, id),
            Id::Resource(id) => alias(&t.resource_id, id),
        }
    }

    fn value(self) -> &'a str {
        match self {
            Id::Client(id) | Id::Object(id) | Id::Resource(id) => id,
        }
    }
}

/// A request that names no target: a resource on a home-identity target's `resources` list
/// goes to that target (`exchange = false`: the runbook that asks for the exchange audience
/// itself gets the home assertion it expects); anything else to the default target.
fn routed<'c>(config: &'c Config, resource: &str) -> Result<&'c Target, TargetError> {
    // At most one lists it: the config refuses two home-identity targets listing one resource.
    config
        .targets
        .iter()
        .find(|t| !t.exchange && t.resources.is_some() && t.allows_resource(resource))
        .or_else(|| default_target(config))
        .ok_or(TargetError::IdentityNotFound)
}

/// The target marked `default = true`, or the only one that exchanges: a home-identity target
/// (`exchange = false`) is the default only when the config says so, and adding one to a
/// config of one target leaves that target the default.
pub fn default_target(config: &Config) -> Option<&Target> {
    config.targets.iter().find(|t| t.default).or_else(|| {
        let mut exchanging = config.targets.iter().filter(|t| t.exchange);
        match (exchanging.next(), exchanging.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let no_env = |_: &str| None;
        Config::from_toml(
            r#"
[[targets]]
name = "litware"
tenant_id = "t-litware"
client_id = "app-1"
resources = ["https://graph.microsoft.com"]
allowed_tenants = ["t-extra"]
object_id = "obj-litware"
resource_id = "/subscriptions/s/rg/litware"
default = true

[[targets]]
name = "contoso"
tenant_id = "t-contoso"
client_id = "app-1"

[[targets]]
name = "fabrikam"
tenant_id = "t-fabrikam"
client_id = "app-2"
allowed_tenants = ["*"]
"#,
            "t",
            &no_env,
        )
        .unwrap()
    }

    fn name(r: Result<Resolved<'_, '_>, TargetError>) -> (String, String) {
        let r = r.unwrap();
        (r.target.name.clone(), r.tenant.to_owned())
    }

    const GRAPH: &str = "https://graph.microsoft.com";

    #[test]
    fn prefix_wins() {
        let c = config();
        let sel = Selector {
            prefix: Some("fabrikam"),
            client_id: Some("app-1"),
            ..Default::default()
        };
        assert_eq!(
            name(resolve(&c, &sel, GRAPH)),
            ("fabrikam".into(), "t-fabrikam".into())
        );
        let sel = Selector {
            prefix: Some("nope"),
            ..Default::default()
        };
        assert_eq!(
            resolve(&c, &sel, GRAPH).unwrap_err(),
            TargetError::IdentityNotFound
        );
    }

    #[test]
    fn ids_and_aliases_select() {
        let c = config();
        let by = |sel: Selector<'_>| name(resolve(&c, &sel, GRAPH)).0;
        assert_eq!(
            by(Selector {
                client_id: Some("app-2"),
                ..Default::default()
            }),
            "fabrikam"
        );
        assert_eq!(
            by(Selector {
                client_id: Some("fabrikam"),
                ..Default::default()
            }),
            "fabrikam"
        );
        assert_eq!(
            by(Selector {
                object_id: Some("OBJ-LITWARE"),
                ..Default::default()
            }),
            "litware"
        );
        assert_eq!(
            by(Selector {
                resource_id: Some("/subscriptions/s/rg/litware"),
                ..Default::default()
            }),
            "litware"
        );
        assert_eq!(by(Selector::default()), "litware");
        let unknown = Selector {
            client_id: Some("app-9"),
            ..Default::default()
        };
        assert_eq!(
            resolve(&c, &unknown, GRAPH).unwrap_err(),
            TargetError::IdentityNotFound
        );
    }

    #[test]
    fn shared_app_needs_tenant() {
        let c = config();
        let sel = Selector {
            client_id: Some("app-1"),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&c, &sel, GRAPH),
            Err(TargetError::Ambiguous { .. })
        ));
        let sel = Selector {
            client_id: Some("app-1"),
            tenant_id: Some("t-contoso"),
            ..Default::default()
        };
        assert_eq!(
            name(resolve(&c, &sel, GRAPH)),
            ("contoso".into(), "t-contoso".into())
        );
        let sel = Selector {
            client_id: Some("app-1"),
            tenant_id: Some("t-extra"),
            ..Default::default()
        };
        assert_eq!(
            name(resolve(&c, &sel, GRAPH)),
            ("litware".into(), "t-extra".into())
        );
    }

    #[test]
    fn tenant_and_resource_allow_lists() {
        let c = config();
        let sel = Selector {
            tenant_id: Some("t-other"),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&c, &sel, GRAPH),
            Err(TargetError::TenantNotAllowed { .. })
        ));
        let sel = Selector {
            prefix: Some("fabrikam"),
            tenant_id: Some("anything"),
            ..Default::default()
        };
        assert_eq!(name(resolve(&c, &sel, GRAPH)).1, "anything");
        let err = resolve(&c, &Selector::default(), "https://vault.azure.net").unwrap_err();
        assert!(matches!(err, TargetError::ResourceNotAllowed { .. }));
        assert!(err.to_string().contains("https://graph.microsoft.com"));
    }
}
