//! A tiny registry for tests: fixed answers per path over plain HTTP on 127.0.0.1:0, and a
//! record of every path asked for. It serves what a real registry would refuse to store
//! (hostile digests, blobs of the wrong size), as a third-party registry might.
//! Shared by the client's and the runtime's tests (`#[path]`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use berth_client::{RegistryAuth, RegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
struct Answer {
    content_type: String,
    body: Vec<u8>,
    /// Send the body chunked (no Content-Length), so only the reader can bound it.
    chunked: bool,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    asked: Vec<String>,
}

pub struct MiniRegistry {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl MiniRegistry {
    pub async fn start() -> MiniRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, st.clone()));
            }
        });
        MiniRegistry { addr, state, task }
    }

    /// A client for this registry (plain HTTP, anonymous).
    pub fn client(&self) -> RegistryClient {
        RegistryClient::insecure(&self.addr.to_string(), RegistryAuth::Anonymous)
    }

    fn put(&self, path: String, content_type: &str, body: &[u8], chunked: bool) {
        self.state.lock().unwrap().answers.insert(
            path,
            Answer {
                content_type: content_type.into(),
                body: body.to_vec(),
                chunked,
            },
        );
    }

    pub fn manifest(&self, repo: &str, reference: &str, body: &[u8]) {
        self.put(
            format!("/v2/{repo}/manifests/{reference}"),
            OCI_MANIFEST,
            body,
            false,
        );
    }

    pub fn blob(&self, repo: &str, digest: &str, body: &[u8]) {
        self.put(
            format!("/v2/{repo}/blobs/{digest}"),
            "application/octet-stream",
            body,
            false,
        );
    }

    pub fn blob_chunked(&self, repo: &str, digest: &str, body: &[u8]) {
        self.put(
            format!("/v2/{repo}/blobs/{digest}"),
            "application/octet-stream",
            body,
            true,
        );
    }

    /// Every path asked for so far.
    pub fn asked(&self) -> Vec<String> {
        self.state.lock().unwrap().asked.clone()
    }
}

impl Drop for MiniRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut conn: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("").to_string();
    let found = {
        let mut st = state.lock().unwrap();
        st.asked.push(path.clone());
        st.answers.get(&path).cloned()
    };
    let mut out = Vec::new();
    match found {
        Some(a) if a.chunked => {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                    a.content_type
                )
                .as_bytes(),
            );
            if method != "HEAD" {
                for chunk in a.body.chunks(1000) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        Some(a) => {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    a.content_type,
                    a.body.len()
                )
                .as_bytes(),
            );
            if method != "HEAD" {
                out.extend_from_slice(&a.body);
            }
        }
        None => {
            let body = br#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#;
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
        }
    }
    let _ = conn.write_all(&out).await;
    let _ = conn.shutdown().await;
}
