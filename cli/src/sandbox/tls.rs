//! `crmsync sandbox --tls`: a certificate authority made on the spot (rcgen), a server
//! certificate it signs for the sandbox's names, and a TLS-terminating proxy task in front of
//! each fake (the fakes themselves speak plain HTTP on internal loopback ports).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA certificate (PEM, what clients trust) and the server side of TLS.
pub struct Authority {
    pub ca_pem: String,
    acceptor: TlsAcceptor,
}

impl Authority {
    /// A new CA and a server certificate for `localhost`, `127.0.0.1`, `::1` and `host`.
    pub fn new(host: &str) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "crmsync sandbox CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !names.iter().any(|n| n == host) && !is_unspecified(host) {
            names.push(host.to_owned());
        }
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(names).context("--host is not a usable certificate name")?;
        leaf.distinguished_name.push(DnType::CommonName, "crmsync sandbox");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer)?;

        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        Ok(Self { ca_pem: ca_cert.pem(), acceptor: TlsAcceptor::from(Arc::new(config)) })
    }

    /// Serve TLS on `listener`, passing each connection's bytes to the plain server `backend`.
    pub fn front(&self, listener: std::net::TcpListener, backend: SocketAddr) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                    // The connection ends when either side closes it (a dropped reply included).
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(())
    }
}

/// `0.0.0.0` or `::`: every interface, not a name a client can use.
pub fn is_unspecified(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}
