//! The member's identity: member id and cluster id, chosen once and kept in the data dir.
//!
//! Like etcd, a member id derives from the member's peer URLs and the cluster token, and the
//! cluster id from all initial members' ids and the token, so every member computes the same
//! ids for everyone from the same `--initial-cluster`. They are written to `member/identity` on first start; later starts
//! read them back, whatever the flags say, because clients and peers remember them.
//!
//! File format: text lines `member_id=<hex>`, `cluster_id=<hex>`, `name=<name>`.

use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::ServerConfig;
use crate::error::StartError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
}

impl Identity {
    /// Loads the identity from `member_dir`, or derives and stores it on first start.
    pub fn load_or_create(
        member_dir: &Path,
        config: &ServerConfig,
    ) -> Result<Identity, StartError> {
        let path = member_dir.join("identity");
        let io_error = |source| StartError::DataDir {
            path: path.display().to_string(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| {
                StartError::Config(format!("{} is not a Cairn identity file", path.display()))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let identity = derive(config);
                let tmp = member_dir.join("identity.tmp");
                let mut file = fs::File::create(&tmp).map_err(io_error)?;
                file.write_all(render(&identity).as_bytes())
                    .map_err(io_error)?;
                file.sync_all().map_err(io_error)?;
                fs::rename(&tmp, &path).map_err(io_error)?;
                fs::File::open(member_dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(io_error)?;
                Ok(identity)
            }
            Err(error) => Err(io_error(error)),
        }
    }
}

/// The id of the member advertising `peer_urls` in the cluster named by `token`.
pub fn member_id_for(peer_urls: &[String], token: &str) -> u64 {
    let mut peers = peer_urls.to_vec();
    peers.sort();
    hash_u64(&[peers.join(",").as_bytes(), token.as_bytes()])
}

fn derive(config: &ServerConfig) -> Identity {
    let token = &config.initial_cluster_token;
    let member_id = member_id_for(&config.initial_advertise_peer_urls, token);
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, url) in
        crate::config::parse_initial_cluster(&config.initial_cluster).unwrap_or_default()
    {
        by_name.entry(name).or_default().push(url);
    }
    let mut ids: Vec<u64> = by_name
        .values()
        .map(|urls| member_id_for(urls, token))
        .collect();
    ids.sort_unstable();
    let id_bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    let cluster_id = hash_u64(&[&id_bytes, token.as_bytes()]);
    Identity {
        member_id,
        cluster_id,
        name: config.name.clone(),
    }
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // etcd ids are non-zero; zero means "none" in its API.
    u64::from_be_bytes(first).max(1)
}

fn render(identity: &Identity) -> String {
    format!(
        "member_id={:x}\ncluster_id={:x}\nname={}\n",
        identity.member_id, identity.cluster_id, identity.name
    )
}

fn parse(text: &str) -> Option<Identity> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix('=')
                .map(str::to_string)
        })
    };
    Some(Identity {
        member_id: u64::from_str_radix(&field("member_id")?, 16).ok()?,
        cluster_id: u64::from_str_radix(&field("cluster_id")?, 16).ok()?,
        name: field("name")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_across_restarts_and_flag_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::default();
        let first = Identity::load_or_create(dir.path(), &config).unwrap();
        assert_ne!(first.member_id, 0);
        let mut changed = config.clone();
        changed.initial_cluster_token = "another".into();
        assert_eq!(
            Identity::load_or_create(dir.path(), &changed).unwrap(),
            first
        );
        assert_ne!(derive(&changed).member_id, first.member_id);
    }
}
