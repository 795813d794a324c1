//! API keys of health centres and operators: stored only as SHA-256 digests in the side
//! store (`centres/<id>`, `operators/<id>`). A key reads `htr_<c|o><id>_<64 hex>`; the
//! clear key is shown once, when it is made.

use hotaru_log::{LogError, SideStore};
use hotaru_protocol::random::RandomSource;
use serde::{Deserialize, Serialize};

/// Whose key it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Centre,
    Operator,
}

impl Role {
    fn ns(self) -> &'static str {
        match self {
            Role::Centre => "centres",
            Role::Operator => "operators",
        }
    }

    fn letter(self) -> char {
        match self {
            Role::Centre => 'c',
            Role::Operator => 'o',
        }
    }
}

/// One account as stored: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: u32,
    /// The organisation's label (a health centre, an operator team), not a person's name.
    pub label: String,
    pub key_sha256: String,
    pub revoked: bool,
}

fn digest(key: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()))
}

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(e.to_string())
}

pub async fn list<S: SideStore>(store: &S, role: Role) -> Result<Vec<Account>, LogError> {
    let mut out = Vec::new();
    for k in store.side_keys(role.ns()).await? {
        if let Some(v) = store.side_get(role.ns(), &k).await? {
            out.push(serde_json::from_slice(&v).map_err(backend)?);
        }
    }
    out.sort_by_key(|a: &Account| a.id);
    Ok(out)
}

/// Creates an account; returns it and its key, in the clear, once.
pub async fn add<S: SideStore>(
    store: &S,
    role: Role,
    label: &str,
    random: &dyn RandomSource,
) -> Result<(Account, String), LogError> {
    if label.trim().is_empty() || label.len() > 100 {
        return Err(backend("the label must be 1 to 100 characters"));
    }
    let secret: [u8; 32] = random.array();
    for _ in 0..16 {
        let id = list(store, role).await?.last().map_or(1, |a| a.id + 1);
        let key = format!("htr_{}{id}_{}", role.letter(), hex::encode(secret));
        let account = Account {
            id,
            label: label.trim().to_owned(),
            key_sha256: digest(&key),
            revoked: false,
        };
        let bytes = serde_json::to_vec(&account).map_err(backend)?;
        if store
            .side_create(role.ns(), &id.to_string(), &bytes)
            .await?
        {
            return Ok((account, key));
        }
    }
    Err(backend("could not allocate an account id"))
}

pub async fn revoke<S: SideStore>(store: &S, role: Role, id: u32) -> Result<bool, LogError> {
    let Some(v) = store.side_get(role.ns(), &id.to_string()).await? else {
        return Ok(false);
    };
    let mut a: Account = serde_json::from_slice(&v).map_err(backend)?;
    a.revoked = true;
    store
        .side_put(
            role.ns(),
            &id.to_string(),
            &serde_json::to_vec(&a).map_err(backend)?,
        )
        .await?;
    Ok(true)
}

/// The account id of a valid, unrevoked key.
pub async fn verify<S: SideStore>(
    store: &S,
    role: Role,
    key: &str,
) -> Result<Option<u32>, LogError> {
    let prefix = format!("htr_{}", role.letter());
    let Some(rest) = key.strip_prefix(&prefix) else {
        return Ok(None);
    };
    let Some((id, _)) = rest.split_once('_') else {
        return Ok(None);
    };
    let Ok(id) = id.parse::<u32>() else {
        return Ok(None);
    };
    let Some(v) = store.side_get(role.ns(), &id.to_string()).await? else {
        return Ok(None);
    };
    let a: Account = serde_json::from_slice(&v).map_err(backend)?;
    // Comparing digests, not keys: timing reveals at most how much of a SHA-256 matched,
    // which does not help to find a key.
    let ok = !a.revoked && a.key_sha256 == digest(key);
    Ok(ok.then_some(id))
}
