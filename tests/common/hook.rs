//! A webhook receiver for tests: a real HTTP/1.1 server (hyper) on loopback, over TLS with its
//! own certificate when given one, that answers each delivery with the next status of a script
//! (then 200) and hands every request's method, path, headers and body to the test.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::Arc;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Delivery {
    /// The HMAC the sender put in `X-Warden-Signature` (without `sha256=`).
    pub fn signature(&self) -> Option<String> {
        self.headers
            .get("x-warden-signature")?
            .to_str()
            .ok()?
            .strip_prefix("sha256=")
            .map(str::to_string)
    }
}

pub struct Receiver {
    pub port: u16,
    pub deliveries: tokio::sync::mpsc::Receiver<Delivery>,
}

impl Receiver {
    /// Serve on 127.0.0.1; over TLS with `tls` (certificate chain and key PEM files) if given.
    pub async fn start(
        tls: Option<(&std::path::Path, &std::path::Path)>,
        script: Vec<u16>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.map(|(cert, key)| {
            let certs = rustls_pemfile::certs(&mut &std::fs::read(cert).unwrap()[..])
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut &std::fs::read(key).unwrap()[..])
                .unwrap()
                .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let script = Arc::new(std::sync::Mutex::new(script.into_iter()));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (tx, script, acceptor) = (tx.clone(), script.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (tx, script) = (tx.clone(), script.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let _ = tx
                                    .send(Delivery {
                                        method: parts.method.to_string(),
                                        path: parts.uri.path().to_string(),
                                        headers: parts.headers,
                                        body: String::from_utf8_lossy(&body).into_owned(),
                                    })
                                    .await;
                                let status = script.lock().unwrap().next().unwrap_or(200);
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            // A client that refuses our certificate ends here.
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = builder
                                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                                .await;
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            deliveries: rx,
        }
    }

    /// The next delivery, within `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> Delivery {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.deliveries.recv())
            .await
            .expect("a delivery in time")
            .expect("receiver running")
    }
}
