//! Where rule groups live, per tenant and namespace:
//!
//! ```text
//!  API groups  ─► chunks' object store, named objects  rules/<tenant>/<namespace>/<group>
//!                 (one YAML group each; names hex-escaped, see `escape`), read-write
//!  local files ─► <ruler.storage.local.directory>/<tenant>/<file>   (Loki's local store:
//!                 the file name is the namespace, `groups:` inside), read-only
//! ```
//!
//! A group stored through the API takes the place of a local group with the same namespace
//! and name. Everything is re-read on each call: rule sets are small, and the object store
//! then is the single source of truth for every node sharing it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use tovlog_storage::Storage;

use super::group::{self, RuleGroup};

/// Prefix of the API-managed groups among the storage's named objects.
const RULES_PREFIX: &str = "rules";

/// Groups of one tenant by namespace, in name order within a namespace.
pub type Namespaces = BTreeMap<String, Vec<RuleGroup>>;

/// The rule stores of the ruler.
#[derive(Clone)]
pub struct RuleStore {
    storage: Arc<Storage>,
    local_dir: Option<PathBuf>,
}

impl std::fmt::Debug for RuleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleStore")
            .field("local_dir", &self.local_dir)
            .finish_non_exhaustive()
    }
}

/// Escape one name segment so any tenant, namespace or group name is a safe object-path
/// segment: ASCII letters, digits and `-` stay, every other byte becomes `_XX` (hex).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Reverse of [`escape`]; `None` for a segment `escape` cannot have produced.
pub fn unescape(s: &str) -> Option<String> {
    if s == "_" {
        return Some(String::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RuleStore {
    /// Stores over `storage`'s object store and, when set, the local directory.
    pub fn new(storage: Arc<Storage>, local_dir: Option<PathBuf>) -> RuleStore {
        RuleStore {
            storage,
            local_dir: local_dir.filter(|d| !d.as_os_str().is_empty()),
        }
    }

    fn object_name(tenant: &str, namespace: &str, group: &str) -> String {
        format!(
            "{RULES_PREFIX}/{}/{}/{}",
            escape(tenant),
            escape(namespace),
            escape(group)
        )
    }

    /// Every tenant with rules in either store.
    pub async fn tenants(&self) -> anyhow::Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for name in self.storage.list_objects(RULES_PREFIX).await? {
            if let Some(t) = name.split('/').nth(1).and_then(unescape) {
                out.push(t);
            }
        }
        if let Some(dir) = &self.local_dir {
            if let Ok(mut rd) = tokio::fs::read_dir(dir).await {
                while let Ok(Some(e)) = rd.next_entry().await {
                    if e.file_type().await.is_ok_and(|t| t.is_dir()) {
                        if let Some(name) = e.file_name().to_str() {
                            out.push(name.to_string());
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The API-managed groups of `tenant`.
    async fn api_groups(&self, tenant: &str) -> anyhow::Result<Namespaces> {
        let prefix = format!("{RULES_PREFIX}/{}", escape(tenant));
        let mut out = Namespaces::new();
        for name in self.storage.list_objects(&prefix).await? {
            let Some(ns) = name.split('/').nth(2).and_then(unescape) else {
                continue;
            };
            let Some(body) = self.storage.get_object(&name).await? else {
                continue;
            };
            match group::parse_group(&body) {
                Ok(g) => out.entry(ns).or_default().push(g),
                Err(e) => {
                    tracing::warn!(object = %name, error = %e, "skipping unreadable rule group")
                }
            }
        }
        Ok(out)
    }

    /// The local directory's groups of `tenant` (files that do not load are logged and
    /// skipped, as a bad file must not stop the other tenants' rules).
    async fn local_groups(&self, tenant: &str) -> Namespaces {
        let mut out = Namespaces::new();
        let Some(dir) = &self.local_dir else {
            return out;
        };
        // A tenant name that is not a plain directory name never maps to a directory.
        if tenant.is_empty() || tenant.contains(['/', '\\']) || tenant == "." || tenant == ".." {
            return out;
        }
        let tdir = dir.join(tenant);
        let Ok(mut rd) = tokio::fs::read_dir(&tdir).await else {
            return out;
        };
        let mut files = Vec::new();
        while let Ok(Some(e)) = rd.next_entry().await {
            if e.file_type().await.is_ok_and(|t| t.is_file()) {
                files.push(e.path());
            }
        }
        files.sort();
        for path in files {
            let Some(ns) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            match load_file(&path).await {
                Ok(groups) => {
                    out.insert(ns, groups);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping rule file")
                }
            }
        }
        out
    }

    /// All groups of `tenant`, local ones first replaced by API ones of the same
    /// namespace and name.
    pub async fn list(&self, tenant: &str) -> anyhow::Result<Namespaces> {
        let mut out = self.local_groups(tenant).await;
        for (ns, groups) in self.api_groups(tenant).await? {
            let slot = out.entry(ns).or_default();
            for g in groups {
                match slot.iter_mut().find(|x| x.name == g.name) {
                    Some(existing) => *existing = g,
                    None => slot.push(g),
                }
            }
        }
        for groups in out.values_mut() {
            groups.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out.retain(|_, g| !g.is_empty());
        Ok(out)
    }

    /// One group.
    pub async fn get(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<RuleGroup>> {
        let ns = self.list(tenant).await?;
        Ok(ns
            .get(namespace)
            .and_then(|gs| gs.iter().find(|g| g.name == name))
            .cloned())
    }

    /// Store (create or replace) a group through the API.
    pub async fn set(&self, tenant: &str, namespace: &str, g: &RuleGroup) -> anyhow::Result<()> {
        let body = group::group_yaml(g).map_err(anyhow::Error::msg)?;
        self.storage
            .put_object(
                &Self::object_name(tenant, namespace, &g.name),
                bytes::Bytes::from(body),
            )
            .await?;
        Ok(())
    }

    /// Delete an API group; false when there was none.
    pub async fn delete(&self, tenant: &str, namespace: &str, name: &str) -> anyhow::Result<bool> {
        let object = Self::object_name(tenant, namespace, name);
        if self.storage.get_object(&object).await?.is_none() {
            return Ok(false);
        }
        self.storage.delete_object(&object).await?;
        Ok(true)
    }

    /// Delete every API group of a namespace; false when there was none.
    pub async fn delete_namespace(&self, tenant: &str, namespace: &str) -> anyhow::Result<bool> {
        let prefix = format!("{RULES_PREFIX}/{}/{}", escape(tenant), escape(namespace));
        let names = self.storage.list_objects(&prefix).await?;
        let any = !names.is_empty();
        for name in names {
            self.storage.delete_object(&name).await?;
        }
        Ok(any)
    }
}

async fn load_file(path: &Path) -> anyhow::Result<Vec<RuleGroup>> {
    let body = tokio::fs::read(path).await?;
    let file = group::parse_file(&body).map_err(anyhow::Error::msg)?;
    Ok(file.groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_is_path_safe() {
        for s in ["fake", "a/b", "..", "", "ns.yaml", "é_x", "_"] {
            let e = escape(s);
            assert!(e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(unescape(&e).as_deref(), Some(s), "{s}");
        }
        assert_ne!(escape("a/b"), escape("a_2Fb"));
    }
}
