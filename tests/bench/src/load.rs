//! The load generator: hyper 1 HTTP/1.1 clients on keep-alive connections, one connection per
//! worker, each worker sending its next request as soon as the previous answer's body is read
//! (closed loop), for a fixed duration after a warm-up. Every answer must be a 200; anything
//! else ends the run with an error, because a benchmark of refusals measures nothing.
//!
//! An [`Endpoint`] says where the load goes: plain TCP or TLS, and the one header a dialect
//! checks. Connections are opened, TLS handshake included, before the warm-up starts: a
//! keep-alive client pays the handshake once per connection, and so does this one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::Result;

/// Where a load goes: an address, over TLS or not, and the one header that lets a caller in.
#[derive(Clone)]
pub struct Endpoint {
    /// The listener.
    pub addr: SocketAddr,
    /// The TLS client, for an HTTPS listener; `None` for plain HTTP.
    pub tls: Option<TlsConnector>,
    /// The dialect's check: IMDS's `Metadata: true`, App Service's `X-IDENTITY-HEADER`,
    /// Service Fabric's `secret` (a secret's value is marked sensitive, so `Debug` hides it).
    pub header: (HeaderName, HeaderValue),
}

impl Endpoint {
    /// IMDS at `addr`: plain HTTP, `Metadata: true`.
    pub fn imds(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            tls: None,
            header: (
                HeaderName::from_static("metadata"),
                HeaderValue::from_static("true"),
            ),
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    host: Arc<str>,
    header: (HeaderName, HeaderValue),
}

impl Conn {
    /// Connects to IMDS at `addr` (see [`Endpoint::imds`]).
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        Conn::connect(&Endpoint::imds(addr)).await
    }

    /// Connects (with `TCP_NODELAY`, as every HTTP client sets it), and makes the TLS
    /// handshake when the endpoint has TLS.
    pub async fn connect(endpoint: &Endpoint) -> Result<Conn> {
        let addr = endpoint.addr;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        let sender = match &endpoint.tls {
            None => handshake(stream).await?,
            Some(tls) => {
                let stream = tls
                    .connect(ServerName::from(addr.ip()), stream)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                handshake(stream).await?
            }
        };
        Ok(Conn {
            sender,
            host: addr.to_string().into(),
            header: endpoint.header.clone(),
        })
    }

    /// Waits until the connection can take a request.
    pub async fn ready(&mut self) -> Result<()> {
        self.sender.ready().await?;
        Ok(())
    }

    /// GET `path` with the endpoint's header; the status and the whole body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes)> {
        let (status, _, body) = self.get_with_headers(path).await?;
        Ok((status, body))
    }

    /// [`Conn::get`], with the answer's headers.
    pub async fn get_with_headers(&mut self, path: &str) -> Result<(u16, HeaderMap, Bytes)> {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &*self.host)
            .header(self.header.0.clone(), self.header.1.clone())
            .body(Empty::new())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((status, parts.headers, body))
    }

    /// GET `path` and insist on a 200. The error names the status and, for a non-200, the
    /// body (error bodies hold no token).
    pub async fn get_ok(&mut self, path: &str) -> Result<Bytes> {
        let (status, body) = self.get(path).await?;
        if status != 200 {
            return Err(format!(
                "GET {path}: {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
            .into());
        }
        Ok(body)
    }
}

/// The HTTP/1.1 handshake on `io`; the connection is driven by a task of its own.
async fn handshake<T>(io: T) -> Result<SendRequest<Empty<Bytes>>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; either is fine here.
        let _ = connection.await;
    });
    Ok(sender)
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct Run {
    /// Requests per second over the measured window.
    pub throughput: f64,
    /// Every measured request's latency, sorted.
    pub latencies: Latencies,
}

/// Sorted latencies, in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// From unsorted samples.
    pub fn new(mut samples: Vec<u64>) -> Latencies {
        samples.sort_unstable();
        Latencies(samples)
    }

    /// The `q`-quantile (nearest rank), in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1] as f64 / 1000.0
    }

    /// The largest, in microseconds.
    pub fn max_us(&self) -> f64 {
        self.quantile_us(1.0)
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// How a load run chooses each request's path.
#[derive(Clone)]
pub enum Paths {
    /// Always the same path.
    One(Arc<str>),
    /// Uniformly at random among these (a fixed seed per worker).
    Spread(Arc<[String]>),
}

/// Runs `conns` workers against `endpoint` for `warmup` (not measured) then `duration`. The
/// connections are all opened (and their TLS handshakes made) before the warm-up starts.
pub async fn run(
    endpoint: &Endpoint,
    paths: &Paths,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Run> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Conn::connect(endpoint).await?);
    }
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let mut workers = Vec::with_capacity(conns);
    for (index, conn) in opened.into_iter().enumerate() {
        let paths = paths.clone();
        workers.push(tokio::spawn(worker(
            conn,
            paths,
            index as u64,
            measure_from,
            until,
        )));
    }
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await??);
    }
    let throughput = samples.len() as f64 / duration.as_secs_f64();
    Ok(Run {
        throughput,
        latencies: Latencies::new(samples),
    })
}

async fn worker(
    mut conn: Conn,
    paths: Paths,
    seed: u64,
    measure_from: Instant,
    until: Instant,
) -> Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(64 * 1024);
    let mut rng =
        0x9E37_79B9_7F4A_7C15_u64 ^ (seed.wrapping_add(1)).wrapping_mul(0xD1B5_4A32_D192_ED03);
    loop {
        let start = Instant::now();
        if start >= until {
            return Ok(samples);
        }
        let path: &str = match &paths {
            Paths::One(path) => path,
            Paths::Spread(all) => {
                // xorshift64: cheap, and the same sequence on every run.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                &all[(rng % all.len() as u64) as usize]
            }
        };
        conn.get_ok(path).await?;
        if start >= measure_from {
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
}

/// `n` callers, each on its own connection opened beforehand, send one request for `path` at
/// the same moment. Returns the latency each saw (from its own send to its whole answer).
pub async fn stampede(addr: SocketAddr, path: &str, n: usize) -> Result<Latencies> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = Conn::open(addr).await?;
        conn.ready().await?;
        conns.push(conn);
    }
    // Every caller waits at the barrier, so all n are released together once the last arrives.
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let path: Arc<str> = path.into();
    let mut callers = Vec::with_capacity(n);
    for mut conn in conns {
        let barrier = barrier.clone();
        let path = path.clone();
        callers.push(tokio::spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            conn.get_ok(&path).await?;
            Ok::<u64, crate::Error>(start.elapsed().as_nanos() as u64)
        }));
    }
    let mut samples = Vec::with_capacity(n);
    for caller in callers {
        samples.push(caller.await??);
    }
    Ok(Latencies::new(samples))
}
