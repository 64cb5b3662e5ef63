//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_testserver::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bound for every single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs a whole test body with an overall bound, so a bug cannot hang CI.
pub async fn bounded<F: Future<Output = ()>>(secs: u64, body: F) {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// A `kube::Client` for the server, built through its kubeconfig like a real program's.
pub async fn client(server: &TestServer) -> kube::Client {
    client_with(server, true).await
}

/// As [`client`]; `retry: false` turns off kube's default retry of 429/503/504.
pub async fn client_with(server: &TestServer, retry: bool) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml())
        .expect("the generated kubeconfig parses");
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kube accepts the generated kubeconfig");
    config.default_retry = retry;
    kube::Client::try_from(config).expect("kube builds a client")
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    if pairs.is_empty() {
        return None;
    }
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    )
}

pub fn service(ns: &str, name: &str, port: i32, label_pairs: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: labels(label_pairs),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            type_: Some("ClusterIP".into()),
            ports: Some(vec![ServicePort {
                port,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn endpoint_slice(ns: &str, name: &str, service: &str, addresses: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: labels(&[("kubernetes.io/service-name", service)]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: addresses
            .iter()
            .map(|a| Endpoint {
                addresses: vec![(*a).to_string()],
                ..Endpoint::default()
            })
            .collect(),
        ..EndpointSlice::default()
    }
}

pub fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// A response read with a hand-written HTTP/1.1 client, so tests see the
/// framing itself (headers, chunks) rather than what a client library makes of it.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    content_length: Option<usize>,
    pending: Vec<u8>,
    finished: bool,
}

/// How a chunked stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The terminating zero-size chunk arrived.
    Clean,
    /// The connection closed mid-stream.
    Aborted,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole body (for non-streaming responses).
    pub async fn body(mut self) -> Vec<u8> {
        if self.chunked {
            let mut all = Vec::new();
            while let Ok(Some(chunk)) = self.read_chunk().await {
                all.extend(chunk);
            }
            return all;
        }
        let mut body = Vec::new();
        match self.content_length {
            Some(n) => {
                body.resize(n, 0);
                self.reader
                    .read_exact(&mut body)
                    .await
                    .expect("read the response body");
            }
            None => {
                self.reader
                    .read_to_end(&mut body)
                    .await
                    .expect("read the response body");
            }
        }
        body
    }

    pub async fn json(self) -> serde_json::Value {
        let body = self.body().await;
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// One chunk; `Ok(None)` after the terminating chunk, `Err` on EOF mid-stream.
    async fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, StreamEnd> {
        let mut size_line = String::new();
        let n = self
            .reader
            .read_line(&mut size_line)
            .await
            .map_err(|_| StreamEnd::Aborted)?;
        if n == 0 {
            return Err(StreamEnd::Aborted);
        }
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            let mut trailer = String::new();
            let _ = self.reader.read_line(&mut trailer).await;
            return Ok(None);
        }
        let mut data = vec![0; size + 2];
        self.reader
            .read_exact(&mut data)
            .await
            .map_err(|_| StreamEnd::Aborted)?;
        assert_eq!(&data[size..], b"\r\n", "chunk not terminated by CRLF");
        data.truncate(size);
        Ok(Some(data))
    }

    /// The next newline-terminated JSON line of a chunked watch stream, or
    /// how the stream ended; panics after `within`.
    pub async fn next_line(&mut self, within: Duration) -> Result<serde_json::Value, StreamEnd> {
        assert!(self.chunked, "not a chunked response");
        tokio::time::timeout(within, async {
            loop {
                if let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    return Ok(serde_json::from_slice(&line).unwrap_or_else(|e| {
                        panic!(
                            "watch line is not JSON ({e}): {}",
                            String::from_utf8_lossy(&line)
                        )
                    }));
                }
                if self.finished {
                    return Err(StreamEnd::Clean);
                }
                match self.read_chunk().await {
                    Ok(Some(chunk)) => self.pending.extend(chunk),
                    Ok(None) => self.finished = true,
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no watch line within {within:?}"))
    }

    /// Skips lines until one satisfies `pred`.
    pub async fn line_where(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self
                .next_line(left)
                .await
                .unwrap_or_else(|end| panic!("stream ended ({end:?}) before the expected line"));
            if pred(&line) {
                return line;
            }
        }
    }
}

/// Sends one request over a fresh connection and reads the status and headers.
pub async fn raw_request(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> RawResponse {
    let stream = TcpStream::connect(server.addr())
        .await
        .expect("connect to the test server");
    let mut reader = BufReader::new(stream);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        server.addr()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    reader
        .get_mut()
        .write_all(req.as_bytes())
        .await
        .expect("send the request");
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .await
        .expect("read the status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("read a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let content_length = find("content-length").and_then(|v| v.parse().ok());
    RawResponse {
        status,
        headers,
        reader,
        chunked,
        content_length,
        pending: Vec::new(),
        finished: false,
    }
}

/// `GET path`, expecting JSON.
pub async fn get_json(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let r = raw_request(server, "GET", path, &[], None).await;
    let status = r.status;
    (status, r.json().await)
}
