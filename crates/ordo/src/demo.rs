//! The first start: one client per role and a demo catalog.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ordo_auth::AuthService;
use ordo_http::Role;
use ordo_inventory::InventoryService;
use serde::{Deserialize, Serialize};

use crate::stores::Stores;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

/// `{"customer": {...}, "seller": {...}, "courier": {...}, "admin": {...}}`
pub type DemoCredentials = BTreeMap<String, Credentials>;

pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo-credentials.json")
}

/// On an empty store: creates the demo clients, writes their credentials
/// and seeds the catalog for the demo seller. `None` when the store
/// already had clients.
pub async fn first_start(
    stores: &Stores,
    auth: &AuthService,
    inventory: &InventoryService,
    data_dir: &Path,
) -> anyhow::Result<Option<DemoCredentials>> {
    if stores.clients.count().await? > 0 {
        return Ok(None);
    }
    let mut credentials = DemoCredentials::new();
    let mut seller = None;
    for role in Role::ALL {
        let created = auth.create_client(role, &format!("demo {role}")).await?;
        if role == Role::Seller {
            seller = Some(created.client.id);
        }
        credentials.insert(
            role.as_str().to_owned(),
            Credentials {
                client_id: created.client.id.to_string(),
                client_secret: created.secret,
            },
        );
    }
    let path = credentials_path(data_dir);
    write_private(&path, &serde_json::to_vec_pretty(&credentials)?)
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some(seller) = seller {
        let created = ordo_inventory::demo::seed(inventory, seller).await?;
        tracing::info!(products = created, "demo catalog created");
    }
    Ok(Some(credentials))
}

/// Writes a file only its owner reads, creating its directory (in
/// PostgreSQL mode nothing else creates the data directory).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_written_into_a_data_directory_that_does_not_exist_yet() {
        let root = tempfile::tempdir().unwrap();
        let path = credentials_path(&root.path().join("new").join("data"));
        write_private(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
