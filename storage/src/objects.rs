//! Named objects: small blobs other components keep next to the chunks (in the same object
//! store, so they share its durability and location), under a prefix no tenant directory can
//! take (tenant directories never contain a `.`). Storage knows nothing of their content.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{path::Path as ObjectPath, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

/// Prefix of every named object in the store.
const PREFIX: &str = "objects.d";

/// The store path of object `name` (`/`-separated segments, each non-empty, no `.`/`..`).
fn path(name: &str) -> Result<ObjectPath> {
    let valid = !name.is_empty()
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if !valid {
        return Err(Error::Internal(format!("invalid object name {name:?}")));
    }
    ObjectPath::parse(format!("{PREFIX}/{name}"))
        .map_err(|e| Error::Internal(format!("invalid object name {name:?}: {e}")))
}

fn os_err(name: &str, source: object_store::Error) -> Error {
    Error::ObjectStore {
        path: format!("{PREFIX}/{name}"),
        source,
    }
}

/// Write (replace) object `name`.
pub(crate) async fn put(store: &dyn ObjectStore, name: &str, body: Bytes) -> Result<()> {
    let p = path(name)?;
    store
        .put(&p, PutPayload::from(body))
        .await
        .map_err(|e| os_err(name, e))?;
    Ok(())
}

/// Read object `name`; `None` when it does not exist.
pub(crate) async fn get(store: &dyn ObjectStore, name: &str) -> Result<Option<Bytes>> {
    let p = path(name)?;
    match store.get(&p).await {
        Ok(got) => Ok(Some(got.bytes().await.map_err(|e| os_err(name, e))?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(os_err(name, e)),
    }
}

/// Delete object `name`; deleting a missing object is not an error (stores differ on
/// reporting it: S3 does not, so callers that need to know check with [`get`] first).
pub(crate) async fn delete(store: &dyn ObjectStore, name: &str) -> Result<()> {
    let p = path(name)?;
    match store.delete(&p).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(os_err(name, e)),
    }
}

/// Names of the objects under `prefix` (a name prefix ending at a segment boundary, or empty
/// for all), sorted.
pub(crate) async fn list(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>> {
    let trimmed = prefix.trim_matches('/');
    let p = if trimmed.is_empty() {
        ObjectPath::from(PREFIX)
    } else {
        path(trimmed)?
    };
    let metas: Vec<_> = store
        .list(Some(&p))
        .try_collect()
        .await
        .map_err(|e| os_err(prefix, e))?;
    let strip = format!("{PREFIX}/");
    let mut names: Vec<String> = metas
        .into_iter()
        .filter_map(|m| m.location.as_ref().strip_prefix(&strip).map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn objects_round_trip_list_and_delete() -> Result<()> {
        let store = InMemory::new();
        assert_eq!(get(&store, "a/b").await?, None);
        put(&store, "a/b", Bytes::from_static(b"one")).await?;
        put(&store, "a/c", Bytes::from_static(b"two")).await?;
        put(&store, "z", Bytes::from_static(b"three")).await?;
        assert_eq!(get(&store, "a/b").await?, Some(Bytes::from_static(b"one")));
        assert_eq!(list(&store, "a").await?, vec!["a/b", "a/c"]);
        assert_eq!(list(&store, "").await?, vec!["a/b", "a/c", "z"]);
        delete(&store, "a/b").await?;
        delete(&store, "a/b").await?;
        assert_eq!(list(&store, "a").await?, vec!["a/c"]);
        assert!(path("../x").is_err());
        assert!(path("").is_err());
        Ok(())
    }
}
