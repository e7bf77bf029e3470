//! A keep-alive HTTP/1.1 client for the fleet, economy and soak measurements: any method, any
//! headers, a form body. The hit-path load keeps its own leaner [`crate::load::Conn`], so
//! nothing here changes what the cache-hit tables measure.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Result;

/// One keep-alive connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

// === impl Client ===

impl Client {
    /// Connects (with `TCP_NODELAY`).
    pub async fn open(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Client {
            sender,
            host: addr.to_string(),
        })
    }

    /// GET `path` with `headers`; the status and the body.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        self.send("GET", path, headers, Bytes::new()).await
    }

    /// POST `form` (`application/x-www-form-urlencoded`) to `path`.
    pub async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Result<Answer> {
        let body = form_encode(form);
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        self.send("POST", path, &headers, body.into()).await
    }

    /// DELETE `path`.
    pub async fn delete(&mut self, path: &str) -> Result<Answer> {
        self.send("DELETE", path, &[], Bytes::new()).await
    }

    /// POST with no body.
    pub async fn post(&mut self, path: &str) -> Result<Answer> {
        self.send("POST", path, &[], Bytes::new()).await
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}

/// What a request got back.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

// === impl Answer ===

impl Answer {
    /// The body as JSON, or an error naming the status (error bodies hold no token).
    pub fn json_ok(&self, what: &str) -> Result<serde_json::Value> {
        if self.status != 200 {
            return Err(format!(
                "{what}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
            .into());
        }
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// `a=b&c=d`, percent-encoded as a form.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, name);
        out.push('=');
        encode_into(&mut out, value);
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
pub fn encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// `text`, percent-encoded for a query value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    encode_into(&mut out, text);
    out
}
