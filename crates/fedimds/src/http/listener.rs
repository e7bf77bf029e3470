//! Accepting connections: TCP (plain or TLS) and Unix sockets, each connection served by hyper with the
//! limits that keep a local daemon alive under abuse (a cap on open connections and one per
//! peer, a deadline for the request head against slow senders, a bound on its size), the
//! peer's identity (its socket's owner, for a TCP peer of this host) put on every request,
//! and a graceful drain on shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

use crate::caller::is_local;
use crate::fsutil;
use crate::peer::{Owner, Peer};

/// Limits on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; past this, accepting waits.
    pub max_connections: usize,
    /// Open connections from one peer at most (a uid, when the kernel's answer is known, else
    /// a remote address; loopback peers of no known uid are not told apart, and only the
    /// overall cap holds for them); past this, its new connections are closed at once, so one
    /// caller cannot take every place.
    pub max_connections_per_peer: usize,
    /// Time to send a whole request head.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
}

/// A bound socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket; peers are identified by their kernel credentials.
    Unix(UnixListener),
    /// TCP with TLS (the Service Fabric listener).
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(l) => f.debug_tuple("Tcp").field(l).finish(),
            Listener::Unix(l) => f.debug_tuple("Unix").field(l).finish(),
            Listener::Tls(l, _) => f.debug_tuple("Tls").field(l).finish_non_exhaustive(),
        }
    }
}

/// Binds a Unix socket at `path` with `mode`, replacing a stale socket left by a previous run
/// (never any other kind of file).
///
/// The socket is bound in a new directory of mode 0700 beside `path`, given its mode there,
/// then renamed into place: nobody else can reach it (or connect under the umask's wider mode)
/// before it has its final mode. `chmod` by path would follow a link that someone who can
/// write the directory swapped in after `bind` (a root daemon then makes any file 0666), so
/// the mode is set on the inode itself, checked to be our socket (`chmod_socket`).
pub fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    // Someone who can change the directory could replace the socket after it is bound and
    // answer callers (and read their secrets) in fedimds's place.
    fsutil::check_dir(&fsutil::parent(path))?;
    use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "the path exists and is not a socket; fedimds replaces only a stale socket",
            ));
        }
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let random = fsutil::random_hex();
    let (Some(name), Some(random)) = (name, random) else {
        return Err(io::Error::other(
            "cannot name a private directory beside the socket",
        ));
    };
    let private = fsutil::parent(path).join(format!(".{name}.{random}"));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let inside = private.join("socket");
    let bound = UnixListener::bind(&inside).and_then(|listener| {
        chmod_socket(&inside, mode)?;
        // Over a stale socket, atomically: a caller never finds the path missing.
        std::fs::rename(&inside, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&inside);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Sets the mode of the socket at `path`, which must be one fedimds just bound: opened with
/// `O_PATH | O_NOFOLLOW` (a link is refused), checked to be a socket owned by fedimds's user,
/// then changed through `/proc/self/fd`, which names that very inode (glibc's
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` does the same; `fchmod` on a socket's own descriptor does
/// not change the file).
fn chmod_socket(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    let meta = handle.metadata()?;
    if !meta.file_type().is_socket() || meta.uid() != fsutil::euid()? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the socket was replaced while it was being bound",
        ));
    }
    let by_fd = format!("/proc/self/fd/{}", handle.as_raw_fd());
    std::fs::set_permissions(by_fd, std::fs::Permissions::from_mode(mode))
}

/// How long after an accept error (out of file descriptors, usually) to try again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop` turns true, then lets open connections finish
/// for at most `grace`.
/// `owners` says whether a TCP peer's owner is wanted (a `[[callers]]` rule names a uid or a
/// gid): finding it reads `/proc/net/tcp`, whose size grows with every socket on the host, so
/// it is read only when a rule needs the answer.
pub async fn serve(
    listener: Listener,
    router: Router,
    limits: Limits,
    owners: Arc<crate::peer::Wanted>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_peer = Arc::new(PerPeer::default());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (conn, peer, ours) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (router, per_peer, watcher, http) = (
            router.clone(),
            per_peer.clone(),
            graceful.watcher(),
            http.clone(),
        );
        let (uid_wanted, gid_wanted) = (
            owners.uid.load(std::sync::atomic::Ordering::Relaxed),
            owners.gid.load(std::sync::atomic::Ordering::Relaxed),
        );
        let tls = match &listener {
            Listener::Tls(_, acceptor) => Some(acceptor.clone()),
            Listener::Tcp(_) | Listener::Unix(_) => None,
        };
        tokio::spawn(async move {
            // Who owns the other end, when it is a socket of this host (see `peer.rs`): looked
            // up here, in the connection's own task, so the accept loop never waits on it.
            let peer = match peer {
                Peer::Tcp { addr, .. } if uid_wanted => {
                    // /proc reads, off the runtime's workers.
                    let owner = match ours {
                        Some(ours) => {
                            tokio::task::spawn_blocking(move || Owner::of(addr, ours, gid_wanted))
                                .await
                                .ok()
                                .flatten()
                        }
                        None => None,
                    };
                    Peer::Tcp { addr, owner }
                }
                unix => unix,
            };
            let Some(place) = per_peer.enter(&peer, limits.max_connections_per_peer) else {
                tracing::debug!(peer = ?peer.addr(), uid = ?peer.uid(), "over the per-peer connection cap; closed");
                return;
            };
            // The handshake in the connection's own task, within the head's deadline, so a
            // client that never finishes it holds only its own place.
            let io = match (conn, tls) {
                (Conn::Tcp(stream), Some(acceptor)) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => TokioIo::new(Box::new(stream) as Box<dyn Stream>),
                        Ok(Err(e)) => {
                            tracing::debug!(peer = ?peer.addr(), error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = ?peer.addr(), "TLS handshake not finished in time; closed");
                            return;
                        }
                    }
                }
                (Conn::Tcp(stream), None) => TokioIo::new(Box::new(stream) as Box<dyn Stream>),
                (Conn::Unix(stream), _) => TokioIo::new(Box::new(stream) as Box<dyn Stream>),
            };
            serve_connection(io, peer, router, &http, watcher).await;
            drop(place);
            drop(permit);
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "open connections did not finish in time"
        );
    }
}

tokio::task_local! {
    /// The peer of the connection whose requests are being served: hyper polls each request's
    /// handler inside the connection's future, which runs in this scope. (An extension on
    /// each request would cost a map and two allocations per request, on every cache hit.)
    pub(super) static PEER: Peer;
}

/// Serves one connection, its peer in [`PEER`] for each of its requests, until it closes or
/// the graceful shutdown `watcher` ends it.
async fn serve_connection(
    io: Io,
    peer: Peer,
    router: Router,
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) {
    {
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let router = router.clone();
            async move {
                Ok::<Response, Infallible>(
                    router
                        .oneshot(req.map(Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
        let connection =
            watcher.watch(http.serve_connection(io, TowerToHyperService::new(service)));
        // Errors here are the client's doing (reset, slow head, oversize head): nothing to do.
        let _ = PEER.scope(peer, connection).await;
    }
}

/// Open connections per peer.
#[derive(Debug, Default)]
struct PerPeer(std::sync::Mutex<HashMap<PeerKey, usize>>);

/// Who a connection is counted against: a uid when the kernel named one, else an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    Uid(u32),
    Addr(std::net::IpAddr),
}

/// One peer's place among the open connections, given back when dropped.
struct Place {
    peers: Arc<PerPeer>,
    /// `None` for a peer not counted apart.
    key: Option<PeerKey>,
}

impl Place {
    fn uncounted(peers: &Arc<PerPeer>) -> Place {
        Place {
            peers: peers.clone(),
            key: None,
        }
    }
}

impl PerPeer {
    fn enter(self: &Arc<Self>, peer: &Peer, max: usize) -> Option<Place> {
        let key = match (peer.uid(), peer.addr()) {
            (Some(uid), _) => PeerKey::Uid(uid),
            // Every local process shares a loopback address: counting them together would turn
            // this cap into a lower overall one.
            (None, Some(addr)) if is_local(addr.ip()) => return Some(Place::uncounted(self)),
            (None, Some(addr)) => PeerKey::Addr(addr.ip()),
            // A Unix peer always has a uid; this arm is for completeness.
            (None, None) => return Some(Place::uncounted(self)),
        };
        let mut open = self.lock();
        let count = open.entry(key).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Place {
            peers: self.clone(),
            key: Some(key),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerKey, usize>> {
        // Each write is one counter: a panic elsewhere cannot leave the map inconsistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.peers.lock();
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

/// A boxed connection, so TCP and Unix share one serve loop.
type Io = TokioIo<Box<dyn Stream>>;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// An accepted connection, before any TLS handshake.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Accepts a connection: its stream, its peer (a TCP peer's owner is looked up later, in the
/// connection's task), and the address it reached.
async fn accept(listener: &Listener) -> io::Result<(Conn, Peer, Option<std::net::SocketAddr>)> {
    match listener {
        Listener::Tcp(l) | Listener::Tls(l, _) => {
            let (stream, addr) = l.accept().await?;
            // Token answers are small; do not let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let ours = stream.local_addr().ok();
            let peer = Peer::Tcp { addr, owner: None };
            Ok((Conn::Tcp(stream), peer, ours))
        }
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let cred = stream.peer_cred()?;
            let peer = Peer::Unix {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            };
            Ok((Conn::Unix(stream), peer, None))
        }
    }
}
