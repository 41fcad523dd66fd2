//! `S3Store` over https: a TLS-terminating proxy (rustls, a self-signed
//! certificate made by rcgen) in front of an in-process fake_s3. The store
//! works when it trusts the certificate and refuses the server otherwise.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::s3::{create_bucket, fast_options, location};
use fake_s3::{Config, FakeS3};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use stoat::log::s3::{S3Options, S3Store};
use stoat::log::store::{Blocking, StoreError};
use stoat::ops::metrics::S3Metrics;

/// Listens on loopback; each connection's TLS is terminated and its bytes
/// relayed to `backend`. Returns the address and the certificate.
fn start_tls_proxy(backend: SocketAddr) -> (SocketAddr, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let certificate = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let config = config.clone();
            std::thread::spawn(move || relay(client, backend, config));
        }
    });
    (address, certificate)
}

fn would_block(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Relays one connection until either side closes or TLS fails.
fn relay(mut client: TcpStream, backend: SocketAddr, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
    let mut tls = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut server = TcpStream::connect(backend)?;
    client.set_read_timeout(Some(Duration::from_millis(2)))?;
    server.set_read_timeout(Some(Duration::from_millis(2)))?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match tls.read_tls(&mut client) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
                loop {
                    match tls.reader().read(&mut buffer) {
                        Ok(0) => return Ok(()),
                        Ok(count) => server.write_all(&buffer[..count])?,
                        Err(error) if would_block(&error) => break,
                        Err(error) => return Err(error),
                    }
                }
            }
            Err(error) if would_block(&error) => {}
            Err(error) => return Err(error),
        }
        match server.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(count) => tls.writer().write_all(&buffer[..count])?,
            Err(error) if would_block(&error) => {}
            Err(error) => return Err(error),
        }
        while tls.wants_write() {
            tls.write_tls(&mut client)?;
        }
    }
}

#[test]
fn https_endpoints_work_with_a_trusted_certificate_and_fail_otherwise() {
    let s3 = FakeS3::start(Config::ephemeral()).unwrap();
    create_bucket(&s3, "bucket", None);
    let (proxy, certificate) = start_tls_proxy(s3.addr());
    let mut https = location(&s3, "bucket", "tls", None);
    https.endpoint = format!("https://localhost:{}", proxy.port());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    // The relay polls, so a large body is slow on a loaded machine: a long
    // read timeout keeps the large put to one attempt.
    let options = S3Options { tls_roots: Some(roots), read_timeout: Duration::from_secs(20), ..fast_options() };
    let store = S3Store::open(https.clone(), options, S3Metrics::default()).unwrap();
    let blocking = Blocking::new(&store);
    let large: Vec<u8> = (0..1_000_000u32).map(|index| (index % 251) as u8).collect();
    blocking.put_if_absent("log/large", large.clone()).unwrap();
    blocking.put_if_absent("log/small", b"hello".to_vec()).unwrap();
    assert_eq!(
        blocking.put_if_absent("log/small", b"x".to_vec()),
        Err(StoreError::AlreadyExists { name: "log/small".into() })
    );
    assert_eq!(blocking.get("log/large", None).unwrap(), large);
    assert_eq!(blocking.get("log/small", Some(1..3)).unwrap(), b"el");
    assert_eq!(blocking.list_all("log/", None, 1).unwrap(), ["log/large", "log/small"]);
    blocking.delete(vec!["log/large".into()]).unwrap();
    assert_eq!(blocking.list_all("log/", None, 10).unwrap(), ["log/small"]);

    // The Mozilla roots do not include the test certificate.
    let untrusted = S3Options { attempts_max: 2, ..fast_options() };
    let store = S3Store::open(https, untrusted, S3Metrics::default()).unwrap();
    let result = Blocking::new(&store).get("log/small", None);
    assert!(matches!(&result, Err(StoreError::Transient { message }) if message.contains("certificate")), "{result:?}");
}
