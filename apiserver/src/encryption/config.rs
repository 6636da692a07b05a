//! The `--encryption-provider-config` file: kube-apiserver's `EncryptionConfiguration`
//! (`apiserver.config.k8s.io/v1`, or the legacy kind `EncryptionConfig` in `v1`), read from
//! YAML or JSON strictly (an unknown field is an error naming its path) and validated with
//! kube-apiserver's rules and words, so that a file one accepts the other accepts too.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

/// The group and version of the current kind.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The kind.
pub const KIND: &str = "EncryptionConfiguration";
/// How long a KMS call may take when the configuration sets no `timeout` (Kubernetes' 3s).
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(3);

/// Standard base64 with padding, as Go's `base64.StdEncoding` reads it: bits after the last
/// byte need not be zero.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("error reading encryption provider configuration file {path:?}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is empty.
    #[error("encryption provider configuration file {0:?} is empty")]
    Empty(String),
    /// Not YAML or JSON of the expected shape.
    #[error("error decoding encryption provider configuration file {path:?}: {reason}")]
    Decode {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Decoded, but against the rules: every problem, in kube-apiserver's words.
    #[error("error while parsing file: {}", aggregate(.0))]
    Invalid(Vec<String>),
    /// Valid, but the providers cannot be built as configured.
    #[error("error while building transformers: {0}")]
    Build(String),
}

/// Several messages as Kubernetes' error aggregates print them: one alone, several in brackets.
fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncryptionConfiguration {
    /// The resource lists, earlier ones taking precedence.
    pub resources: Vec<ResourceConfiguration>,
}

/// Resources and the providers that store them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceConfiguration {
    /// Resources (`secrets`, `deployments.apps`, `*.apps`, `*.`, `*.*`).
    pub resources: Vec<String>,
    /// Providers: the first encrypts writes, all decrypt.
    pub providers: Vec<ProviderConfiguration>,
}

/// One provider; exactly one of the fields is set in a valid file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderConfiguration {
    /// `aesgcm`.
    pub aesgcm: Option<Vec<Key>>,
    /// `aescbc`.
    pub aescbc: Option<Vec<Key>>,
    /// `secretbox`.
    pub secretbox: Option<Vec<Key>>,
    /// `identity` (no encryption).
    pub identity: bool,
    /// `kms`.
    pub kms: Option<KmsConfiguration>,
}

/// A named key of an `aescbc`, `aesgcm` or `secretbox` provider.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// The name, written into every value it encrypts.
    pub name: String,
    /// The key, base64.
    pub secret: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Name: {}, Secret: [REDACTED]", self.name)
    }
}

impl Key {
    /// The key's bytes (valid once the configuration validated).
    pub fn bytes(&self) -> Vec<u8> {
        B64.decode(&self.secret).unwrap_or_default()
    }
}

/// A `kms` provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsConfiguration {
    /// `v1` or `v2` (Kubernetes' default is `v1`, which only kube-apiserver still serves).
    pub api_version: String,
    /// The provider's name, written into every value it encrypts.
    pub name: String,
    /// `cachesize` (KMS v1 only).
    pub cache_size: Option<i64>,
    /// `unix:///path/to/socket`.
    pub endpoint: String,
    /// The longest a call to the plugin may take; `Err` holds a zero or negative duration's
    /// text, which validation refuses.
    pub timeout: Result<Duration, String>,
}

impl KmsConfiguration {
    /// The socket path of a `unix://` endpoint.
    pub fn socket_path(&self) -> &str {
        self.endpoint.strip_prefix("unix://").unwrap_or("")
    }

    /// The call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout.clone().unwrap_or(DEFAULT_KMS_TIMEOUT)
    }
}

/// A group and resource as Kubernetes' `schema.ParseGroupResource` splits `resource.group`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupResource {
    /// The group (`""` for the core group, `*` for any).
    pub group: String,
    /// The resource (`*` for any).
    pub resource: String,
}

impl GroupResource {
    /// Splits at the first dot.
    pub fn parse(s: &str) -> Self {
        match s.split_once('.') {
            Some((resource, group)) => GroupResource {
                group: group.into(),
                resource: resource.into(),
            },
            None => GroupResource {
                group: String::new(),
                resource: s.into(),
            },
        }
    }

    /// `*.*`.
    pub fn is_any(&self) -> bool {
        self.group == "*" && self.resource == "*"
    }

    /// As the configuration writes it: `secrets`, `deployments.apps`, `*.` for the core group.
    pub fn yaml(&self) -> String {
        match (self.group.as_str(), self.resource.as_str()) {
            ("", "*") => "*.".into(),
            ("", r) => r.into(),
            (g, r) => format!("{r}.{g}"),
        }
    }
}

/// Reads and validates the file at `path`: the configuration and the hash of its bytes
/// (`sha256:HEX`, what an automatic reload compares).
pub fn load(path: &str, reload: bool) -> Result<(EncryptionConfiguration, String), ConfigError> {
    let data = std::fs::read(path).map_err(|e| ConfigError::Read {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let hash = content_hash(&data);
    Ok((parse(path, &data, reload)?, hash))
}

/// `sha256:HEX` of a file's bytes.
pub fn content_hash(data: &[u8]) -> String {
    use sha2::Digest;
    let mut s = String::from("sha256:");
    for b in sha2::Sha256::digest(data) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes and validates a configuration's bytes (`path` names it in errors).
pub fn parse(
    path: &str,
    data: &[u8],
    reload: bool,
) -> Result<EncryptionConfiguration, ConfigError> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::Empty(path.into()));
    }
    let decode_err = |reason: String| ConfigError::Decode {
        path: path.into(),
        reason,
    };
    let text = std::str::from_utf8(data).map_err(|e| decode_err(e.to_string()))?;
    // JSON is YAML: one parser reads both.
    let doc: Value = serde_norway::from_str(text).map_err(|e| decode_err(e.to_string()))?;
    let mut d = Decoder::default();
    let config = d.config(&doc).map_err(decode_err)?;
    if !d.unknown.is_empty() {
        let list: Vec<String> = d
            .unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        return Err(decode_err(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    let errs = validate(&config, reload);
    if !errs.is_empty() {
        return Err(ConfigError::Invalid(errs));
    }
    Ok(config)
}

/// Reads the document into the types, noting unknown fields by path.
#[derive(Default)]
struct Decoder {
    unknown: Vec<String>,
}

type Decoded<T> = Result<T, String>;

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

impl Decoder {
    fn object<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        known: &[&str],
    ) -> Decoded<&'a Map<String, Value>> {
        let o = v
            .as_object()
            .ok_or_else(|| format!("{}: expected an object", display_path(path)))?;
        for k in o.keys() {
            if !known.contains(&k.as_str()) {
                self.unknown.push(join(path, k));
            }
        }
        Ok(o)
    }

    fn config(&mut self, doc: &Value) -> Decoded<EncryptionConfiguration> {
        let o = self.object(doc, "", &["kind", "apiVersion", "resources"])?;
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
        let version = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            return Err("Object 'Kind' is missing".into());
        }
        let known = matches!(
            (version, kind),
            (API_VERSION, KIND) | ("v1", "EncryptionConfig")
        );
        if !known {
            return Err(format!(
                "no kind \"{kind}\" is registered for version \"{version}\""
            ));
        }
        let mut out = EncryptionConfiguration::default();
        for (i, r) in self
            .list(o.get("resources"), "resources")?
            .iter()
            .enumerate()
        {
            let path = format!("resources[{i}]");
            let ro = self.object(r, &path, &["resources", "providers"])?;
            let resources = self
                .list(ro.get("resources"), &join(&path, "resources"))?
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    s.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("{path}.resources[{j}]: expected a string"))
                })
                .collect::<Decoded<Vec<_>>>()?;
            let mut providers = Vec::new();
            for (j, p) in self
                .list(ro.get("providers"), &join(&path, "providers"))?
                .iter()
                .enumerate()
            {
                providers.push(self.provider(p, &format!("{path}.providers[{j}]"))?);
            }
            out.resources.push(ResourceConfiguration {
                resources,
                providers,
            });
        }
        Ok(out)
    }

    fn list<'a>(&mut self, v: Option<&'a Value>, path: &str) -> Decoded<&'a [Value]> {
        match v {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(format!("{path}: expected a list")),
        }
    }

    fn string(&mut self, o: &Map<String, Value>, field: &str, path: &str) -> Decoded<String> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{}: expected a string", join(path, field))),
        }
    }

    fn provider(&mut self, v: &Value, path: &str) -> Decoded<ProviderConfiguration> {
        let o = self.object(
            v,
            path,
            &["aesgcm", "aescbc", "secretbox", "identity", "kms"],
        )?;
        let mut p = ProviderConfiguration::default();
        for (field, slot) in [
            ("aesgcm", &mut p.aesgcm),
            ("aescbc", &mut p.aescbc),
            ("secretbox", &mut p.secretbox),
        ] {
            if let Some(v) = o.get(field).filter(|v| !v.is_null()) {
                *slot = Some(self.keys(v, &join(path, field))?);
            }
        }
        if let Some(v) = o.get("identity").filter(|v| !v.is_null()) {
            self.object(v, &join(path, "identity"), &[])?;
            p.identity = true;
        }
        if let Some(v) = o.get("kms").filter(|v| !v.is_null()) {
            p.kms = Some(self.kms(v, &join(path, "kms"))?);
        }
        Ok(p)
    }

    fn keys(&mut self, v: &Value, path: &str) -> Decoded<Vec<Key>> {
        let o = self.object(v, path, &["keys"])?;
        let mut keys = Vec::new();
        for (i, k) in self
            .list(o.get("keys"), &join(path, "keys"))?
            .iter()
            .enumerate()
        {
            let kp = format!("{path}.keys[{i}]");
            let ko = self.object(k, &kp, &["name", "secret"])?;
            keys.push(Key {
                name: self.string(ko, "name", &kp)?,
                secret: self.string(ko, "secret", &kp)?,
            });
        }
        Ok(keys)
    }

    fn kms(&mut self, v: &Value, path: &str) -> Decoded<KmsConfiguration> {
        let o = self.object(
            v,
            path,
            &["apiVersion", "name", "cachesize", "endpoint", "timeout"],
        )?;
        let cache_size = match o.get("cachesize") {
            None | Some(Value::Null) => None,
            Some(n) => Some(
                n.as_i64()
                    .ok_or_else(|| format!("{path}.cachesize: expected an integer"))?,
            ),
        };
        let timeout = match o.get("timeout") {
            None | Some(Value::Null) => Ok(DEFAULT_KMS_TIMEOUT),
            Some(Value::String(s)) => {
                parse_timeout(s).ok_or_else(|| format!("{path}.timeout: invalid duration {s:?}"))?
            }
            Some(_) => {
                return Err(format!(
                    "{path}.timeout: expected a duration such as \"3s\""
                ))
            }
        };
        let mut api_version = self.string(o, "apiVersion", path)?;
        if api_version.is_empty() {
            // Kubernetes' default.
            api_version = "v1".into();
        }
        Ok(KmsConfiguration {
            api_version,
            name: self.string(o, "name", path)?,
            cache_size,
            endpoint: self.string(o, "endpoint", path)?,
            timeout,
        })
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the document"
    } else {
        path
    }
}

/// A Go duration; `Err(text)` for a zero or negative one (which validation refuses), `None`
/// for text that is no duration.
fn parse_timeout(s: &str) -> Option<Result<Duration, String>> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix('-') {
        skiff_rules::duration::parse(rest).ok()?;
        return Some(Err(t.to_string()));
    }
    let d = skiff_rules::duration::parse(t).ok()?;
    if d.is_zero() {
        return Some(Err("0s".into()));
    }
    Some(Ok(d))
}

// kube-apiserver's messages (k8s.io/apiserver/pkg/apis/apiserver/validation).
const MORE_THAN_ONE: &str = "more than one provider specified in a single element, should split into different list elements";
const NO_PROVIDER: &str = "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity";
const BASE64: &str = "secrets must be base64 encoded";
const EVENTS_GROUP: &str = "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file";
const EXTENSIONS_GROUP: &str =
    "'extensions' group has been removed and cannot be used for encryption";
const STAR_RESOURCE: &str =
    "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources";
const OVERLAP: &str = "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked";
const NON_REST: &str = "resources which do not have REST API/s cannot be encrypted";
const CAPITALS: &str = "resource name should not contain capital letters";
const ACROSS_GROUPS: &str = "encrypting the same resource across groups is not supported";
const DUPLICATE: &str = "the same resource cannot be specified multiple times";

const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];

/// A field error as Kubernetes prints it: `path: Invalid value: VALUE: detail`.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value}: {detail}")
}

fn required(path: &str, detail: &str) -> String {
    format!("{path}: Required value: {detail}")
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// A list of strings as Go's `%#v` prints a `[]string`.
fn go_strings(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| quoted(s)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// Every problem of a decoded configuration, in kube-apiserver's words; empty when valid.
/// `reload` is whether the file is read with automatic reload on (KMS names must then be
/// unique across every version).
pub fn validate(c: &EncryptionConfiguration, reload: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if c.resources.is_empty() {
        errs.push(required("resources", "at least one resources is required"));
        return errs;
    }
    let mut kms_names: Vec<String> = Vec::new();
    for (i, conf) in c.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if conf.resources.is_empty() {
            errs.push(required(&r, &format!("at least one {r} is required")));
        }
        overlap(&conf.resources, &r, &mut errs);
        resource_names(&conf.resources, &r, &mut errs);
        if conf.providers.is_empty() {
            errs.push(required(&p, &format!("at least one {p} is required")));
        }
        for (j, provider) in conf.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            single_provider(provider, &path, &mut errs);
            if let Some(kms) = &provider.kms {
                validate_kms(kms, &format!("{path}.kms"), &kms_names, reload, &mut errs);
                kms_names.push(kms.name.clone());
            } else if let Some(keys) = &provider.aesgcm {
                validate_keys(
                    keys,
                    &format!("{path}.aesgcm.keys"),
                    AES_KEY_SIZES,
                    &mut errs,
                );
            } else if let Some(keys) = &provider.aescbc {
                validate_keys(
                    keys,
                    &format!("{path}.aescbc.keys"),
                    AES_KEY_SIZES,
                    &mut errs,
                );
            } else if let Some(keys) = &provider.secretbox {
                validate_keys(
                    keys,
                    &format!("{path}.secretbox.keys"),
                    SECRETBOX_KEY_SIZES,
                    &mut errs,
                );
            }
        }
    }
    errs
}

fn overlap(resources: &[String], path: &str, errs: &mut Vec<String>) {
    if resources.len() < 2 {
        return;
    }
    let r: Vec<GroupResource> = resources.iter().map(|s| GroupResource::parse(s)).collect();
    let (mut has_overlap, mut has_duplicate) = (false, false);
    for (i, r1) in r.iter().enumerate() {
        for (j, r2) in r.iter().enumerate() {
            if i == j {
                continue;
            }
            if r1 == r2 && !has_duplicate {
                has_duplicate = true;
                continue;
            }
            if has_overlap {
                continue;
            }
            if r1.is_any() {
                has_overlap = true;
                continue;
            }
            if r1.group != r2.group {
                continue;
            }
            if r1.resource == "*" || r2.resource == "*" {
                has_overlap = true;
            }
        }
    }
    if has_duplicate {
        errs.push(invalid(path, &go_strings(resources), DUPLICATE));
    }
    if has_overlap {
        errs.push(invalid(path, &go_strings(resources), OVERLAP));
    }
}

fn resource_names(resources: &[String], path: &str, errs: &mut Vec<String>) {
    for (j, res) in resources.iter().enumerate() {
        let jj = format!("{path}[{j}]");
        let gr = GroupResource::parse(res);
        let why = if res.to_lowercase() != *res {
            CAPITALS
        } else if res == "*" {
            STAR_RESOURCE
        } else if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            NON_REST
        } else if gr.group == "events.k8s.io" {
            EVENTS_GROUP
        } else if gr.group == "extensions" {
            EXTENSIONS_GROUP
        } else if gr.group == "*" && gr.resource != "*" {
            ACROSS_GROUPS
        } else {
            continue;
        };
        errs.push(invalid(&jj, &quoted(res), why));
    }
}

fn single_provider(p: &ProviderConfiguration, path: &str, errs: &mut Vec<String>) {
    let found = [
        p.kms.is_some(),
        p.aesgcm.is_some(),
        p.aescbc.is_some(),
        p.secretbox.is_some(),
        p.identity,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let names = || {
        let mut n = Vec::new();
        for (set, name) in [
            (p.aesgcm.is_some(), "aesgcm"),
            (p.aescbc.is_some(), "aescbc"),
            (p.secretbox.is_some(), "secretbox"),
            (p.identity, "identity"),
            (p.kms.is_some(), "kms"),
        ] {
            if set {
                n.push(name);
            }
        }
        format!("{{{}}}", n.join(", "))
    };
    if found == 0 {
        errs.push(invalid(path, "{}", NO_PROVIDER));
    } else if found > 1 {
        errs.push(invalid(path, &names(), MORE_THAN_ONE));
    }
}

fn validate_keys(keys: &[Key], path: &str, sizes: &[usize], errs: &mut Vec<String>) {
    if keys.is_empty() {
        errs.push(required(path, "at least one keys is required"));
        return;
    }
    for (i, key) in keys.iter().enumerate() {
        let kp = format!("{path}[{i}]");
        if key.name.is_empty() {
            errs.push(required(
                &format!("{kp}.name"),
                "name is a mandatory field for a key",
            ));
        }
        if key.secret.is_empty() {
            errs.push(required(
                &format!("{kp}.secret"),
                "secret is a mandatory field for a key",
            ));
            continue;
        }
        let Ok(secret) = B64.decode(&key.secret) else {
            errs.push(invalid(&format!("{kp}.secret"), "\"REDACTED\"", BASE64));
            continue;
        };
        if !sizes.contains(&secret.len()) {
            let want: Vec<String> = sizes.iter().map(usize::to_string).collect();
            errs.push(invalid(
                &format!("{kp}.secret"),
                "\"REDACTED\"",
                &format!(
                    "secret is not of the expected length, got {}, expected one of [{}]",
                    secret.len(),
                    want.join(" ")
                ),
            ));
        }
    }
}

fn validate_kms(
    c: &KmsConfiguration,
    path: &str,
    names: &[String],
    reload: bool,
    errs: &mut Vec<String>,
) {
    let name_path = format!("{path}.name");
    if c.name.is_empty() {
        errs.push(required(
            &name_path,
            "name is a mandatory field for a provider",
        ));
    }
    if c.api_version != "v1" && c.name.contains(':') {
        errs.push(invalid(
            &name_path,
            &quoted(&c.name),
            &format!("invalid KMS provider name {}, must not contain ':'", c.name),
        ));
    }
    if (reload || c.api_version != "v1") && names.contains(&c.name) {
        errs.push(invalid(
            &name_path,
            &quoted(&c.name),
            &format!(
                "duplicate KMS provider name {}, names must be unique",
                c.name
            ),
        ));
    }
    if let Err(text) = &c.timeout {
        errs.push(invalid(
            &format!("{path}.timeout"),
            text,
            "timeout should be a positive value",
        ));
    }
    let endpoint = format!("{path}.endpoint");
    if c.endpoint.is_empty() {
        errs.push(invalid(
            &endpoint,
            "\"\"",
            "endpoint is a mandatory field for a kms",
        ));
    } else {
        let scheme = c.endpoint.split_once("://").map(|(s, _)| s).unwrap_or("");
        if scheme != "unix" {
            errs.push(invalid(
                &endpoint,
                &quoted(&c.endpoint),
                &format!("unsupported scheme {scheme:?} for KMS provider, only unix is supported"),
            ));
        } else if c.socket_path().is_empty() {
            errs.push(invalid(
                &endpoint,
                &quoted(&c.endpoint),
                "invalid endpoint for kms provider, error: no socket path",
            ));
        }
    }
    let cache = format!("{path}.cachesize");
    match c.cache_size {
        Some(n) if c.api_version != "v1" => errs.push(invalid(
            &cache,
            &n.to_string(),
            "cachesize is not supported in v2",
        )),
        Some(0) if c.api_version == "v1" => errs.push(invalid(
            &cache,
            "0",
            "cachesize should be a positive value, or negative to disable",
        )),
        _ => {}
    }
    if c.api_version != "v1" && c.api_version != "v2" {
        errs.push(invalid(
            &format!("{path}.apiVersion"),
            &quoted(&c.api_version),
            "unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<EncryptionConfiguration, ConfigError> {
        parse("enc.yaml", text.as_bytes(), false)
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    const HEAD: &str = "kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\n";

    #[test]
    fn kubernetes_documented_configuration_parses() {
        let c = p(&format!(
            "{HEAD}resources:
- resources: [secrets, configmaps]
  providers:
  - kms:
      apiVersion: v2
      name: skiff
      endpoint: unix:///run/skiff/kms.sock
      timeout: 5s
  - aescbc:
      keys:
      - name: key1
        secret: {}
  - identity: {{}}
- resources: ['*.apps']
  providers:
  - secretbox:
      keys:
      - name: k
        secret: {}
",
            "a".repeat(43) + "=",
            "b".repeat(43) + "=",
        ))
        .unwrap();
        assert_eq!(c.resources.len(), 2);
        let kms = c.resources[0].providers[0].kms.as_ref().unwrap();
        assert_eq!(kms.socket_path(), "/run/skiff/kms.sock");
        assert_eq!(kms.timeout(), Duration::from_secs(5));
        assert!(c.resources[0].providers[2].identity);
        assert_eq!(
            c.resources[0].providers[1].aescbc.as_ref().unwrap()[0]
                .bytes()
                .len(),
            32
        );
    }

    #[test]
    fn json_and_the_legacy_kind_are_accepted() {
        let json = r#"{"kind":"EncryptionConfig","apiVersion":"v1","resources":[{"resources":["secrets"],"providers":[{"identity":{}}]}]}"#;
        assert!(p(json).is_ok());
        assert!(err("kind: Nope\napiVersion: v1\nresources: []")
            .contains("no kind \"Nope\" is registered"));
        assert!(err("apiVersion: v1\nresources: []").contains("Object 'Kind' is missing"));
    }

    #[test]
    fn unknown_fields_are_named_by_path() {
        let e = err(&format!(
            "{HEAD}resources:
- resources: [secrets]
  providers:
  - kms:
      apiVersion: v2
      name: a
      endpoint: unix:///x.sock
      pandas: are the best
"
        ));
        assert!(
            e.contains(
                r#"strict decoding error: unknown field "resources[0].providers[0].kms.pandas""#
            ),
            "{e}"
        );
    }

    #[test]
    fn empty_and_unreadable_files_are_refused() {
        assert_eq!(
            p("  \n").unwrap_err().to_string(),
            "encryption provider configuration file \"enc.yaml\" is empty"
        );
        assert!(load("/nonexistent/enc.yaml", false)
            .unwrap_err()
            .to_string()
            .starts_with("error reading encryption provider configuration file"));
        assert!(err("{{{").starts_with("error decoding encryption provider configuration file"));
    }

    #[test]
    fn key_lengths_and_encoding_are_checked_as_kube_does() {
        let e = err(&format!(
            "{HEAD}resources:
- resources: [secrets]
  providers:
  - aesgcm:
      keys:
      - name: short
        secret: c2VjcmV0
      - name: ''
        secret: '!!!'
  - secretbox:
      keys:
      - name: k
        secret: {}
",
            "a".repeat(22) + "=="
        ));
        assert!(e.contains(r#"resources[0].providers[0].aesgcm.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 6, expected one of [16 24 32]"#), "{e}");
        assert!(e.contains("resources[0].providers[0].aesgcm.keys[1].name: Required value: name is a mandatory field for a key"), "{e}");
        assert!(e.contains(r#"resources[0].providers[0].aesgcm.keys[1].secret: Invalid value: "REDACTED": secrets must be base64 encoded"#), "{e}");
        assert!(e.contains("resources[0].providers[1].secretbox.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 16, expected one of [32]"), "{e}");
        assert!(e.starts_with("error while parsing file: ["), "{e}");
    }

    #[test]
    fn kms_fields_are_checked() {
        let e = err(&format!(
            "{HEAD}resources:
- resources: [secrets]
  providers:
  - kms:
      apiVersion: v3
      name: 'a:b'
      endpoint: tcp://127.0.0.1:1
      timeout: 0s
  - kms:
      apiVersion: v2
      name: 'a:b'
      cachesize: 10
"
        ));
        for want in [
            r#"resources[0].providers[0].kms.apiVersion: Invalid value: "v3": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported"#,
            r#"resources[0].providers[0].kms.name: Invalid value: "a:b": invalid KMS provider name a:b, must not contain ':'"#,
            r#"resources[0].providers[0].kms.endpoint: Invalid value: "tcp://127.0.0.1:1": unsupported scheme "tcp" for KMS provider, only unix is supported"#,
            "resources[0].providers[0].kms.timeout: Invalid value: 0s: timeout should be a positive value",
            r#"resources[0].providers[1].kms.name: Invalid value: "a:b": duplicate KMS provider name a:b, names must be unique"#,
            r#"resources[0].providers[1].kms.endpoint: Invalid value: "": endpoint is a mandatory field for a kms"#,
            "resources[0].providers[1].kms.cachesize: Invalid value: 10: cachesize is not supported in v2",
        ] {
            assert!(e.contains(want), "missing {want}\nin {e}");
        }
    }

    #[test]
    fn resources_are_checked() {
        let e = err(&format!(
            "{HEAD}resources:
- resources: [secrets, secrets]
  providers: [{{identity: {{}}}}]
- resources: ['*.*', configmaps]
  providers: [{{identity: {{}}}}]
- resources: ['*', Secrets, serviceipallocations, '*.events.k8s.io', 'deployments.extensions', 'pods.*']
  providers: [{{identity: {{}}}}]
- resources: []
  providers: []
"
        ));
        for want in [
            r#"resources[0].resources: Invalid value: []string{"secrets", "secrets"}: the same resource cannot be specified multiple times"#,
            r#"resources[1].resources: Invalid value: []string{"*.*", "configmaps"}: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"#,
            r#"resources[2].resources[0]: Invalid value: "*": use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"#,
            r#"resources[2].resources[1]: Invalid value: "Secrets": resource name should not contain capital letters"#,
            r#"resources[2].resources[2]: Invalid value: "serviceipallocations": resources which do not have REST API/s cannot be encrypted"#,
            r#"resources[2].resources[3]: Invalid value: "*.events.k8s.io": '*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"#,
            r#"resources[2].resources[4]: Invalid value: "deployments.extensions": 'extensions' group has been removed and cannot be used for encryption"#,
            r#"resources[2].resources[5]: Invalid value: "pods.*": encrypting the same resource across groups is not supported"#,
            "resources[3].resources: Required value: at least one resources[3].resources is required",
            "resources[3].providers: Required value: at least one resources[3].providers is required",
        ] {
            assert!(e.contains(want), "missing {want}\nin {e}");
        }
        assert_eq!(
            err(&format!("{HEAD}resources: []")),
            "error while parsing file: resources: Required value: at least one resources is required"
        );
    }

    #[test]
    fn one_provider_per_element() {
        let e = err(&format!(
            "{HEAD}resources:
- resources: [secrets]
  providers:
  - identity: {{}}
    aescbc: {{keys: [{{name: k, secret: {}}}]}}
  - {{}}
",
            "a".repeat(43) + "="
        ));
        assert!(e.contains("resources[0].providers[0]: Invalid value: {aescbc, identity}: more than one provider specified in a single element, should split into different list elements"), "{e}");
        assert!(e.contains("resources[0].providers[1]: Invalid value: {}: provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity"), "{e}");
    }

    #[test]
    fn kms_names_must_be_unique_across_versions_only_when_reloading() {
        let text = format!(
            "{HEAD}resources:
- resources: [secrets]
  providers:
  - kms: {{name: a, endpoint: 'unix:///a.sock', cachesize: 5}}
  - kms: {{name: a, endpoint: 'unix:///a.sock', cachesize: 5}}
"
        );
        assert!(parse("f", text.as_bytes(), false).is_ok());
        assert!(parse("f", text.as_bytes(), true)
            .unwrap_err()
            .to_string()
            .contains("duplicate KMS provider name a"));
    }

    #[test]
    fn group_resources_split_at_the_first_dot() {
        let gr = GroupResource::parse("deployments.apps");
        assert_eq!(
            (gr.group.as_str(), gr.resource.as_str()),
            ("apps", "deployments")
        );
        assert_eq!(GroupResource::parse("*.").yaml(), "*.");
        assert!(GroupResource::parse("*.*").is_any());
        assert_eq!(GroupResource::parse("secrets").group, "");
    }

    #[test]
    fn the_hash_is_of_the_bytes() {
        assert_eq!(
            content_hash(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
