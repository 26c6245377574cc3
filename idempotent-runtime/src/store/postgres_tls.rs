//! TLS options of a PostgreSQL URL, read as libpq reads them, and the rustls connector they
//! ask for (with the `postgres-tls` feature).
//!
//! tokio-postgres understands `sslmode=disable|prefer|require` only, and verifies nothing
//! itself. This module takes `sslmode` (including `verify-ca` and `verify-full`) and
//! `sslrootcert` out of the URL, hands tokio-postgres a URL it accepts, and builds the
//! certificate verification the mode asks for:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | absent, `disable` | no | no |
//! | `prefer` | if the server offers it | no |
//! | `require` | yes | no; with `sslrootcert`, its chain (as libpq does) |
//! | `verify-ca` | yes | chain to a trusted root |
//! | `verify-full` | yes | chain, and the host name (or IP) in the certificate |
//!
//! Trusted roots are the PEM certificates in `sslrootcert`, or the system's roots without it.

use crate::store::StoreError;

/// What the URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS part of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// `None` when the URL does not say: plain connections, as before TLS support.
    pub(crate) mode: Option<SslMode>,
    pub(crate) root_cert: Option<String>,
}

impl TlsOptions {
    /// Whether connections use TLS at all.
    #[cfg(any(feature = "postgres-tls", test))]
    pub(crate) fn wants_tls(&self) -> bool {
        matches!(
            self.mode,
            Some(SslMode::Prefer | SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
        )
    }
}

fn parse_mode(value: &str) -> Result<SslMode, StoreError> {
    match value {
        "disable" => Ok(SslMode::Disable),
        "prefer" => Ok(SslMode::Prefer),
        "require" => Ok(SslMode::Require),
        "verify-ca" => Ok(SslMode::VerifyCa),
        "verify-full" => Ok(SslMode::VerifyFull),
        other => Err(invalid(format!(
            "unknown sslmode `{other}`; expected one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full`"
        ))),
    }
}

fn invalid(message: String) -> StoreError {
    StoreError::Unavailable(message.into())
}

/// The sslmode tokio-postgres gets: it enforces encryption, this module the verification.
fn tokio_postgres_mode(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
    }
}

/// Splits `url` (`postgres://...?sslmode=..&sslrootcert=..` or `host=.. sslmode=..`) into the
/// URL tokio-postgres parses and the TLS options.
///
/// # Errors
///
/// An unknown `sslmode`.
pub(crate) fn split_url(url: &str) -> Result<(String, TlsOptions), StoreError> {
    let mut options = TlsOptions {
        mode: None,
        root_cert: None,
    };
    let is_uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (head, rest, separator) = if is_uri {
        match url.split_once('?') {
            Some((head, query)) => (head, query, '&'),
            None => return Ok((url.to_owned(), options)),
        }
    } else {
        ("", url, ' ')
    };
    let mut kept = Vec::new();
    for pair in rest.split(separator).filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = if is_uri {
            percent_decode(value)
        } else {
            value.to_owned()
        };
        match key.trim() {
            "sslmode" => {
                let mode = parse_mode(value.trim())?;
                options.mode = Some(mode);
                kept.push(format!("sslmode={}", tokio_postgres_mode(mode)));
            }
            "sslrootcert" => options.root_cert = Some(value.trim().to_owned()),
            _ => kept.push(pair.to_owned()),
        }
    }
    let rebuilt = if is_uri {
        if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        }
    } else {
        kept.join(" ")
    };
    Ok((rebuilt, options))
}

/// `%2F`-style escapes of a URI query value (a path in `sslrootcert`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| value.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(feature = "postgres-tls")]
pub(crate) use self::rustls_connector::connector;

#[cfg(feature = "postgres-tls")]
mod rustls_connector {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tokio_postgres_rustls::MakeRustlsConnect;

    use super::{invalid, SslMode, TlsOptions};
    use crate::store::StoreError;

    /// The connector `options` ask for.
    ///
    /// # Errors
    ///
    /// A root certificate file that cannot be read, holds no certificate, or (without one) no
    /// system root certificate.
    pub(crate) fn connector(options: &TlsOptions) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(StoreError::unavailable)?;
        let mode = options.mode.unwrap_or(SslMode::Disable);
        let checks_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (mode == SslMode::Require && options.root_cert.is_some());
        let chain = if checks_chain {
            let roots = Arc::new(roots(options.root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(StoreError::unavailable)?;
            Some(webpki)
        } else {
            None
        };
        let config = match chain {
            Some(webpki) if mode == SslMode::VerifyFull => builder.with_webpki_verifier(webpki).with_no_client_auth(),
            chain => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient { chain, provider }))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(file: Option<&str>) -> Result<RootCertStore, StoreError> {
        let mut store = RootCertStore::empty();
        match file {
            Some(path) => {
                for certificate in CertificateDer::pem_file_iter(path)
                    .map_err(|e| invalid(format!("cannot read sslrootcert `{path}`: {e}")))?
                {
                    let certificate =
                        certificate.map_err(|e| invalid(format!("cannot read sslrootcert `{path}`: {e}")))?;
                    store.add(certificate).map_err(StoreError::unavailable)?;
                }
            }
            None => {
                store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        if store.is_empty() {
            let source = file.unwrap_or("the system's certificate store");
            return Err(invalid(format!("no root certificate in {source}")));
        }
        Ok(store)
    }

    /// `verify-ca` (and `require` with `sslrootcert`), with `chain`: the chain must lead to a
    /// trusted root; the name in the certificate is not compared with the host. `prefer` and
    /// `require` without `sslrootcert`, without `chain`: encrypted, but any certificate is
    /// accepted (libpq's meaning of these modes). The handshake signature is always checked.
    #[derive(Debug)]
    struct Lenient {
        chain: Option<Arc<WebPkiServerVerifier>>,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Lenient {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let Some(chain) = &self.chain else {
                return Ok(ServerCertVerified::assertion());
            };
            match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_tls_options_is_unchanged() {
        let (url, options) = split_url("postgres://app@db:5432/app?application_name=x").expect("valid");
        assert_eq!(url, "postgres://app@db:5432/app?application_name=x");
        assert_eq!(options.mode, None);
        assert!(!options.wants_tls());
    }

    #[test]
    fn verify_full_and_the_root_certificate_are_taken_out_of_a_uri() {
        let (url, options) =
            split_url("postgres://app@db/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3")
                .expect("valid");
        assert_eq!(url, "postgres://app@db/app?sslmode=require&connect_timeout=3");
        assert_eq!(options.mode, Some(SslMode::VerifyFull));
        assert_eq!(options.root_cert.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn key_value_strings_are_read_too() {
        let (url, options) = split_url("host=db user=app sslmode=verify-ca sslrootcert=/ca.pem").expect("valid");
        assert_eq!(url, "host=db user=app sslmode=require");
        assert_eq!(options.mode, Some(SslMode::VerifyCa));
        assert_eq!(options.root_cert.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn an_unknown_sslmode_is_refused_with_the_allowed_values() {
        let error = split_url("postgres://db/app?sslmode=verify").expect_err("invalid");
        assert!(error.to_string().contains("expected one of"), "{error}");
    }
}
