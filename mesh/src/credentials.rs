//! Cluster credentials: the cluster CA, node identities, and the ractor_cluster cookie.
//!
//! A cluster folder (`init-cluster`) holds `ca.crt`, `ca.key` and `cookie`. A node's identity
//! folder (`issue-cert`) holds `node.crt`, `node.key`, the CA's `ca.crt` and the `cookie`: all a
//! node needs to join, and nothing that could mint another node.
//!
//! Every node certificate names the node twice: as its common name (the node's identity in the
//! mesh) and as a DNS subject-alternative name, beside the shared [`NODE_SERVER_NAME`] that
//! peers dial when they know an address but not yet a name.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// DNS name every node certificate carries besides its own; dialers (peers and clients) verify
/// it when they know only an address.
pub use ganglion_client::client::NODE_SERVER_NAME;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const COOKIE: &str = "cookie";
const NODE_CERT: &str = "node.crt";
const NODE_KEY: &str = "node.key";

/// Node names are DNS labels: they travel in certificates and in ractor_cluster node names.
const MAX_NAME_LEN: usize = 63;

/// Why credentials could not be created or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A cluster folder already holds a CA; overwriting it would orphan every node.
    #[error("{0} already holds a cluster CA; refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    /// The node name is not usable as an identity.
    #[error(
        "invalid node name `{0}`: use 1-63 lower-case letters, digits and '-', not starting or ending with '-'"
    )]
    InvalidName(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {what}")]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
}

/// Checks that `name` can be a node identity (a DNS label).
pub fn validate_node_name(name: &str) -> Result<(), CredentialsError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CredentialsError::InvalidName(name.to_owned()))
    }
}

/// PEM text of a freshly generated cluster CA and cookie.
#[derive(Debug, Clone)]
pub struct ClusterSecrets {
    /// The CA certificate.
    pub ca_cert_pem: String,
    /// The CA's private key.
    pub ca_key_pem: String,
    /// The ractor_cluster cookie shared by every node.
    pub cookie: String,
}

impl ClusterSecrets {
    /// Generates a new CA and cookie.
    pub fn generate() -> Result<Self, CredentialsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "ganglion cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            ca_cert_pem: cert.pem(),
            ca_key_pem: key.serialize_pem(),
            cookie: random_secret(),
        })
    }

    /// Issues a node certificate named `name`, returning its (certificate, key) PEM.
    pub fn issue(&self, name: &str) -> Result<(String, String), CredentialsError> {
        validate_node_name(name)?;
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, ca_key)?;
        let mut params =
            CertificateParams::new(vec![name.to_owned(), NODE_SERVER_NAME.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Builds an in-memory identity for `name` (tests and benches).
    pub fn identity(&self, name: &str) -> Result<Identity, CredentialsError> {
        let (cert, key) = self.issue(name)?;
        let here = Path::new("<memory>");
        Ok(Identity {
            name: name.to_owned(),
            cert_chain: parse_certs(here, &cert)?,
            key: parse_key(here, &key)?,
            ca_cert: parse_certs(here, &self.ca_cert_pem)?.remove(0),
            cookie: self.cookie.clone(),
        })
    }
}

/// A random secret of 24 bytes, hex-encoded (cluster cookies, generated admin tokens).
pub fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new cluster CA and cookie into `dir` (created if missing).
pub fn init_cluster(dir: &Path) -> Result<(), CredentialsError> {
    if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
        return Err(CredentialsError::AlreadyInitialised(dir.to_owned()));
    }
    create_dir(dir)?;
    let secrets = ClusterSecrets::generate()?;
    write_file(&dir.join(CA_CERT), &secrets.ca_cert_pem, 0o644)?;
    write_file(&dir.join(CA_KEY), &secrets.ca_key_pem, 0o600)?;
    write_file(&dir.join(COOKIE), &secrets.cookie, 0o600)?;
    Ok(())
}

/// Issues the identity of node `name` from the cluster folder into `out` (created if missing).
pub fn issue_cert(cluster_dir: &Path, name: &str, out: &Path) -> Result<(), CredentialsError> {
    validate_node_name(name)?;
    let secrets = ClusterSecrets {
        ca_cert_pem: read_file(&cluster_dir.join(CA_CERT))?,
        ca_key_pem: read_file(&cluster_dir.join(CA_KEY))?,
        cookie: read_file(&cluster_dir.join(COOKIE))?.trim().to_owned(),
    };
    let (cert, key) = secrets.issue(name)?;
    create_dir(out)?;
    write_file(&out.join(NODE_CERT), &cert, 0o644)?;
    write_file(&out.join(NODE_KEY), &key, 0o600)?;
    write_file(&out.join(CA_CERT), &secrets.ca_cert_pem, 0o644)?;
    write_file(&out.join(COOKIE), &secrets.cookie, 0o600)?;
    Ok(())
}

/// A node's loaded identity: who it is and what it trusts.
#[derive(Debug)]
pub struct Identity {
    /// The node's name, taken from its certificate.
    pub name: String,
    /// The node certificate (first) and any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
    /// The cluster CA certificate.
    pub ca_cert: CertificateDer<'static>,
    /// The ractor_cluster cookie.
    pub cookie: String,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            ca_cert: self.ca_cert.clone(),
            cookie: self.cookie.clone(),
        }
    }
}

impl Identity {
    /// Loads an identity folder written by [`issue_cert`].
    pub fn load(dir: &Path) -> Result<Self, CredentialsError> {
        let cert_path = dir.join(NODE_CERT);
        let cert_chain = parse_certs(&cert_path, &read_file(&cert_path)?)?;
        let name = certificate_name(&cert_chain[0]).ok_or_else(|| CredentialsError::Invalid {
            path: cert_path.clone(),
            what: "certificate has no common name".into(),
        })?;
        validate_node_name(&name)?;
        let key_path = dir.join(NODE_KEY);
        let key = parse_key(&key_path, &read_file(&key_path)?)?;
        let ca_path = dir.join(CA_CERT);
        let ca_cert = parse_certs(&ca_path, &read_file(&ca_path)?)?.remove(0);
        let cookie = read_file(&dir.join(COOKIE))?.trim().to_owned();
        Ok(Self {
            name,
            cert_chain,
            key,
            ca_cert,
            cookie,
        })
    }
}

/// The common name of a DER certificate: a node's name in the mesh.
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

fn parse_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialsError::Invalid {
            path: path.to_owned(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CredentialsError::Invalid {
            path: path.to_owned(),
            what: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

fn parse_key(path: &Path, pem: &str) -> Result<PrivateKeyDer<'static>, CredentialsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| CredentialsError::Invalid {
            path: path.to_owned(),
            what: e.to_string(),
        })?
        .ok_or_else(|| CredentialsError::Invalid {
            path: path.to_owned(),
            what: "no private key in file".into(),
        })
}

fn read_file(path: &Path) -> Result<String, CredentialsError> {
    fs::read_to_string(path).map_err(|source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), CredentialsError> {
    fs::create_dir_all(dir).map_err(|source| CredentialsError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CredentialsError> {
    let io = |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_labels() {
        for good in ["a", "edge-1", "regional0", &"x".repeat(63)] {
            assert!(validate_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a b", "ä", &"x".repeat(64)] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn issued_certificates_carry_the_node_name() {
        let secrets = ClusterSecrets::generate().expect("ca");
        let identity = secrets.identity("edge-1").expect("identity");
        assert_eq!(
            certificate_name(&identity.cert_chain[0]).as_deref(),
            Some("edge-1")
        );
        assert_eq!(identity.cookie.len(), 48);
    }

    #[test]
    fn cluster_and_identity_folders_round_trip() {
        let root = std::env::temp_dir().join(format!("ganglion-cred-{}", std::process::id()));
        let cluster = root.join("cluster");
        init_cluster(&cluster).expect("init");
        assert!(matches!(
            init_cluster(&cluster),
            Err(CredentialsError::AlreadyInitialised(_))
        ));
        issue_cert(&cluster, "node-a", &root.join("a")).expect("issue");
        let identity = Identity::load(&root.join("a")).expect("load");
        assert_eq!(identity.name, "node-a");
        assert!(matches!(
            issue_cert(&cluster, "Bad Name", &root.join("b")),
            Err(CredentialsError::InvalidName(_))
        ));
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
