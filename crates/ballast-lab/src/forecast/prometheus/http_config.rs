//! Prometheus's HTTP client configuration, the YAML file `promtool --http.config.file` and
//! `amtool` read (prometheus/common's `HTTPClientConfig`), for `forecast report --prometheus URL
//! --http-config FILE`: basic auth, a bearer token (or another authorization type), and TLS (a
//! CA to trust instead of the bundled roots, a client certificate, or no verification at all).
//!
//! Its keys and rules are Prometheus's: at most one of `basic_auth`, `authorization`,
//! `bearer_token` and `bearer_token_file`; each secret inline or in a file, never both; files
//! named relative to the config file's directory; secrets read from files trimmed of surrounding
//! white space. A key ballast does not support is refused by name, never ignored: a proxy, OAuth
//! 2.0, a TLS server name or version bounds would change where or how the queries go.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::Deserialize;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    tls_config: Option<Tls>,
    follow_redirects: Option<bool>,
    /// Accepted for files written for Prometheus; queries go over HTTP/1.1 either way.
    #[serde(rename = "enable_http2")]
    _enable_http2: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    username: Option<String>,
    username_file: Option<PathBuf>,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    ca: Option<String>,
    ca_file: Option<PathBuf>,
    cert: Option<String>,
    cert_file: Option<PathBuf>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// How the queries are made: the `Authorization` header they carry and the TLS settings.
#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    authorization: Option<String>,
    tls: Option<TlsConfig>,
    follow_redirects: bool,
}

impl HttpConfig {
    /// No authorization, the bundled roots, redirects followed (Prometheus's defaults).
    pub fn plain() -> HttpConfig {
        HttpConfig {
            follow_redirects: true,
            ..HttpConfig::default()
        }
    }

    /// Reads the file at `path`. Every error names the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<HttpConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the HTTP config {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        HttpConfig::parse(&text, dir).with_context(|| format!("{}", path.display()))
    }

    /// Parses `text`, the files it names relative to `dir`.
    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<HttpConfig> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?
        };
        let given = [
            ("basic_auth", file.basic_auth.is_some()),
            ("authorization", file.authorization.is_some()),
            ("bearer_token", file.bearer_token.is_some()),
            ("bearer_token_file", file.bearer_token_file.is_some()),
        ];
        let set: Vec<&str> = given.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
        if set.len() > 1 {
            bail!(
                "at most one of basic_auth, authorization, bearer_token and bearer_token_file may be set, not {}",
                set.join(" and ")
            );
        }
        let authorization = if let Some(basic) = &file.basic_auth {
            let username = secret(
                dir,
                "basic_auth.username",
                &basic.username,
                &basic.username_file,
            )?
            .unwrap_or_default();
            let password = secret(
                dir,
                "basic_auth.password",
                &basic.password,
                &basic.password_file,
            )?
            .unwrap_or_default();
            if username.is_empty() {
                bail!("basic_auth: username (or username_file) is required");
            }
            let pair = format!("{username}:{password}");
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        } else if let Some(auth) = &file.authorization {
            let kind = auth.kind.as_deref().unwrap_or("Bearer");
            if kind.eq_ignore_ascii_case("basic") {
                bail!("authorization.type: `Basic` is set with basic_auth, not authorization");
            }
            if kind.is_empty() || kind.contains(char::is_whitespace) {
                bail!("authorization.type: `{kind}` is not a scheme name");
            }
            let credentials = secret(
                dir,
                "authorization.credentials",
                &auth.credentials,
                &auth.credentials_file,
            )?;
            match credentials {
                Some(credentials) if !credentials.is_empty() => {
                    Some(format!("{kind} {credentials}"))
                }
                _ => bail!("authorization: credentials (or credentials_file) is required"),
            }
        } else {
            secret(
                dir,
                "bearer_token",
                &file.bearer_token,
                &file.bearer_token_file,
            )?
            .map(|token| format!("Bearer {token}"))
        };
        let tls = file
            .tls_config
            .as_ref()
            .map(|tls| tls_config(dir, tls))
            .transpose()?;
        Ok(HttpConfig {
            authorization,
            tls,
            follow_redirects: file.follow_redirects.unwrap_or(true),
        })
    }

    /// The `Authorization` header's value, if the config sets one.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// The TLS settings, if the config has any (else the defaults: the bundled roots).
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// Whether redirects are followed.
    pub fn follow_redirects(&self) -> bool {
        self.follow_redirects
    }
}

/// `key` given inline or in a file (relative to `dir`), not both; a file's text trimmed.
fn secret(
    dir: &Path,
    key: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("{key} and {key}_file are both set; set one"),
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(file)) => {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{key}_file: cannot read {}", path.display()))?;
            Ok(Some(text.trim().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// PEM text given inline or in a file (relative to `dir`), not both, with where it came from.
fn pem(
    dir: &Path,
    key: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("tls_config: {key} and {key}_file are both set; set one"),
        (Some(text), None) => Ok(Some((
            text.as_bytes().to_vec(),
            format!("tls_config.{key}"),
        ))),
        (None, Some(file)) => {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).with_context(|| {
                format!("tls_config.{key}_file: cannot read {}", path.display())
            })?;
            Ok(Some((
                bytes,
                format!("tls_config.{key}_file {}", path.display()),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// The certificates in PEM `bytes`; none is an error naming `whence`.
fn certificates(bytes: &[u8], whence: &str) -> anyhow::Result<Vec<Certificate<'static>>> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(bytes) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(error) => bail!("{whence}: not PEM: {error}"),
        }
    }
    if certs.is_empty() {
        bail!("{whence}: no PEM certificate (`-----BEGIN CERTIFICATE-----`) in it");
    }
    Ok(certs)
}

fn tls_config(dir: &Path, tls: &Tls) -> anyhow::Result<TlsConfig> {
    for (key, value) in [
        ("server_name", &tls.server_name),
        ("min_version", &tls.min_version),
        ("max_version", &tls.max_version),
    ] {
        if value.is_some() {
            bail!(
                "tls_config.{key} is not supported: the server's name is the URL's host and TLS 1.2 or 1.3 is used"
            );
        }
    }
    let mut builder = TlsConfig::builder();
    if let Some((bytes, whence)) = pem(dir, "ca", &tls.ca, &tls.ca_file)? {
        builder = builder.root_certs(RootCerts::new_with_certs(&certificates(&bytes, &whence)?));
    }
    let cert = pem(dir, "cert", &tls.cert, &tls.cert_file)?;
    let key = pem(dir, "key", &tls.key, &tls.key_file)?;
    match (cert, key) {
        (Some((cert, cert_whence)), Some((key, key_whence))) => {
            let chain = certificates(&cert, &cert_whence)?;
            let key = PrivateKey::from_pem(&key)
                .map_err(|e| anyhow::anyhow!("{key_whence}: no PEM private key: {e}"))?;
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        (Some(_), None) => bail!("tls_config: a client certificate needs its key (key_file)"),
        (None, Some(_)) => bail!("tls_config: a client key needs its certificate (cert_file)"),
        (None, None) => {}
    }
    if tls.insecure_skip_verify == Some(true) {
        builder = builder.disable_verification(true);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, dir: &Path) -> anyhow::Result<HttpConfig> {
        HttpConfig::parse(text, dir)
    }

    fn error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        format!("{:#}", parse(text, dir.path()).unwrap_err())
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn each_way_of_authorizing_gives_its_header() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("token"), "  abc.def \n").unwrap();
        let cases = [
            (
                "basic_auth:\n  username: ops\n  password: pw\n",
                Some(basic("ops:pw")),
            ),
            (
                "basic_auth:\n  username: ops\n  password_file: password\n",
                Some(basic("ops:s3cret")),
            ),
            (
                "authorization:\n  credentials_file: token\n",
                Some("Bearer abc.def".to_owned()),
            ),
            (
                "authorization:\n  type: Token\n  credentials: xyz\n",
                Some("Token xyz".to_owned()),
            ),
            ("bearer_token: t0k\n", Some("Bearer t0k".to_owned())),
            (
                "bearer_token_file: token\n",
                Some("Bearer abc.def".to_owned()),
            ),
            ("", None),
            ("follow_redirects: false\nenable_http2: true\n", None),
        ];
        for (text, header) in cases {
            let config = parse(text, dir.path()).unwrap_or_else(|e| panic!("{text}: {e:#}"));
            assert_eq!(config.authorization().map(str::to_owned), header, "{text}");
            assert!(config.tls().is_none());
        }
        assert!(
            !parse("follow_redirects: false\n", dir.path())
                .unwrap()
                .follow_redirects()
        );
        assert!(HttpConfig::plain().follow_redirects());
    }

    #[test]
    fn bad_configs_are_refused_naming_the_key() {
        for (text, expected) in [
            (
                "basic_auth:\n  username: a\nbearer_token: b\n",
                "not basic_auth and bearer_token",
            ),
            (
                "basic_auth:\n  username: a\n  password: b\n  password_file: c\n",
                "basic_auth.password and basic_auth.password_file are both set",
            ),
            ("basic_auth:\n  password: b\n", "basic_auth: username"),
            (
                "authorization:\n  type: Bearer\n",
                "credentials (or credentials_file)",
            ),
            (
                "authorization:\n  type: Basic\n  credentials: x\n",
                "set with basic_auth",
            ),
            ("proxy_url: http://proxy:3128\n", "proxy_url"),
            ("oauth2:\n  client_id: x\n", "oauth2"),
            (
                "tls_config:\n  server_name: prom\n",
                "tls_config.server_name is not supported",
            ),
            (
                "tls_config:\n  ca_file: missing.pem\n",
                "tls_config.ca_file: cannot read",
            ),
            (
                "tls_config:\n  ca: not a certificate\n",
                "tls_config.ca: no PEM certificate",
            ),
            ("tls_config:\n  cert: c\n", "needs its key"),
            (
                "bearer_token_file: nowhere\n",
                "bearer_token_file: cannot read",
            ),
            (
                "tls_config:\n  insecure_skip_verify: 3\n",
                "insecure_skip_verify",
            ),
            ("basic_auth: [1, 2\n", ""),
        ] {
            let message = error(text);
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn a_ca_and_a_client_certificate_are_read_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("tls/key.pem"),
            ca.signing_key.serialize_pem(),
        )
        .unwrap();
        let path = dir.path().join("http.yml");
        std::fs::write(
            &path,
            "tls_config:\n  ca_file: tls/ca.pem\n  cert_file: tls/ca.pem\n  key_file: tls/key.pem\n",
        )
        .unwrap();
        let config = HttpConfig::load(&path).unwrap();
        let tls = config.tls().unwrap();
        assert!(matches!(tls.root_certs(), RootCerts::Specific(certs) if certs.len() == 1));
        assert!(tls.client_cert().is_some());
        assert!(!tls.disable_verification());

        let error = format!(
            "{:#}",
            HttpConfig::load(&dir.path().join("none.yml")).unwrap_err()
        );
        assert!(error.contains("none.yml"), "{error}");
        std::fs::write(&path, "tls_config:\n  ca_file: [\n").unwrap();
        let error = format!("{:#}", HttpConfig::load(&path).unwrap_err());
        assert!(error.contains("http.yml"), "{error}");
    }
}
