//! The rest of IMDS: every path under `/metadata/` that is not an identity path is forwarded
//! to the real IMDS (`[imds] passthrough`, `[imds] upstream`), so a host whose
//! 169.254.169.254 is captured keeps its instance metadata, attested document and scheduled
//! events, with only the token answers changed.
//!
//! The walk: the door (as for tokens) → the Host check → the path's class, refused with IMDS's
//! 404 when it is an identity path (fedimds serves the token path itself; IMDS v2's credential
//! paths are not served, `docs/client-protocols.md#imds`) or when passthrough is off → IMDS's
//! own rules (GET, or POST for scheduled events; `Metadata: true`) → a slot of its own bound
//! (a slow real IMDS never holds the token paths) → one request on a fresh connection to the
//! upstream's IP address: no proxy and no name resolution, ever, and only the headers IMDS
//! reads (`Metadata`, and `Content-Type` with the body of a POST) → the answer's status, the
//! headers that matter, and its body streamed, size- and time-bounded.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::call::peer;
use super::door;
use crate::app::App;
use crate::audit;
use crate::caller::{self, HostRule, Peer};
use crate::config::{
    MAX_BODY, PASSTHROUGH_CONNECT_TIMEOUT, PASSTHROUGH_MAX_ANSWER, PASSTHROUGH_REQUEST_TIMEOUT,
};
use crate::dialect::{self, header_is_true, Dialect};
use crate::refusal::Refusal;

/// What a path under `/metadata/` is, for metrics (a fixed set, so labels stay bounded) and
/// for what may be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `/metadata/instance…`: compute, network, and their leaves.
    Instance,
    /// `/metadata/attested/document`.
    Attested,
    /// `/metadata/scheduledevents`, GET and the POST that starts events.
    ScheduledEvents,
    /// `/metadata/versions`.
    Versions,
    /// `/metadata/loadbalancer`.
    LoadBalancer,
    /// `/metadata/identity/…`: never forwarded.
    Identity,
    /// Any other path under `/metadata/`.
    Other,
}

impl Class {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Instance => "instance",
            Class::Attested => "attested",
            Class::ScheduledEvents => "scheduledevents",
            Class::Versions => "versions",
            Class::LoadBalancer => "loadbalancer",
            Class::Identity => "identity",
            Class::Other => "other",
        }
    }
}

const IDENTITY_PATH: &str = "Identity paths other than the token endpoint are not served and never forwarded: fedimds answers /metadata/identity/oauth2/token itself";
const UNCLEAR_PATH: &str = "The path is not forwarded: only letters, digits, '-', '_', '.' and '/' separating non-empty segments (no '.' or '..'), so it cannot mean another path to the real IMDS";
const PASSTHROUGH_OFF: &str = "Not found: this endpoint serves identity tokens only ([imds] passthrough = false); instance metadata, attested documents and scheduled events are not forwarded to the real IMDS";

/// The path's class; `Err` when it must not be forwarded whatever the config. A path another
/// parser could read as another one (percent-encoding, dot segments, empty segments) is never
/// forwarded: the real IMDS might read `/metadata/instance/../identity/oauth2/token`, or
/// `/metadata/%69dentity/…`, as the token path, and hand out a home-tenant token.
pub fn classify(path: &str) -> Result<Class, &'static str> {
    let rest = path.strip_prefix("/metadata/").ok_or(UNCLEAR_PATH)?;
    let clear = rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if !clear
        || rest
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(UNCLEAR_PATH);
    }
    let first = rest.split('/').next().unwrap_or_default();
    let class = match first.to_ascii_lowercase().as_str() {
        "identity" => return Err(IDENTITY_PATH),
        "instance" => Class::Instance,
        "attested" => Class::Attested,
        "scheduledevents" => Class::ScheduledEvents,
        "versions" => Class::Versions,
        "loadbalancer" => Class::LoadBalancer,
        _ => Class::Other,
    };
    Ok(class)
}

/// Answer headers passed back to the caller; every other one (hop-by-hop, the connection's
/// own) is the daemon's to set.
const ANSWER_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::SERVER,
    header::RETRY_AFTER,
    header::CACHE_CONTROL,
    header::ETAG,
];

/// `/metadata/{*path}`: anything under `/metadata/` the token routes do not take.
pub(super) async fn forward(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let class = classify(path).unwrap_or_else(|why| match why {
        IDENTITY_PATH => Class::Identity,
        _ => Class::Other,
    });
    let peer = peer();
    let answer = match admit(&app, &parts, &peer) {
        Ok(()) => send(&app, &parts, body).await,
        Err(refusal) => Err(Refused::Early(refusal)),
    };
    let status = match &answer {
        Ok(response) => response.status().as_u16(),
        Err(Refused::Early(r) | Refused::Upstream(r)) => r.status().0.as_u16(),
    };
    app.metrics.passthrough(class.as_str(), status);
    let reason = match &answer {
        Ok(_) => None,
        Err(Refused::Early(r) | Refused::Upstream(r)) => Some(r.message()),
    };
    // Only what was (or would have been, but for the real IMDS) forwarded is audited: probes
    // and refusals at the door are the token paths' business, and logged there.
    let forwarded = matches!(answer, Ok(_) | Err(Refused::Upstream(_)));
    if forwarded {
        match &reason {
            None => tracing::debug!(path, class = class.as_str(), status, "forwarded to IMDS"),
            Some(reason) => {
                tracing::info!(path, class = class.as_str(), status, reason = ?reason, "IMDS passthrough failed")
            }
        }
    }
    if forwarded && app.audit.is_on() {
        app.audit.record(&audit::Entry {
            event: if reason.is_none() {
                "forwarded"
            } else {
                "refused"
            },
            dialect: "imds-passthrough",
            caller: "-",
            addr: peer.addr().map(|a| a.to_string()),
            uid: peer.uid(),
            target: None,
            tenant: None,
            app: None,
            kind: None,
            source: None,
            resource: None,
            path: Some(path),
            status,
            cache: None,
            fingerprint: None,
            expires_on: None,
            reason: reason.as_deref(),
        });
    }
    match answer {
        Ok(response) => response,
        Err(Refused::Early(r) | Refused::Upstream(r)) => dialect::error(Dialect::Imds, &r),
    }
}

/// Why a request was not answered by the real IMDS: refused before it was sent, or the real
/// IMDS failed.
enum Refused {
    Early(Refusal),
    Upstream(Refusal),
}

/// The checks before anything is sent: the door and Host as for tokens, then the path, the
/// config, and IMDS's own rules, answered as IMDS answers them.
fn admit(app: &App, parts: &axum::http::request::Parts, peer: &Peer) -> Result<(), Refusal> {
    let settings = app.settings();
    let config = &settings.config;
    door::check(&parts.headers, &parts.uri)?;
    if matches!(peer, Peer::Tcp { .. })
        && !caller::host_allowed(&parts.headers, parts.version, config, HostRule::Token)
    {
        return Err(Refusal::ForeignHost);
    }
    if config.server.allow_remote {
        let presented = caller::presented_secret(&parts.headers);
        if !presented.is_some_and(|p| App::secret_known(&settings, p)) {
            return Err(Refusal::Unauthorized("This listener is reachable from the network: every request needs the caller secret in X-IDENTITY-HEADER"));
        }
    }
    let class = classify(parts.uri.path()).map_err(Refusal::NotForwarded)?;
    if !config.imds.passthrough {
        return Err(Refusal::NotForwarded(PASSTHROUGH_OFF));
    }
    match parts.method {
        Method::GET => {}
        Method::POST if class == Class::ScheduledEvents => {}
        _ => return Err(Refusal::MethodNotAllowed),
    }
    if !header_is_true(&parts.headers, crate::header::METADATA) {
        return Err(Refusal::MissingMetadata);
    }
    Ok(())
}

/// Sends the request to the real IMDS and turns its answer into ours.
async fn send(
    app: &App,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<Response, Refused> {
    let slot = app
        .passthrough_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refused::Early(Refusal::PassthroughBusy))?;
    let settings = app.settings();
    let upstream = settings.config.imds.upstream;
    let body = match parts.method {
        Method::POST => {
            let deadline = settings.config.server.header_read_timeout;
            match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => {
                    return Err(Refused::Early(Refusal::BadRequest(format!(
                        "The request body is larger than {MAX_BODY} bytes"
                    ))))
                }
                Err(_) => return Err(Refused::Early(Refusal::RequestTimeout(deadline))),
            }
        }
        _ => Bytes::new(),
    };
    let request = upstream_request(parts, &upstream, body);
    let unreachable = |what: String| {
        Refused::Upstream(Refusal::ImdsUnreachable(format!(
            "The real IMDS at {upstream} ([imds] upstream) {what}"
        )))
    };
    let timed_out = |what: String| {
        Refused::Upstream(Refusal::ImdsTimeout(format!(
            "The real IMDS at {upstream} ([imds] upstream) {what}"
        )))
    };
    let stream = match tokio::time::timeout(
        PASSTHROUGH_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(upstream),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(unreachable(format!("cannot be reached: {e}"))),
        Err(_) => {
            return Err(timed_out(format!(
                "did not accept a connection within {} ms",
                PASSTHROUGH_CONNECT_TIMEOUT.as_millis()
            )))
        }
    };
    let deadline = tokio::time::Instant::now() + PASSTHROUGH_REQUEST_TIMEOUT;
    let too_slow = || {
        timed_out(format!(
            "did not answer within {} ms",
            PASSTHROUGH_REQUEST_TIMEOUT.as_millis()
        ))
    };
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // The connection is driven on its own; it ends with the answer's body, or when the
        // caller goes away and the body is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender.send_request(request).await
    };
    let answer = match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(unreachable(format!("failed to answer: {e}"))),
        Err(_) => return Err(too_slow()),
    };
    let (head, incoming) = answer.into_parts();
    if incoming
        .size_hint()
        .exact()
        .is_some_and(|n| n > PASSTHROUGH_MAX_ANSWER as u64)
    {
        return Err(unreachable(format!(
            "answered with more than {PASSTHROUGH_MAX_ANSWER} bytes"
        )));
    }
    let bounded = Bounded {
        inner: incoming,
        left: PASSTHROUGH_MAX_ANSWER,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        _slot: slot,
    };
    let mut response = Response::new(Body::new(bounded));
    *response.status_mut() = head.status;
    let headers = response.headers_mut();
    for name in ANSWER_HEADERS {
        for value in head.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    Ok(response)
}

/// The request the real IMDS gets: the caller's method, path and query, `Host` naming the
/// upstream, and only the headers IMDS reads.
fn upstream_request(
    parts: &axum::http::request::Parts,
    upstream: &std::net::SocketAddr,
    body: Bytes,
) -> hyper::Request<Body> {
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let host = match upstream.port() {
        80 => upstream.ip().to_string(),
        _ => upstream.to_string(),
    };
    let mut headers = HeaderMap::new();
    if let Ok(host) = HeaderValue::from_str(&host) {
        headers.insert(header::HOST, host);
    }
    for name in [HeaderName::from_static("metadata"), header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    let mut request = hyper::Request::new(Body::from(body));
    *request.method_mut() = parts.method.clone();
    // The caller's target, already checked (an origin-form path under /metadata/), as sent.
    if let Ok(uri) = target.parse() {
        *request.uri_mut() = uri;
    }
    *request.headers_mut() = headers;
    request
}

/// The real IMDS's answer body, passed on as it arrives, at most [`PASSTHROUGH_MAX_ANSWER`]
/// bytes and until the request's deadline; it holds the request's passthrough slot until it
/// ends. Past either bound the answer is cut off, which the caller sees as a broken
/// connection rather than a wrong document.
struct Bounded {
    inner: Incoming,
    left: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl hyper::body::Body for Bounded {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len > this.left {
                    return Poll::Ready(Some(Err(format!(
                        "the real IMDS's answer is larger than {PASSTHROUGH_MAX_ANSWER} bytes"
                    )
                    .into())));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(
                    "the real IMDS did not finish its answer in time".into(),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classed_and_identity_paths_never_forwarded() {
        for (path, class) in [
            ("/metadata/instance", Class::Instance),
            ("/metadata/instance/", Class::Instance),
            ("/metadata/instance/compute/vmSize", Class::Instance),
            (
                "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress",
                Class::Instance,
            ),
            ("/metadata/attested/document", Class::Attested),
            ("/metadata/scheduledevents", Class::ScheduledEvents),
            ("/metadata/versions", Class::Versions),
            ("/metadata/loadbalancer", Class::LoadBalancer),
            ("/metadata/somethingnew", Class::Other),
        ] {
            assert_eq!(classify(path), Ok(class), "{path}");
        }
        for path in [
            "/metadata/identity/oauth2/token",
            "/metadata/Identity/oauth2/token",
            "/metadata/IDENTITY/getplatformmetadata",
            "/metadata/identity/issuecredential",
            "/metadata/identity",
        ] {
            assert_eq!(classify(path), Err(IDENTITY_PATH), "{path}");
        }
        // What another parser could read as another path.
        for path in [
            "/metadata/instance/../identity/oauth2/token",
            "/metadata/./identity/oauth2/token",
            "/metadata/%69dentity/oauth2/token",
            "/metadata//identity/oauth2/token",
            "/metadata/instance;/../identity",
            "/metadata/instance\\..\\identity",
            "/metadata/",
            "/other",
        ] {
            assert_eq!(classify(path), Err(UNCLEAR_PATH), "{path}");
        }
    }
}
