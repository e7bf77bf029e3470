//! Every per-cloud fact fedimds relies on, in one place: Entra's host, the audience a
//! federated credential expects, Azure Resource Manager's resource, which issuer hosts belong
//! to which cloud, and the admin-consent URL. `docs/entra-exchange.md#sovereign-clouds` gives
//! the public sources.

use url::Url;

/// An Azure cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloudName {
    /// Azure global.
    Public,
    /// Azure US Government.
    UsGov,
    /// Azure operated by 21Vianet.
    China,
}

impl CloudName {
    /// Every cloud, for listings and tests.
    pub const ALL: [CloudName; 3] = [CloudName::Public, CloudName::UsGov, CloudName::China];

    /// The cloud a config names: fedimds's short name or the SDKs' `AzureXxxCloud` name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "public" | "AzurePublicCloud" => Some(CloudName::Public),
            "usgov" | "AzureUSGovernment" => Some(CloudName::UsGov),
            "china" | "AzureChinaCloud" => Some(CloudName::China),
            _ => None,
        }
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudName::Public => "public",
            CloudName::UsGov => "usgov",
            CloudName::China => "china",
        }
    }

    /// Entra's host in this cloud.
    pub fn authority_host(self) -> &'static str {
        match self {
            CloudName::Public => "https://login.microsoftonline.com",
            CloudName::UsGov => "https://login.microsoftonline.us",
            CloudName::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The audience a managed-identity token must carry for federation in this cloud.
    pub fn exchange_audience(self) -> &'static str {
        match self {
            CloudName::Public => "api://AzureADTokenExchange",
            CloudName::UsGov => "api://AzureADTokenExchangeUSGov",
            CloudName::China => "api://AzureADTokenExchangeChina",
        }
    }

    /// Azure Resource Manager's v1 resource: every tenant has it, and Entra issues an app-only
    /// token for it to any app with a service principal there, so `check` can try any target.
    pub fn arm_resource(self) -> &'static str {
        match self {
            CloudName::Public => "https://management.azure.com/",
            CloudName::UsGov => "https://management.usgovcloudapi.net/",
            CloudName::China => "https://management.chinacloudapi.cn",
        }
    }

    /// The cloud an Entra token issuer's host belongs to, when it is a known one: `login.*`
    /// for v2 tokens, `sts.*` for v1.
    pub fn of_issuer_host(host: &str) -> Option<CloudName> {
        match host {
            "login.microsoftonline.com" | "sts.windows.net" => Some(CloudName::Public),
            "login.microsoftonline.us" | "login.usgovcloudapi.net" => Some(CloudName::UsGov),
            "login.chinacloudapi.cn"
            | "login.partner.microsoftonline.cn"
            | "sts.chinacloudapi.cn" => Some(CloudName::China),
            _ => None,
        }
    }
}

/// Where a tenant's administrator grants `client_id` admin consent, at Entra's `authority_host`
/// (the configured one: the simulator's in tests).
pub fn consent_url(authority_host: &Url, tenant: &str, client_id: &str) -> String {
    format!(
        "{}/{tenant}/adminconsent?client_id={client_id}",
        authority_host.as_str().trim_end_matches('/'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_hosts_map_back() {
        for cloud in CloudName::ALL {
            assert_eq!(CloudName::parse(cloud.as_str()), Some(cloud));
            let host = Url::parse(cloud.authority_host()).unwrap();
            assert_eq!(
                CloudName::of_issuer_host(host.host_str().unwrap()),
                Some(cloud)
            );
        }
        assert_eq!(CloudName::parse("mooncake"), None);
    }

    #[test]
    fn consent_url_has_no_double_slash() {
        let host = Url::parse("https://login.microsoftonline.com/").unwrap();
        assert_eq!(
            consent_url(&host, "t1", "app1"),
            "https://login.microsoftonline.com/t1/adminconsent?client_id=app1"
        );
    }
}
