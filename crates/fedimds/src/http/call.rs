//! The one path every token request takes, whatever its dialect:
//!
//! guard (the door, Host, remote secret) → dialect parse → admit (the caller identified once, its rate
//! charged once) → target → grant → cache → served or refused (the one log line, metric and
//! audit line of the request, naming the caller identified at admission).
//!
//! The handlers take the request whole and read its parts by reference: extracting a
//! `HeaderMap`, `Method` and query would copy them on every cache hit.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use crate::app::{selector, App, Settings};
use crate::audit;
use crate::cache::Lookup;
use crate::caller::{self, Caller, HostRule, Peer};
use crate::config::{Target, MAX_BODY};
use crate::dialect::arc::{ArcRequest, Holder};
use crate::dialect::{self, app_service, imds, service_fabric, Dialect, TokenRequest};
use crate::refusal::Refusal;
use crate::target;
use crate::token::AccessToken;

/// `GET /metadata/identity/oauth2/token`.
pub(super) async fn imds_token(
    State(app): State<Arc<App>>,
    name: Option<UrlPath<String>>,
    req: Request,
) -> Response {
    let prefix = name.as_ref().map(|UrlPath(n)| n.as_str());
    let (parts, _) = req.into_parts();
    let settings = app.settings();
    let call = Call::new(&app, &settings, Dialect::Imds, prefix, &parts);
    let admitted = call
        .guard()
        .and_then(|()| imds::parse(&parts.method, &parts.headers, parts.uri.query()))
        .and_then(|req| call.admit(req));
    call.answer(admitted).await
}

/// `/msi/token`: App Service 2019 and 2017, Automation's POST, Cloud Shell's form POST.
pub(super) async fn app_service_token(
    State(app): State<Arc<App>>,
    name: Option<UrlPath<String>>,
    req: Request,
) -> Response {
    let prefix = name.as_ref().map(|UrlPath(n)| n.as_str());
    let (parts, body) = req.into_parts();
    let query = parts.uri.query();
    let dialect = app_service::dialect_of(&parts.method, &parts.headers, query);
    let settings = app.settings();
    let call = Call::new(&app, &settings, dialect, prefix, &parts);
    let known = |presented: &[u8]| App::secret_known(&settings, presented);
    // The door first: a caller with a foreign Host or no secret never gets to send a body.
    if let Err(refusal) = call
        .guard()
        .and_then(|()| app_service::door(dialect, &parts.method, &parts.headers, &known))
    {
        return call.answer(Err(refusal)).await;
    }
    let body = match parts.method {
        Method::POST => {
            let deadline = settings.config.server.header_read_timeout;
            match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => {
                    let refusal = Refusal::BadRequest(format!(
                        "The form body is larger than {MAX_BODY} bytes"
                    ));
                    return call.answer(Err(refusal)).await;
                }
                Err(_) => return call.answer(Err(Refusal::RequestTimeout(deadline))).await,
            }
        }
        _ => Bytes::new(),
    };
    let admitted =
        app_service::parse(dialect, &parts.method, query, &body).and_then(|req| call.admit(req));
    call.answer(admitted).await
}

/// Service Fabric's `/metadata/identity/oauth2/token`, on its HTTPS listener.
pub(super) async fn service_fabric_token(
    State(app): State<Arc<App>>,
    name: Option<UrlPath<String>>,
    req: Request,
) -> Response {
    let prefix = name.as_ref().map(|UrlPath(n)| n.as_str());
    let (parts, _) = req.into_parts();
    let settings = app.settings();
    let call = Call::new(&app, &settings, Dialect::ServiceFabric, prefix, &parts);
    let known = |presented: &[u8]| App::secret_known(&settings, presented);
    let admitted = call
        .guard()
        .and_then(|()| service_fabric::door(&parts.method, &parts.headers, &known))
        .and_then(|()| service_fabric::parse(parts.uri.query()))
        .and_then(|req| call.admit(req));
    call.answer(admitted).await
}

/// `/arc/metadata/identity/oauth2/token`: a challenge, then the request that presents its key.
pub(super) async fn arc_token(
    State(app): State<Arc<App>>,
    name: Option<UrlPath<String>>,
    req: Request,
) -> Response {
    let prefix = name.as_ref().map(|UrlPath(n)| n.as_str());
    let (parts, _) = req.into_parts();
    let settings = app.settings();
    let call = Call::new(&app, &settings, Dialect::Arc, prefix, &parts);
    // The caller is admitted (policy, rate) before a challenge is issued: a challenge writes a
    // key file, and a flood of them must not push out other callers' keys. Each of the two
    // requests of the flow is admitted, and charged, once.
    let parsed = call
        .guard()
        .and_then(|()| call.admit_caller())
        .and_then(|caller| {
            let holder = Holder::of(caller.index, &call.peer);
            app.arc_keys
                .parse(&parts.method, &parts.headers, parts.uri.query(), holder)
                .map(|request| (caller, request))
        });
    match parsed {
        Ok((_, ArcRequest::Challenge(challenge))) => challenge,
        Ok((caller, ArcRequest::Token(req))) => call.answer(Ok(Admitted { req, caller })).await,
        Err(refusal) => call.answer(Err(refusal)).await,
    }
}

/// The peer of the connection the request came on ([`super::listener::PEER`]). Requests
/// reaching the router without a listener (tests' `oneshot`) count as loopback.
pub(super) fn peer() -> Peer {
    super::listener::PEER
        .try_with(|peer| *peer)
        .unwrap_or(Peer::Tcp {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            owner: None,
        })
}

/// One token request on its way through.
struct Call<'a> {
    app: &'a App,
    settings: &'a Settings,
    dialect: Dialect,
    prefix: Option<&'a str>,
    peer: Peer,
    headers: &'a HeaderMap,
    uri: &'a axum::http::Uri,
    version: axum::http::Version,
    /// Who is asking, identified once when the call is made: `None` when `[[callers]]` rules
    /// exist and none matches.
    caller: Option<Caller<'a>>,
}

/// A parsed request from a caller that was admitted (its rule matched, its rate charged).
struct Admitted<'a> {
    req: TokenRequest,
    caller: Caller<'a>,
}

/// A token served, with what the audit line needs.
struct Served<'s> {
    token: Arc<AccessToken>,
    /// The target's ids and counters, looked up once.
    ids: Option<&'s crate::app::TargetIds>,
    lookup: Lookup,
    target: &'s Target,
    tenant: &'s str,
}

/// A refusal, with whatever was known when it was decided.
struct Refused<'s> {
    refusal: Refusal,
    target: Option<&'s Target>,
    tenant: Option<&'s str>,
}

impl From<Refusal> for Refused<'_> {
    fn from(refusal: Refusal) -> Self {
        Refused {
            refusal,
            target: None,
            tenant: None,
        }
    }
}

impl<'a> Call<'a> {
    fn new(
        app: &'a App,
        settings: &'a Settings,
        dialect: Dialect,
        prefix: Option<&'a str>,
        parts: &'a axum::http::request::Parts,
    ) -> Self {
        let peer = peer();
        let caller = caller::identify(
            &settings.config,
            &peer,
            caller::presented_secret(&parts.headers),
        );
        Call {
            app,
            settings,
            dialect,
            prefix,
            peer,
            headers: &parts.headers,
            uri: &parts.uri,
            version: parts.version,
            caller,
        }
    }

    /// Checks that come before any dialect parsing: the door (what only a proxy, a browser or
    /// a smuggler sends, [`super::door`]), the Host header (DNS rebinding), and on a listener
    /// reachable from off the host, a known secret on every request.
    fn guard(&self) -> Result<(), Refusal> {
        let config = &self.settings.config;
        super::door::check(self.headers, self.uri)?;
        // A target name in the path is decoded text too: no control characters, as in a query.
        if self.prefix.is_some_and(|p| p.chars().any(char::is_control)) {
            return Err(Refusal::BadRequest(
                "The target name must not contain control characters".to_owned(),
            ));
        }
        if matches!(self.peer, Peer::Tcp { .. })
            && !caller::host_allowed(self.headers, self.version, config, HostRule::Token)
        {
            return Err(Refusal::ForeignHost);
        }
        if config.server.allow_remote {
            let presented = caller::presented_secret(self.headers);
            if !presented.is_some_and(|p| App::secret_known(self.settings, p)) {
                return Err(Refusal::Unauthorized("This listener is reachable from the network: every request needs the caller secret in X-IDENTITY-HEADER"));
            }
        }
        Ok(())
    }

    /// The caller policy and its rate limit: call once per request.
    fn admit_caller(&self) -> Result<Caller<'a>, Refusal> {
        let caller = self.caller.ok_or_else(|| {
            Refusal::Forbidden("no [[callers]] rule matches this caller".to_owned())
        })?;
        self.settings
            .rate_limits
            .take(&caller)
            .map_err(Refusal::RateLimited)?;
        Ok(caller)
    }

    /// [`Call::admit_caller`] for a parsed request.
    fn admit(&self, req: TokenRequest) -> Result<Admitted<'a>, Refusal> {
        self.admit_caller().map(|caller| Admitted { req, caller })
    }

    /// Serves an admitted request (or renders its refusal), then audits and counts it.
    async fn answer(&self, admitted: Result<Admitted<'a>, Refusal>) -> Response {
        use tracing::Instrument as _;
        let Admitted { req, caller } = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => return self.refused(None, &refusal.into()),
        };
        // One span per request: every line logged on its behalf names the dialect, target and
        // resource. (Fetches run in their own task, under a `fetch` span of their own.) At
        // debug level: an enabled span costs an allocation on every cache hit, and the info
        // lines (refusals) carry these fields themselves.
        let span = tracing::debug_span!(
            "request",
            dialect = self.dialect.as_str(),
            target = self.prefix.unwrap_or("-"),
            resource = %req.resource,
        );
        // A disabled span (the default level) is not worth instrumenting the future with.
        let outcome = if span.is_disabled() {
            self.serve(&req, &caller).await
        } else {
            self.serve(&req, &caller).instrument(span.clone()).await
        };
        match outcome {
            Ok(served) => span.in_scope(|| self.served(&req, &served)),
            Err(refused) => span.in_scope(|| self.refused(Some(&req), &refused)),
        }
    }

    async fn serve<'s>(
        &'s self,
        req: &'s TokenRequest,
        caller: &Caller<'_>,
    ) -> Result<Served<'s>, Refused<'s>> {
        let settings = self.settings;
        let config = &settings.config;
        let resolved = target::resolve(config, &selector(self.prefix, req), &req.resource)
            .map_err(|e| Refused::from(Refusal::Target(e)))?;
        let (target, tenant) = (resolved.target, resolved.tenant);
        // Keyed and scoped by the allow-list's spelling; the answer echoes the caller's.
        let resource = resolved.resource;
        let refused = |refusal| Refused {
            refusal,
            target: Some(target),
            tenant: Some(tenant),
        };
        if let Some(why) = caller.refusal(config, target, tenant, &req.resource) {
            return Err(refused(Refusal::Forbidden(why)));
        }
        let ids = settings.ids.get(&target.name);
        let (token, lookup) = self
            .app
            .cache_get(
                settings,
                ids,
                target,
                tenant,
                resource,
                req,
                Some(caller::Counted::of(caller, &self.peer)),
            )
            .await
            .map_err(refused)?;
        Ok(Served {
            token,
            ids,
            lookup,
            target,
            tenant,
        })
    }

    fn served(&self, req: &TokenRequest, served: &Served<'_>) -> Response {
        let app = self.app;
        // With audit.fail_closed, a token is served only when its line is queued to a log
        // that is recording: else it is refused (and counted and audited as refused).
        let fail_closed = self.settings.config.audit.fail_closed;
        let recorded = !app.audit.is_on()
            || ((!fail_closed || app.audit.is_healthy())
                && app.audit.record(&audit::Entry {
                    event: "served",
                    dialect: self.dialect.as_str(),
                    caller: self.caller_name(),
                    addr: self.peer.addr().map(|a| a.to_string()),
                    uid: self.peer.uid(),
                    target: Some(&served.target.name),
                    tenant: Some(served.tenant),
                    app: Some(&served.target.client_id),
                    kind: Some(served.target.kind()),
                    source: Some(&served.target.source),
                    resource: Some(&req.resource),
                    path: None,
                    status: 200,
                    cache: Some(served.lookup.as_str()),
                    fingerprint: Some(&served.token.fingerprint),
                    expires_on: Some(served.token.expires_on),
                    reason: None,
                }));
        if fail_closed && !recorded {
            let refused = Refused {
                refusal: Refusal::AuditUnavailable,
                target: Some(served.target),
                tenant: Some(served.tenant),
            };
            return self.refused(Some(req), &refused);
        }
        app.metrics.lookup(served.lookup.as_str());
        if let Some(counter) = served
            .ids
            .and_then(|ids| ids.served.get(self.dialect.index()))
        {
            counter.inc();
        }
        tracing::debug!(dialect = self.dialect.as_str(), target = %served.target.name, resource = %req.resource, cache = served.lookup.as_str(), "token served");
        // Echo the id the caller named (Arc clients insist); else the app's client id.
        let client_id = req.client_id.as_deref().unwrap_or(&served.target.client_id);
        let expires_on = match self.dialect {
            Dialect::AppService2017 => app_service::legacy_expires_on(
                self.settings.config.app_service.legacy_expires_on,
                self.headers,
            ),
            _ => dialect::ExpiresOn::Epoch,
        };
        dialect::token_response(
            &served.token,
            req,
            client_id,
            expires_on,
            Some(&app.recent_bodies),
        )
    }

    /// The caller's name for audit lines: the one identified when the call was made.
    fn caller_name(&self) -> &str {
        self.caller.as_ref().map_or("-", Caller::name)
    }

    /// Logs a refusal once, here where it is handled, audits and counts it, and renders it.
    fn refused(&self, req: Option<&TokenRequest>, refused: &Refused<'_>) -> Response {
        let refusal = &refused.refusal;
        // The status the dialect sends is the one logged, counted and audited.
        let response = dialect::error(self.dialect, refusal);
        let status = response.status();
        let target = refused.target.map(|t| t.name.as_str()).or(self.prefix);
        let resource = req.map(|r| r.resource.as_str());
        match refusal {
            // Probes arrive on every SDK start: not worth more than debug.
            Refusal::MissingMetadata => tracing::debug!(
                dialect = self.dialect.as_str(),
                "request without Metadata header (probe)"
            ),
            _ => tracing::info!(
                dialect = self.dialect.as_str(),
                target = target.unwrap_or("-"),
                resource = %resource.unwrap_or("-"),
                status = status.as_u16(),
                // Query values and path names cannot hold control characters (both are refused
                // first), so they are logged as they are; a message is escaped all the same.
                reason = ?refusal.message(),
                "token refused"
            ),
        }
        let label = target
            .and_then(|t| self.settings.ids.get(t))
            .map_or_else(|| Arc::from("-"), |ids| ids.label.clone());
        self.app
            .metrics
            .request(self.dialect.as_str(), &label, status.as_u16());
        if self.app.audit.is_on() {
            let reason = refusal.message();
            self.app.audit.record(&audit::Entry {
                event: "refused",
                dialect: self.dialect.as_str(),
                caller: self.caller_name(),
                addr: self.peer.addr().map(|a| a.to_string()),
                uid: self.peer.uid(),
                target,
                tenant: refused.tenant,
                app: refused.target.map(|t| t.client_id.as_str()),
                kind: refused.target.map(Target::kind),
                source: refused.target.map(|t| t.source.as_str()),
                resource,
                path: None,
                status: status.as_u16(),
                cache: None,
                fingerprint: None,
                expires_on: None,
                reason: Some(&reason),
            });
        }
        response
    }
}
