//! A writer lease on any store with conditional writes (the S3 lake's lock).
//!
//! The lease is one object, `{"owner", "token", "expires_at"}`, and every transition is a
//! conditional write, so two processes can never both believe they took it:
//!
//! | step | write | loses when |
//! | --- | --- | --- |
//! | take a free lease | `PutMode::Create` | another taker created it first |
//! | take over an expired lease | `PutMode::Update(version read)` | another taker replaced it first |
//! | renew (every ttl/3) | `PutMode::Update(our version)` | it was taken over, or renewals failed for a whole ttl: the guard is marked lost |
//! | release | `delete_if(our version)` | it was taken over: someone else's lease is left alone |
//!
//! The lease keeps writers from wasting work on each other; correctness does not rest on it: the
//! manifest commit is itself conditional (see `lake::commit`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{LakeError, LakeResult, LockGuard, ObjectStore, PutMode};

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    owner: String,
    /// Unique per acquisition, so a run recognises its own lease even if `owner` repeats.
    #[serde(default)]
    token: String,
    expires_at: DateTime<Utc>,
}

fn body(owner: &str, token: &str, ttl: Duration) -> Bytes {
    let lease = Lease { owner: owner.to_owned(), token: token.to_owned(), expires_at: Utc::now() + ttl };
    Bytes::from(serde_json::to_vec(&lease).expect("a lease serialises"))
}

/// Take the lease at `key` for `ttl`, renewing it in the background until released.
pub async fn acquire(store: Arc<dyn ObjectStore>, key: &str, owner: &str, ttl: Duration) -> LakeResult<LockGuard> {
    let token = format!("{:016x}", rand::random::<u64>());
    for _ in 0..3 {
        match store.put_opts(key, body(owner, &token, ttl), PutMode::Create).await {
            Ok(version) => return Ok(guard(store, key, owner, token, version, ttl)),
            Err(LakeError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some(current) = store.get_versioned(key).await? else { continue };
        let held: Option<Lease> = serde_json::from_slice(&current.data).ok();
        match held {
            // Ours: an attempt whose answer was lost landed, and its retry found it (412).
            Some(held) if held.token == token => return Ok(guard(store, key, owner, token, current.version, ttl)),
            Some(held) if held.expires_at > Utc::now() => {
                return Err(LakeError::Locked {
                    lake: store.describe(),
                    holder: format!("{}, lease until {}", held.owner, held.expires_at.format("%Y-%m-%d %H:%M:%S UTC")),
                });
            }
            held => {
                let who = held.map(|h| h.owner).unwrap_or_else(|| "an unreadable lease".into());
                match store.put_opts(key, body(owner, &token, ttl), PutMode::Update(&current.version)).await {
                    Ok(version) => {
                        tracing::warn!(previous = %who, "took over an expired lake lease (its run must have died or stalled)");
                        return Ok(guard(store, key, owner, token, version, ttl));
                    }
                    // Another taker replaced it first; look again.
                    Err(LakeError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(LakeError::Locked { lake: store.describe(), holder: "several runs are racing for the lease".into() })
}

fn guard(store: Arc<dyn ObjectStore>, key: &str, owner: &str, token: String, version: String, ttl: Duration) -> LockGuard {
    let lost = Arc::new(AtomicBool::new(false));
    let version = Arc::new(Mutex::new(version));
    let renewer = tokio::spawn(renew(store.clone(), key.to_owned(), owner.to_owned(), token, version.clone(), ttl, lost.clone()));
    let key = key.to_owned();
    LockGuard::new(lost.clone(), async move {
        // Take the version lock first: a renewal in flight completes (and records its new
        // version) before the renewer is stopped; aborting it mid-request could let its write
        // land unrecorded, and the release below would then leave the lease in place.
        let version = version.lock().await;
        renewer.abort();
        if lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        match store.delete_if(&key, &version).await {
            Err(LakeError::Conflict { .. }) => {
                tracing::warn!("the lake lease was taken over by another run; leaving it in place");
                Ok(())
            }
            other => other,
        }
    })
}

async fn renew(
    store: Arc<dyn ObjectStore>,
    key: String,
    owner: String,
    token: String,
    version: Arc<Mutex<String>>,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let mut current = version.lock().await;
        match store.put_opts(&key, body(&owner, &token, ttl), PutMode::Update(&current)).await {
            Ok(v) => {
                *current = v;
                renewed = std::time::Instant::now();
            }
            Err(LakeError::Conflict { .. }) => {
                tracing::error!("the lake lease was taken over by another run; this run will not commit or clean up");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // Not renewed for a whole ttl: the lease may have expired and been taken over without
            // this run being able to see it. From here on it must act as if it had lost it.
            Err(e) if renewed.elapsed() >= ttl => {
                tracing::error!(
                    "could not renew the lake lease for {} s (its whole term): {e}; this run will not commit or clean up",
                    ttl.as_secs()
                );
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // Transient: try again at the next interval (the lease lasts ttl, renewals come every ttl/3).
            Err(e) => tracing::warn!("could not renew the lake lease: {e}"),
        }
    }
}
