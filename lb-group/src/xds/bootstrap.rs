//! The xDS bootstrap configuration: which management servers a client talks to,
//! the node it presents to them, and the Listener resource names its channels
//! subscribe to (gRFCs A27, A29, A30, A47, A53 and A65; grpc's
//! `doc/grpc_xds_bootstrap_format.md`).
//!
//! It comes from the file named by `GRPC_XDS_BOOTSTRAP`, or else from the JSON in
//! `GRPC_XDS_BOOTSTRAP_CONFIG` ([`Bootstrap::from_env`]). Unknown fields are
//! ignored, so a bootstrap written for a newer client still loads; a field this
//! client reads with the wrong type or value is an error that names it.
//!
//! ```
//! use lb_group::xds::{Bootstrap, ChannelCreds};
//!
//! let bootstrap = Bootstrap::parse(r#"{
//!     "xds_servers": [{
//!         "server_uri": "xds.example.com:443",
//!         "channel_creds": [{"type": "google_default"}, {"type": "insecure"}],
//!         "server_features": ["xds_v3", "ignore_resource_deletion"]
//!     }],
//!     "node": {"id": "client-1", "locality": {"zone": "eu-west-1a"}}
//! }"#)?;
//! let server = &bootstrap.servers[0];
//! // The first credentials type this client supports wins.
//! assert_eq!(server.creds, ChannelCreds::Insecure);
//! assert!(server.ignore_resource_deletion);
//! assert_eq!(bootstrap.node.locality.zone, "eu-west-1a");
//! assert_eq!(bootstrap.listener_resource_name(None, "svc.example.com")?, "svc.example.com");
//! # Ok::<(), lb_core::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lb_core::ConfigError;
use lb_core::config::{Fields, parse_json};
use serde_json::{Map, Value};

/// The environment variable naming the bootstrap file; it wins over
/// [`BOOTSTRAP_CONFIG_ENV`].
pub const BOOTSTRAP_FILE_ENV: &str = "GRPC_XDS_BOOTSTRAP";

/// The environment variable holding the bootstrap JSON itself.
pub const BOOTSTRAP_CONFIG_ENV: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";

/// The largest bootstrap file read: a bootstrap is a few kilobytes, and a path
/// pointing at something huge is a mistake to report, not to load.
pub const MAX_BOOTSTRAP_BYTES: u64 = 1 << 20;

/// How often `tls` channel credentials re-read their files when the bootstrap
/// does not say (gRFC A65).
pub const DEFAULT_TLS_REFRESH: Duration = Duration::from_secs(600);

/// The parsed bootstrap configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    /// The management servers, in order of preference (at least one).
    pub servers: Vec<XdsServer>,
    /// How this client identifies itself to the servers.
    pub node: Node,
    /// Certificate provider instances by name (gRFC A29), for xDS security.
    pub certificate_providers: BTreeMap<String, CertificateProvider>,
    /// The Listener name template of an xDS-enabled server (gRFC A36); `%s` is
    /// the listening address.
    pub server_listener_resource_name_template: Option<String>,
    /// The Listener name template of a channel whose `xds:` target has no
    /// authority (gRFC A47); `%s` is the target's path. Defaults to `"%s"`.
    pub client_default_listener_resource_name_template: String,
    /// Federation: authorities by name (gRFC A47).
    pub authorities: BTreeMap<String, Authority>,
}

/// One management server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsServer {
    /// The target to connect to, for example `xds.example.com:443`.
    pub uri: String,
    /// The first `channel_creds` entry of a type this client supports.
    pub creds: ChannelCreds,
    /// The `server_features` entries that are strings, as given (others are
    /// ignored, as the format asks).
    pub features: Vec<String>,
    /// `ignore_resource_deletion` is among the features (gRFC A53): a resource
    /// the server stops sending is kept, not treated as deleted.
    pub ignore_resource_deletion: bool,
}

/// Channel credentials for talking to a management server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelCreds {
    /// Plain text (`insecure`).
    Insecure,
    /// TLS, or mutual TLS when a certificate is given (`tls`, gRFC A65).
    Tls(TlsCreds),
}

/// The configuration of `tls` channel credentials (gRFC A65).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCreds {
    /// The CA certificates to trust; `None`: the system's roots.
    pub ca_certificate_file: Option<PathBuf>,
    /// This client's certificate and private key, for mutual TLS; both or
    /// neither.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// How often the files are read again.
    pub refresh_interval: Duration,
}

/// The node this client presents to management servers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// An opaque identifier of this client.
    pub id: String,
    /// The local service cluster this client runs in.
    pub cluster: String,
    /// Where this client runs.
    pub locality: Locality,
    /// Opaque metadata, passed on as given.
    pub metadata: Map<String, Value>,
}

/// A region, zone and sub-zone; empty where not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    /// The region.
    pub region: String,
    /// The zone.
    pub zone: String,
    /// The sub-zone.
    pub sub_zone: String,
}

/// A certificate provider instance (gRFC A29).
#[derive(Clone, Debug, PartialEq)]
pub struct CertificateProvider {
    /// The plugin that implements it, for example `file_watcher`.
    pub plugin_name: String,
    /// The plugin's own configuration (an empty object if not given).
    pub config: Map<String, Value>,
}

/// One authority of a federated configuration (gRFC A47).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// The Listener name template of channels whose target names this
    /// authority; starts with `xdstp://<authority>/`.
    pub client_listener_resource_name_template: String,
    /// Its own management servers; empty: the top-level ones.
    pub servers: Vec<XdsServer>,
}

/// Why no bootstrap could be loaded from the environment.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Neither environment variable is set.
    #[error(
        "xDS bootstrap not configured: set {BOOTSTRAP_FILE_ENV} to a file or {BOOTSTRAP_CONFIG_ENV} to its JSON"
    )]
    NotConfigured,
    /// The file named by `GRPC_XDS_BOOTSTRAP` could not be read.
    #[error("xDS bootstrap file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The configuration is not valid.
    #[error("xDS bootstrap from {source_name}: {error}")]
    Invalid {
        /// Where it came from: the file, or the `GRPC_XDS_BOOTSTRAP_CONFIG` variable.
        source_name: String,
        /// What is wrong with it.
        error: ConfigError,
    },
}

impl Bootstrap {
    /// Loads the bootstrap named by the environment: the file in
    /// `GRPC_XDS_BOOTSTRAP` if set, else the JSON in `GRPC_XDS_BOOTSTRAP_CONFIG`.
    ///
    /// # Errors
    ///
    /// Neither is set, the file cannot be read, or the configuration is invalid.
    pub fn from_env() -> Result<Self, BootstrapError> {
        Self::from_sources(
            std::env::var_os(BOOTSTRAP_FILE_ENV),
            std::env::var_os(BOOTSTRAP_CONFIG_ENV),
        )
    }

    /// [`Bootstrap::from_env`] with the two variables' values given: `file` (a
    /// path) wins over `config` (JSON text). An empty value counts as unset.
    ///
    /// # Errors
    ///
    /// As [`Bootstrap::from_env`].
    pub fn from_sources(
        file: Option<OsString>,
        config: Option<OsString>,
    ) -> Result<Self, BootstrapError> {
        if let Some(path) = file.filter(|p| !p.is_empty()).map(PathBuf::from) {
            let text = read_limited(&path).map_err(|reason| BootstrapError::Unreadable {
                path: path.clone(),
                reason,
            })?;
            return Self::parse(&text).map_err(|error| BootstrapError::Invalid {
                source_name: path.display().to_string(),
                error,
            });
        }
        let Some(config) = config.filter(|c| !c.is_empty()) else {
            return Err(BootstrapError::NotConfigured);
        };
        let invalid = |error| BootstrapError::Invalid {
            source_name: BOOTSTRAP_CONFIG_ENV.to_owned(),
            error,
        };
        let text = config
            .into_string()
            .map_err(|_| invalid(ConfigError::new("", "not valid UTF-8")))?;
        Self::parse(&text).map_err(invalid)
    }

    /// Parses bootstrap JSON.
    ///
    /// # Errors
    ///
    /// Not JSON, or a field this client reads is missing, of the wrong type or
    /// invalid; the error names it (`xds_servers[0].channel_creds: ...`).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let doc = parse_json(text)?;
        let f = Fields::new(&doc, "")?;
        let servers = match f.array("xds_servers")? {
            Some(list) if !list.is_empty() => servers(list).map_err(|e| e.within("xds_servers"))?,
            _ => {
                return Err(ConfigError::new(
                    "xds_servers",
                    "at least one server is required",
                ));
            }
        };
        let node = match f.get("node") {
            Some(v) => node(v).map_err(|e| e.within("node"))?,
            None => Node::default(),
        };
        let mut certificate_providers = BTreeMap::new();
        for (name, v) in f.object("certificate_providers")?.into_iter().flatten() {
            let provider = certificate_provider(v)
                .map_err(|e| e.within(name).within("certificate_providers"))?;
            certificate_providers.insert(name.clone(), provider);
        }
        let mut authorities = BTreeMap::new();
        for (name, v) in f.object("authorities")?.into_iter().flatten() {
            let authority = authority(name, v).map_err(|e| e.within(name).within("authorities"))?;
            authorities.insert(name.clone(), authority);
        }
        Ok(Self {
            servers,
            node,
            certificate_providers,
            server_listener_resource_name_template: f
                .string("server_listener_resource_name_template")?
                .map(str::to_owned),
            client_default_listener_resource_name_template: f
                .string("client_default_listener_resource_name_template")?
                .unwrap_or("%s")
                .to_owned(),
            authorities,
        })
    }

    /// The name of the Listener resource a channel subscribes to for the target
    /// `xds://<authority>/<service>` (gRFC A47). Without an authority the
    /// default template applies; an `xdstp:` name gets `service`
    /// percent-encoded.
    ///
    /// ```
    /// use lb_group::xds::Bootstrap;
    /// let b = Bootstrap::parse(r#"{
    ///     "xds_servers": [{"server_uri": "cp:1", "channel_creds": [{"type": "insecure"}]}],
    ///     "authorities": {"td": {}}
    /// }"#)?;
    /// assert_eq!(
    ///     b.listener_resource_name(Some("td"), "my svc")?,
    ///     "xdstp://td/envoy.config.listener.v3.Listener/my%20svc"
    /// );
    /// assert!(b.listener_resource_name(Some("other"), "svc").is_err());
    /// # Ok::<(), lb_core::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The target names an authority the bootstrap does not list.
    pub fn listener_resource_name(
        &self,
        authority: Option<&str>,
        service: &str,
    ) -> Result<String, ConfigError> {
        let template = match authority {
            None => &self.client_default_listener_resource_name_template,
            Some(name) => {
                &self
                    .authorities
                    .get(name)
                    .ok_or_else(|| {
                        ConfigError::new("authorities", format!("no authority {name:?}"))
                    })?
                    .client_listener_resource_name_template
            }
        };
        let service = if template.starts_with("xdstp:") {
            percent_encode_path(service)
        } else {
            service.to_owned()
        };
        Ok(template.replace("%s", &service))
    }

    /// The management servers for resources of `authority` (`None`: the
    /// old-style names, served by the top-level servers).
    pub fn servers_for(&self, authority: Option<&str>) -> &[XdsServer] {
        match authority.and_then(|a| self.authorities.get(a)) {
            Some(a) if !a.servers.is_empty() => &a.servers,
            _ => &self.servers,
        }
    }
}

/// Reads `path` whole, refusing files over [`MAX_BOOTSTRAP_BYTES`].
fn read_limited(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_BOOTSTRAP_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_BOOTSTRAP_BYTES {
        return Err(format!("larger than {MAX_BOOTSTRAP_BYTES} bytes"));
    }
    Ok(text)
}

fn servers(list: &[Value]) -> Result<Vec<XdsServer>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| server(v).map_err(|e| e.within(&format!("[{i}]"))))
        .collect()
}

fn server(v: &Value) -> Result<XdsServer, ConfigError> {
    let f = Fields::new(v, "")?;
    let uri = match f.string("server_uri")? {
        Some(uri) if !uri.is_empty() => uri.to_owned(),
        _ => return Err(ConfigError::new("server_uri", "is required")),
    };
    let Some(creds_list) = f.array("channel_creds")? else {
        return Err(ConfigError::new("channel_creds", "is required"));
    };
    let creds = channel_creds(creds_list).map_err(|e| e.within("channel_creds"))?;
    let features: Vec<String> = f
        .array("server_features")?
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let ignore_resource_deletion = features.iter().any(|f| f == "ignore_resource_deletion");
    Ok(XdsServer {
        uri,
        creds,
        features,
        ignore_resource_deletion,
    })
}

/// The first entry of a supported type; entries before it of types this client
/// does not know are skipped, as the format asks.
fn channel_creds(list: &[Value]) -> Result<ChannelCreds, ConfigError> {
    let mut seen = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let at = format!("[{i}]");
        let f = Fields::new(v, &at)?;
        let Some(kind) = f.string("type").map_err(|e| e.within(&at))? else {
            return Err(ConfigError::new("type", "is required").within(&at));
        };
        let config = f.object("config").map_err(|e| e.within(&at))?;
        match kind {
            "insecure" => return Ok(ChannelCreds::Insecure),
            "tls" => {
                return tls_creds(config)
                    .map(ChannelCreds::Tls)
                    .map_err(|e| e.within("config").within(&at));
            }
            other => seen.push(other.to_owned()),
        }
    }
    Err(ConfigError::new(
        "",
        format!("no supported type (this client supports insecure and tls; found {seen:?})"),
    ))
}

fn tls_creds(config: Option<&Map<String, Value>>) -> Result<TlsCreds, ConfigError> {
    let empty = Value::Object(Map::new());
    let object = config.map_or(empty, |m| Value::Object(m.clone()));
    let f = Fields::new(&object, "")?;
    let path = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
        Ok(f.string(name)?.filter(|p| !p.is_empty()).map(PathBuf::from))
    };
    let identity = match (path("certificate_file")?, path("private_key_file")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "private_key_file",
                "is required when certificate_file is set",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "certificate_file",
                "is required when private_key_file is set",
            ));
        }
    };
    Ok(TlsCreds {
        ca_certificate_file: path("ca_certificate_file")?,
        identity,
        refresh_interval: f
            .duration("refresh_interval")?
            .unwrap_or(DEFAULT_TLS_REFRESH),
    })
}

fn node(v: &Value) -> Result<Node, ConfigError> {
    let f = Fields::new(v, "")?;
    let text = |f: &Fields<'_>, name: &str| -> Result<String, ConfigError> {
        Ok(f.string(name)?.unwrap_or_default().to_owned())
    };
    let locality = match f.get("locality") {
        Some(v) => {
            let l = Fields::new(v, "locality")?;
            let read = |name: &str| text(&l, name).map_err(|e| e.within("locality"));
            Locality {
                region: read("region")?,
                zone: read("zone")?,
                sub_zone: read("sub_zone")?,
            }
        }
        None => Locality::default(),
    };
    Ok(Node {
        id: text(&f, "id")?,
        cluster: text(&f, "cluster")?,
        locality,
        metadata: f.object("metadata")?.cloned().unwrap_or_default(),
    })
}

fn certificate_provider(v: &Value) -> Result<CertificateProvider, ConfigError> {
    let f = Fields::new(v, "")?;
    let plugin_name = match f.string("plugin_name")? {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(ConfigError::new("plugin_name", "is required")),
    };
    Ok(CertificateProvider {
        plugin_name,
        config: f.object("config")?.cloned().unwrap_or_default(),
    })
}

fn authority(name: &str, v: &Value) -> Result<Authority, ConfigError> {
    let f = Fields::new(v, "")?;
    let prefix = format!("xdstp://{name}/");
    let template = match f.string("client_listener_resource_name_template")? {
        Some(t) if !t.starts_with(&prefix) => {
            return Err(ConfigError::new(
                "client_listener_resource_name_template",
                format!("must start with {prefix:?}"),
            ));
        }
        Some(t) => t.to_owned(),
        None => format!("{prefix}envoy.config.listener.v3.Listener/%s"),
    };
    let servers = match f.array("xds_servers")? {
        Some(list) => servers(list).map_err(|e| e.within("xds_servers"))?,
        None => Vec::new(),
    };
    Ok(Authority {
        client_listener_resource_name_template: template,
        servers,
    })
}

/// `text` with every byte that RFC 3986 section 3.3 does not allow in a path
/// percent-encoded (`/` stays: a service name may have segments).
fn percent_encode_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if allowed {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = r#"{"server_uri": "cp:1", "channel_creds": [{"type": "insecure"}]}"#;

    fn with_servers(rest: &str) -> String {
        format!(r#"{{"xds_servers": [{SERVER}]{rest}}}"#)
    }

    fn error_of(text: &str) -> String {
        Bootstrap::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_smallest_bootstrap_gets_every_default() {
        let b = Bootstrap::parse(&with_servers("")).unwrap();
        assert_eq!(b.servers.len(), 1);
        assert_eq!(b.servers[0].uri, "cp:1");
        assert_eq!(b.servers[0].creds, ChannelCreds::Insecure);
        assert!(!b.servers[0].ignore_resource_deletion);
        assert_eq!(b.node, Node::default());
        assert_eq!(b.client_default_listener_resource_name_template, "%s");
        assert_eq!(b.server_listener_resource_name_template, None);
        assert!(b.authorities.is_empty() && b.certificate_providers.is_empty());
        assert_eq!(b.listener_resource_name(None, "a.b:80").unwrap(), "a.b:80");
    }

    #[test]
    fn a_full_bootstrap_keeps_every_field() {
        let b = Bootstrap::parse(
            r#"{
            "xds_servers": [
                {"server_uri": "primary:443",
                 "channel_creds": [{"type": "tls", "config": {
                     "ca_certificate_file": "/ca.pem", "certificate_file": "/c.pem",
                     "private_key_file": "/k.pem", "refresh_interval": "30s"}}],
                 "server_features": ["xds_v3", 7, {"x": 1}, "ignore_resource_deletion"]},
                {"server_uri": "fallback:443", "channel_creds": [{"type": "insecure"}]}
            ],
            "node": {"id": "n1", "cluster": "c1",
                     "locality": {"region": "r", "zone": "z", "sub_zone": "s"},
                     "metadata": {"TRAFFICDIRECTOR_NETWORK": "default"}},
            "certificate_providers": {"default": {"plugin_name": "file_watcher",
                                                  "config": {"refresh_interval": "60s"}}},
            "server_listener_resource_name_template": "grpc/server?addr=%s",
            "client_default_listener_resource_name_template": "xdstp://td/envoy.config.listener.v3.Listener/%s",
            "authorities": {
                "td": {"xds_servers": [{"server_uri": "td:443", "channel_creds": [{"type": "insecure"}]}]},
                "": {"client_listener_resource_name_template": "xdstp:///listeners/%s"}
            },
            "some_future_field": {"ignored": true}
        }"#,
        )
        .unwrap();
        let primary = &b.servers[0];
        assert_eq!(
            primary.creds,
            ChannelCreds::Tls(TlsCreds {
                ca_certificate_file: Some("/ca.pem".into()),
                identity: Some(("/c.pem".into(), "/k.pem".into())),
                refresh_interval: Duration::from_secs(30),
            })
        );
        assert_eq!(primary.features, ["xds_v3", "ignore_resource_deletion"]);
        assert!(primary.ignore_resource_deletion);
        assert_eq!(b.servers[1].uri, "fallback:443");
        assert_eq!((b.node.id.as_str(), b.node.cluster.as_str()), ("n1", "c1"));
        assert_eq!(
            b.node.locality,
            Locality {
                region: "r".into(),
                zone: "z".into(),
                sub_zone: "s".into()
            }
        );
        assert_eq!(b.node.metadata["TRAFFICDIRECTOR_NETWORK"], "default");
        assert_eq!(
            b.certificate_providers["default"].plugin_name,
            "file_watcher"
        );
        assert_eq!(
            b.server_listener_resource_name_template.as_deref(),
            Some("grpc/server?addr=%s")
        );
        // The default template is an xdstp: name: the service is percent-encoded.
        assert_eq!(
            b.listener_resource_name(None, "svc/a b").unwrap(),
            "xdstp://td/envoy.config.listener.v3.Listener/svc/a%20b"
        );
        assert_eq!(
            b.listener_resource_name(Some(""), "x").unwrap(),
            "xdstp:///listeners/x"
        );
        // An authority with servers uses them; one without, the top-level ones.
        assert_eq!(b.servers_for(Some("td"))[0].uri, "td:443");
        assert_eq!(b.servers_for(Some(""))[0].uri, "primary:443");
        assert_eq!(b.servers_for(None)[0].uri, "primary:443");
    }

    #[test]
    fn the_first_supported_credentials_win_and_unknown_ones_are_skipped() {
        let creds = |list: &str| {
            Bootstrap::parse(&format!(
                r#"{{"xds_servers": [{{"server_uri": "cp", "channel_creds": {list}}}]}}"#
            ))
            .map(|b| b.servers[0].creds.clone())
        };
        assert_eq!(
            creds(r#"[{"type": "google_default"}, {"type": "insecure"}, {"type": "tls"}]"#),
            Ok(ChannelCreds::Insecure)
        );
        assert_eq!(
            creds(r#"[{"type": "tls"}]"#),
            Ok(ChannelCreds::Tls(TlsCreds {
                ca_certificate_file: None,
                identity: None,
                refresh_interval: DEFAULT_TLS_REFRESH,
            }))
        );
        let err = creds(r#"[{"type": "google_default"}, {"type": "alts"}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("xds_servers[0].channel_creds: no supported type")
                && err.contains("\"google_default\", \"alts\""),
            "{err}"
        );
        let err = creds("[]").unwrap_err().to_string();
        assert!(err.contains("no supported type"), "{err}");
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            ("[]", "must be an object, not an array"),
            ("{}", "xds_servers: at least one server is required"),
            (
                r#"{"xds_servers": []}"#,
                "xds_servers: at least one server is required",
            ),
            (
                r#"{"xds_servers": {}}"#,
                "xds_servers: must be an array, not an object",
            ),
            (
                r#"{"xds_servers": [7]}"#,
                "xds_servers[0]: must be an object, not a number",
            ),
            (
                r#"{"xds_servers": [{"channel_creds": [{"type": "insecure"}]}]}"#,
                "xds_servers[0].server_uri: is required",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "cp"}]}"#,
                "xds_servers[0].channel_creds: is required",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "cp", "channel_creds": [{}]}]}"#,
                "xds_servers[0].channel_creds[0].type: is required",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "cp", "channel_creds": [{"type": "tls", "config": {"certificate_file": "/c"}}]}]}"#,
                "xds_servers[0].channel_creds[0].config.private_key_file: is required when certificate_file is set",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "cp", "channel_creds": [{"type": "tls", "config": {"refresh_interval": "soon"}}]}]}"#,
                "xds_servers[0].channel_creds[0].config.refresh_interval",
            ),
            (
                &with_servers(r#", "node": {"id": 5}"#),
                "node.id: must be a string, not a number",
            ),
            (
                &with_servers(r#", "node": {"locality": {"zone": []}}"#),
                "node.locality.zone: must be a string, not an array",
            ),
            (
                &with_servers(r#", "certificate_providers": {"p": {}}"#),
                "certificate_providers.p.plugin_name: is required",
            ),
            (
                &with_servers(
                    r#", "authorities": {"a": {"client_listener_resource_name_template": "xdstp://b/%s"}}"#,
                ),
                "authorities.a.client_listener_resource_name_template: must start with \"xdstp://a/\"",
            ),
            (
                &with_servers(r#", "authorities": {"a": {"xds_servers": [{"server_uri": "x"}]}}"#),
                "authorities.a.xds_servers[0].channel_creds: is required",
            ),
            ("{", "invalid JSON"),
        ];
        for (text, want) in cases {
            let got = error_of(text);
            assert!(
                got.starts_with(want),
                "{text}\n  got:  {got}\n  want: {want}"
            );
        }
    }

    #[test]
    fn the_file_wins_over_the_inline_config_and_errors_say_where_from() {
        let dir = std::env::temp_dir().join(format!("lb-xds-bootstrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bootstrap.json");
        std::fs::write(
            &file,
            r#"{"xds_servers": [{"server_uri": "from-file", "channel_creds": [{"type": "insecure"}]}]}"#,
        )
        .unwrap();
        let inline = with_servers("").replace("cp:1", "from-env");
        let b = Bootstrap::from_sources(Some(file.clone().into()), Some(inline.clone().into()))
            .unwrap();
        assert_eq!(b.servers[0].uri, "from-file");
        // An empty file variable counts as unset.
        let b = Bootstrap::from_sources(Some("".into()), Some(inline.into())).unwrap();
        assert_eq!(b.servers[0].uri, "from-env");

        let err = Bootstrap::from_sources(None, None).unwrap_err();
        assert!(matches!(err, BootstrapError::NotConfigured), "{err}");
        let missing = dir.join("absent.json");
        let err = Bootstrap::from_sources(Some(missing.clone().into()), None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("xDS bootstrap file {}", missing.display())),
            "{err}"
        );
        let err = Bootstrap::from_sources(None, Some(r#"{"xds_servers": 1}"#.into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "xDS bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG: xds_servers: must be an array, not a number"
        );
        // A file far larger than any bootstrap is refused, not loaded.
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_BOOTSTRAP_BYTES as usize + 10]).unwrap();
        let err = Bootstrap::from_sources(Some(big.into()), None).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn xdstp_names_percent_encode_what_a_path_may_not_hold() {
        assert_eq!(percent_encode_path("a-b.c_d~e/f:g@h"), "a-b.c_d~e/f:g@h");
        assert_eq!(percent_encode_path("a b?c#d%"), "a%20b%3Fc%23d%25");
        assert_eq!(percent_encode_path("é"), "%C3%A9");
    }
}
