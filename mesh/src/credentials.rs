//! Cluster credentials: the cluster CA, node identities, the ractor_cluster cookie, and the
//! key-signing key of API keys ([`api_keys`]).
//!
//! A cluster folder (`init-cluster`) holds `ca.crt`, `ca.key`, `cookie` and the API-key
//! signing pair `api-keys.key` / `api-keys.pub` (an older folder gets the pair on its first
//! `issue-key` or `issue-cert`). A node's identity folder (`issue-cert`) holds `node.crt`,
//! `node.key`, the CA's `ca.crt`, the `cookie` and `api-keys.pub`: all a node needs to join and
//! to check API keys, and nothing that could mint another node or another key.
//!
//! Every node certificate names the node twice: as its common name (the node's identity in the
//! mesh) and as a DNS subject-alternative name, beside the shared [`NODE_SERVER_NAME`] that
//! peers dial when they know an address but not yet a name.
//!
//! Secret files (`ca.key`, `node.key`, `cookie`, the generated admin token) are created afresh
//! with mode 0600, never through a symbolic link, and are used again only while they are regular
//! files that their group and others cannot access.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod api_keys;
pub mod revoked;

use api_keys::{KeyClaims, KeySigner, KeyVerifier};

/// DNS name every node certificate carries besides its own; dialers (peers and clients) verify
/// it when they know only an address.
pub use ganglion_client::client::NODE_SERVER_NAME;

/// The account keyless requests are served as, when the node allows them: anybody who can
/// reach the node, so nothing of one such request is shared with another (the result cache,
/// parked prompts).
pub const ANONYMOUS: &str = "anonymous";

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const COOKIE: &str = "cookie";
const NODE_CERT: &str = "node.crt";
const NODE_KEY: &str = "node.key";
const SIGNING_KEY: &str = "api-keys.key";
const VERIFYING_KEY: &str = "api-keys.pub";

/// Node names are DNS labels: they travel in certificates and in ractor_cluster node names.
const MAX_NAME_LEN: usize = 63;

/// Mode of secret files: read and write for the owner only.
const SECRET_MODE: u32 = 0o600;
/// Mode of certificate files, which are public.
const PUBLIC_MODE: u32 = 0o644;
/// Permission bits of group and others; a secret file with any of them set is refused.
const GROUP_OTHER_BITS: u32 = 0o077;
/// A generated admin token shorter than this (an empty or truncated file) is replaced; the
/// configured token has the same minimum.
const MIN_TOKEN_LEN: usize = 16;

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
    /// A secret file is a symbolic link or not a regular file: following it could read or
    /// overwrite a file chosen by whoever planted it.
    #[error("{0} is a symbolic link or not a regular file; refusing to use it")]
    NotRegularFile(PathBuf),
    /// The API-key signing key is unusable.
    #[error("API key signing: {0}")]
    Keys(#[from] api_keys::KeyError),
    /// A secret file can be accessed by its group or by others.
    #[error(
        "{path} is accessible by group or others (mode {mode:03o}); restrict it with `chmod 600` or remove it"
    )]
    TooOpen {
        /// The file concerned.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
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
            key_verifier: None,
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
    write_file(&dir.join(CA_CERT), &secrets.ca_cert_pem, PUBLIC_MODE)?;
    write_file(&dir.join(CA_KEY), &secrets.ca_key_pem, SECRET_MODE)?;
    write_file(&dir.join(COOKIE), &secrets.cookie, SECRET_MODE)?;
    signing_key(dir)?;
    Ok(())
}

/// The cluster's API-key signer, created (with its public half beside it) if the folder has
/// none yet.
fn signing_key(cluster_dir: &Path) -> Result<KeySigner, CredentialsError> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let path = cluster_dir.join(SIGNING_KEY);
    let invalid = |what: String| CredentialsError::Invalid {
        path: path.clone(),
        what,
    };
    if path.exists() || path.symlink_metadata().is_ok() {
        let pkcs8 = STANDARD
            .decode(read_secret(&path)?.trim())
            .map_err(|e| invalid(e.to_string()))?;
        return Ok(KeySigner::from_pkcs8(&pkcs8)?);
    }
    let (signer, pkcs8) = KeySigner::generate()?;
    write_file(&path, &STANDARD.encode(pkcs8), SECRET_MODE)?;
    write_file(
        &cluster_dir.join(VERIFYING_KEY),
        &STANDARD.encode(signer.public_key()),
        PUBLIC_MODE,
    )?;
    Ok(signer)
}

/// Signs an API key for `claims` with the cluster folder's key-signing key (created on first
/// use).
pub fn issue_key(cluster_dir: &Path, claims: &KeyClaims) -> Result<String, CredentialsError> {
    Ok(signing_key(cluster_dir)?.sign(claims)?)
}

/// Issues the identity of node `name` from the cluster folder into `out` (created if missing).
pub fn issue_cert(cluster_dir: &Path, name: &str, out: &Path) -> Result<(), CredentialsError> {
    validate_node_name(name)?;
    let secrets = ClusterSecrets {
        ca_cert_pem: read_file(&cluster_dir.join(CA_CERT))?,
        ca_key_pem: read_secret(&cluster_dir.join(CA_KEY))?,
        cookie: read_secret(&cluster_dir.join(COOKIE))?.trim().to_owned(),
    };
    let (cert, key) = secrets.issue(name)?;
    create_dir(out)?;
    write_file(&out.join(NODE_CERT), &cert, PUBLIC_MODE)?;
    write_file(&out.join(NODE_KEY), &key, SECRET_MODE)?;
    write_file(&out.join(CA_CERT), &secrets.ca_cert_pem, PUBLIC_MODE)?;
    write_file(&out.join(COOKIE), &secrets.cookie, SECRET_MODE)?;
    let public = signing_key(cluster_dir)?.public_key();
    use base64::Engine;
    write_file(
        &out.join(VERIFYING_KEY),
        &base64::engine::general_purpose::STANDARD.encode(public),
        PUBLIC_MODE,
    )?;
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
    /// Verifies API keys (`None` for an identity issued before API keys existed: its node
    /// accepts no key; issue the identity again).
    pub key_verifier: Option<KeyVerifier>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            ca_cert: self.ca_cert.clone(),
            cookie: self.cookie.clone(),
            key_verifier: self.key_verifier.clone(),
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
        let key = parse_key(&key_path, &read_secret(&key_path)?)?;
        let ca_path = dir.join(CA_CERT);
        let ca_cert = parse_certs(&ca_path, &read_file(&ca_path)?)?.remove(0);
        let cookie = read_secret(&dir.join(COOKIE))?.trim().to_owned();
        let verifying = dir.join(VERIFYING_KEY);
        let key_verifier = if verifying.exists() {
            use base64::Engine;
            let public = base64::engine::general_purpose::STANDARD
                .decode(read_file(&verifying)?.trim())
                .map_err(|e| CredentialsError::Invalid {
                    path: verifying.clone(),
                    what: e.to_string(),
                })?;
            Some(KeyVerifier::new(public))
        } else {
            None
        };
        Ok(Self {
            name,
            cert_chain,
            key,
            ca_cert,
            cookie,
            key_verifier,
        })
    }
}

/// The common name of a DER certificate: a node's name in the mesh.
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Reads the admin token a node generated into `path` earlier, or generates one there (mode
/// 0600) on first start. An empty or truncated token file is replaced.
pub(crate) fn generated_token(path: &Path) -> Result<String, CredentialsError> {
    match read_secret(path) {
        Ok(token) if token.trim().len() >= MIN_TOKEN_LEN => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(CredentialsError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = random_secret();
    write_file(path, &token, SECRET_MODE)?;
    Ok(token)
}

fn parse_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
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
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CredentialsError::Invalid {
        path: path.to_owned(),
        what: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in file".into(),
            other => other.to_string(),
        },
    })
}

fn read_file(path: &Path) -> Result<String, CredentialsError> {
    fs::read_to_string(path).map_err(|source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a secret file, which must be a regular file (not a symbolic link) that its group and
/// others cannot access.
fn read_secret(path: &Path) -> Result<String, CredentialsError> {
    let io = |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    };
    let seen = fs::symlink_metadata(path).map_err(io)?;
    if !seen.file_type().is_file() {
        return Err(CredentialsError::NotRegularFile(path.to_owned()));
    }
    let mut file = fs::File::open(path).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    // Opening follows links: the file opened must be the one inspected, not a link swapped in
    // since.
    if opened.dev() != seen.dev() || opened.ino() != seen.ino() {
        return Err(CredentialsError::NotRegularFile(path.to_owned()));
    }
    let mode = opened.mode() & 0o777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(CredentialsError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

fn create_dir(dir: &Path) -> Result<(), CredentialsError> {
    fs::create_dir_all(dir).map_err(|source| CredentialsError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Writes `contents` into a new file at `path` with `mode`, replacing a regular file there. The
/// file is created exclusively (`O_CREAT | O_EXCL`), so a symbolic link at `path` is never
/// followed (creation fails instead) and an old file's looser permissions are not inherited.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CredentialsError> {
    let io = |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(stale) if stale.file_type().is_file() => fs::remove_file(path).map_err(io)?,
        Ok(_) => return Err(CredentialsError::NotRegularFile(path.to_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fresh folder under the system temp folder, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("ganglion-cred-{}-{label}", std::process::id()));
            // A leftover of an earlier run whose process had the same id.
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp folder");
            Self(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("metadata").mode() & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

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
        let root = TempDir::new("round-trip");
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
    }

    #[test]
    fn secret_files_are_owner_only_and_certificates_readable() {
        let root = TempDir::new("modes");
        let (cluster, id) = (root.join("cluster"), root.join("id"));
        init_cluster(&cluster).expect("init");
        issue_cert(&cluster, "node-a", &id).expect("issue");
        for secret in [
            cluster.join(CA_KEY),
            cluster.join(COOKIE),
            id.join(NODE_KEY),
            id.join(COOKIE),
        ] {
            let mode = mode_of(&secret);
            assert_eq!(mode & GROUP_OTHER_BITS, 0, "{}: {mode:o}", secret.display());
            assert_eq!(mode & 0o600, 0o600, "{}: {mode:o}", secret.display());
        }
        assert_eq!(mode_of(&id.join(NODE_CERT)) & 0o400, 0o400);
    }

    #[test]
    fn reissuing_replaces_files_and_tightens_loose_ones() {
        let root = TempDir::new("reissue");
        let (cluster, id) = (root.join("cluster"), root.join("id"));
        init_cluster(&cluster).expect("init");
        issue_cert(&cluster, "node-a", &id).expect("issue");
        let first = fs::read_to_string(id.join(NODE_KEY)).expect("key");
        chmod(&id.join(NODE_KEY), 0o644);
        issue_cert(&cluster, "node-a", &id).expect("reissue");
        assert_ne!(fs::read_to_string(id.join(NODE_KEY)).expect("key"), first);
        assert_eq!(mode_of(&id.join(NODE_KEY)) & GROUP_OTHER_BITS, 0);
        Identity::load(&id).expect("load");
    }

    #[test]
    fn readable_key_or_cookie_is_refused() {
        let root = TempDir::new("too-open");
        let (cluster, id) = (root.join("cluster"), root.join("id"));
        init_cluster(&cluster).expect("init");
        issue_cert(&cluster, "node-a", &id).expect("issue");
        for file in [NODE_KEY, COOKIE] {
            chmod(&id.join(file), 0o640);
            assert!(
                matches!(
                    Identity::load(&id),
                    Err(CredentialsError::TooOpen { mode: 0o640, .. })
                ),
                "{file}"
            );
            chmod(&id.join(file), 0o600);
        }
        chmod(&cluster.join(CA_KEY), 0o604);
        assert!(matches!(
            issue_cert(&cluster, "node-b", &root.join("b")),
            Err(CredentialsError::TooOpen { mode: 0o604, .. })
        ));
    }

    #[test]
    fn symlinked_secrets_are_neither_read_nor_written_through() {
        let root = TempDir::new("symlink");
        let (cluster, id) = (root.join("cluster"), root.join("id"));
        init_cluster(&cluster).expect("init");
        issue_cert(&cluster, "node-a", &id).expect("issue");

        // Reading: a cookie that links elsewhere is refused, however tight the target's mode.
        let elsewhere = root.join("elsewhere");
        fs::copy(id.join(COOKIE), &elsewhere).expect("copy");
        chmod(&elsewhere, 0o600);
        fs::remove_file(id.join(COOKIE)).expect("remove");
        std::os::unix::fs::symlink(&elsewhere, id.join(COOKIE)).expect("symlink");
        assert!(matches!(
            Identity::load(&id),
            Err(CredentialsError::NotRegularFile(_))
        ));

        // Writing: the file a planted link points to stays untouched.
        let victim = root.join("victim");
        fs::write(&victim, "keep").expect("victim");
        let out = root.join("b");
        fs::create_dir_all(&out).expect("out");
        std::os::unix::fs::symlink(&victim, out.join(NODE_KEY)).expect("symlink");
        assert!(matches!(
            issue_cert(&cluster, "node-b", &out),
            Err(CredentialsError::NotRegularFile(_))
        ));
        let token = root.join("admin-token");
        std::os::unix::fs::symlink(&victim, &token).expect("symlink");
        assert!(matches!(
            generated_token(&token),
            Err(CredentialsError::NotRegularFile(_))
        ));
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "keep");
    }

    #[test]
    fn generated_token_is_created_once_then_reused() {
        let root = TempDir::new("token");
        let path = root.join("admin-token");
        let token = generated_token(&path).expect("create");
        assert!(token.len() >= MIN_TOKEN_LEN);
        assert_eq!(mode_of(&path) & GROUP_OTHER_BITS, 0);
        assert_eq!(generated_token(&path).expect("reuse"), token);

        chmod(&path, 0o644);
        assert!(matches!(
            generated_token(&path),
            Err(CredentialsError::TooOpen { mode: 0o644, .. })
        ));

        // A truncated token file is replaced by a fresh token.
        fs::remove_file(&path).expect("remove");
        fs::write(&path, "short").expect("write");
        chmod(&path, 0o600);
        let fresh = generated_token(&path).expect("replace");
        assert!(fresh.len() >= MIN_TOKEN_LEN && fresh != token);
        assert_eq!(fs::read_to_string(&path).expect("read"), fresh);
    }
}
