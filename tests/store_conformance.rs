//! One suite for the `ObjectStore` contract, run against every store: the local directory lake,
//! and S3 on ministack, LocalStack 4.13.1 and moto (emulator processes on 127.0.0.1).
//!
//! The contract: atomic put and get with versions, a conditional get (nothing while unchanged),
//! create-if-absent, conditional replace and
//! delete (a failed precondition is `Conflict` and writes nothing), server-side copy, listing
//! sorted and complete past one page, and the writer lease (one holder; an expired lease taken
//! over by exactly one of two racing takers; renewed while held; released only by its holder).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::emulator::{Emulator, Kind};
use tickerlake::lake::s3::{AwsOptions, S3Store, Target};
use tickerlake::lake::{IfChanged, LOCK_KEY, Lake, LakeError, ObjectStore, PutMode, PutOutcome, lease, local::LocalStore};

/// A fresh, empty store of each kind (the emulator, if any, lives as long as the returned guard).
async fn local() -> (Option<tempfile::TempDir>, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    (Some(dir), Arc::new(store))
}

async fn s3(emu: &Emulator, bucket: &str) -> Lake {
    let opts = AwsOptions {
        target: Target::S3Compatible,
        endpoint_url: Some(emu.endpoint()),
        glue_endpoint: None,
        athena_endpoint: None,
        path_style: true,
        default_region: Some("us-east-1".into()),
        dummy_credentials: true,
        lock_ttl: None,
        attempt_timeout: Some(Duration::from_secs(10)),
    };
    let store = S3Store::connect(bucket, "conformance", &opts).await.unwrap();
    store.check(true).await.expect("create the bucket");
    Arc::new(store)
}

async fn put_get_and_versions(store: &Lake) {
    assert_eq!(store.get("a/x").await.unwrap(), None);
    store.put("a/x", Bytes::from_static(b"one")).await.unwrap();
    let v1 = store.get_versioned("a/x").await.unwrap().expect("written");
    assert_eq!(v1.data, Bytes::from_static(b"one"));
    store.put("a/x", Bytes::from_static(b"two")).await.unwrap();
    let v2 = store.get_versioned("a/x").await.unwrap().unwrap();
    assert_eq!(v2.data, Bytes::from_static(b"two"));
    assert_ne!(v1.version, v2.version, "a rewrite changes the version");
    store.delete("a/x").await.unwrap();
    store.delete("a/x").await.expect("deleting a missing object is fine");
    assert_eq!(store.get("a/x").await.unwrap(), None);
}

async fn create_if_absent(store: &Lake) {
    assert_eq!(store.put_if_absent("c/k", Bytes::from_static(b"first")).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.put_if_absent("c/k", Bytes::from_static(b"second")).await.unwrap(), PutOutcome::AlreadyExists);
    assert_eq!(store.get("c/k").await.unwrap().unwrap(), Bytes::from_static(b"first"));
    let err = store.put_opts("c/k", Bytes::from_static(b"third"), PutMode::Create).await.unwrap_err();
    assert!(matches!(err, LakeError::Conflict { .. }), "{err:?}");
}

async fn compare_and_swap(store: &Lake) {
    let v0 = store.put_opts("m/manifest", Bytes::from_static(b"v0"), PutMode::Create).await.unwrap();
    assert_eq!(store.get_versioned("m/manifest").await.unwrap().unwrap().version, v0, "put returns the stored version");
    let v1 = store.put_opts("m/manifest", Bytes::from_static(b"v1"), PutMode::Update(&v0)).await.unwrap();
    // A writer still holding v0 loses, and writes nothing.
    let err = store.put_opts("m/manifest", Bytes::from_static(b"lost"), PutMode::Update(&v0)).await.unwrap_err();
    assert!(matches!(err, LakeError::Conflict { .. }), "{err:?}");
    assert_eq!(store.get("m/manifest").await.unwrap().unwrap(), Bytes::from_static(b"v1"));
    // Replacing an object that is gone is a conflict too.
    let err = store.put_opts("m/none", Bytes::from_static(b"x"), PutMode::Update(&v1)).await.unwrap_err();
    assert!(matches!(err, LakeError::Conflict { .. }), "{err:?}");
    assert_eq!(store.get("m/none").await.unwrap(), None);
    // Conditional delete: only the current version.
    let err = store.delete_if("m/manifest", &v0).await.unwrap_err();
    assert!(matches!(err, LakeError::Conflict { .. }), "{err:?}");
    assert!(store.get("m/manifest").await.unwrap().is_some());
    store.delete_if("m/manifest", &v1).await.unwrap();
    assert_eq!(store.get("m/manifest").await.unwrap(), None);
    store.delete_if("m/manifest", &v1).await.expect("already gone is fine");
}

async fn copy_and_files(store: &Lake) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("part.parquet");
    std::fs::write(&src, b"parquet bytes").unwrap();
    store.put_file("runs/r1/processed/date=2025-05-08/part-00000.parquet", &src).await.unwrap();
    store.copy("runs/r1/processed/date=2025-05-08/part-00000.parquet", "processed/date=2025-05-08/part-00000.parquet").await.unwrap();
    let dest = dir.path().join("back");
    store.get_to_file("processed/date=2025-05-08/part-00000.parquet", &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"parquet bytes");
    assert!(store.get("runs/r1/processed/date=2025-05-08/part-00000.parquet").await.unwrap().is_some(), "copy keeps the source");
    // A missing object is NotFound, to copy or to download (the commit protocol tells a lost
    // staged file from a failure by it).
    let missing = store.copy("runs/r0/gone.parquet", "processed/gone.parquet").await.unwrap_err();
    assert!(matches!(&missing, LakeError::NotFound { key } if key == "runs/r0/gone.parquet"), "{missing:?}");
    let missing = store.get_to_file("runs/r0/gone.parquet", &dir.path().join("gone")).await.unwrap_err();
    assert!(matches!(&missing, LakeError::NotFound { key } if key == "runs/r0/gone.parquet"), "{missing:?}");
    // Keys with characters that need encoding on the wire copy like any other.
    let odd = "runs/r1/a b+c%d/é.parquet";
    store.put_file(odd, &src).await.unwrap();
    store.copy(odd, "processed/odd copy+%.parquet").await.unwrap();
    assert_eq!(store.get("processed/odd copy+%.parquet").await.unwrap().unwrap(), Bytes::from_static(b"parquet bytes"));
    // The source may go once handed over (a run deletes its stage directory), linked or copied.
    std::fs::remove_file(&src).unwrap();
    assert_eq!(store.get(odd).await.unwrap().unwrap(), Bytes::from_static(b"parquet bytes"));
    // Over an existing key both replace it whole (a rerun publishing a date again).
    let newer = dir.path().join("newer.parquet");
    std::fs::write(&newer, b"newer bytes").unwrap();
    store.put_file(odd, &newer).await.unwrap();
    assert_eq!(store.get(odd).await.unwrap().unwrap(), Bytes::from_static(b"newer bytes"));
    store.copy(odd, "processed/odd copy+%.parquet").await.unwrap();
    assert_eq!(store.get("processed/odd copy+%.parquet").await.unwrap().unwrap(), Bytes::from_static(b"newer bytes"));
    // Write times come from the store's clock, listed and read alike.
    let listed = store.list("processed/").await.unwrap();
    let now = chrono::Utc::now();
    for o in &listed {
        let at = o.modified.unwrap_or_else(|| panic!("{} has no write time", o.key));
        assert!((now - at).num_seconds().abs() < 600, "{}: {at} is not about now ({now})", o.key);
    }
    assert!(store.get_versioned("processed/odd copy+%.parquet").await.unwrap().unwrap().modified.is_some());
}

async fn listing_sorted_and_paged(store: &Lake) {
    use futures::{StreamExt, TryStreamExt};
    // More than one S3 page (1,000 keys), written out of order.
    let n = 1_003;
    let keys: Vec<String> = (0..n).rev().map(|i| format!("l/{i:05}.csv")).collect();
    futures::stream::iter(keys.iter().map(|k| store.put(k, Bytes::from_static(b"x"))))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    store.put("l2/other", Bytes::from_static(b"x")).await.unwrap();
    let listed: Vec<String> = store.list("l/").await.unwrap().into_iter().map(|o| o.key).collect();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(listed, want);
    assert!(store.list("nothing-here/").await.unwrap().is_empty());
    // Only keys after a given one (one request on S3, past the first page's worth of older keys).
    let after: Vec<String> = store.list_after("l/", "l/00999.csv").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(after, ["l/01000.csv", "l/01001.csv", "l/01002.csv"]);
    let after: Vec<String> = store.list_after("l/", "l/00001").await.unwrap().into_iter().map(|o| o.key).take(2).collect();
    assert_eq!(after, ["l/00001.csv", "l/00002.csv"], "a key prefix sorts before its keys");
}

fn lease_body(owner: &str, expires_at: chrono::DateTime<chrono::Utc>) -> Bytes {
    Bytes::from(serde_json::json!({"owner": owner, "token": "t", "expires_at": expires_at}).to_string())
}

async fn lease_contract(store: &Lake) {
    let ttl = Duration::from_secs(2);
    let a = lease::acquire(store.clone(), LOCK_KEY, "run a", ttl).await.unwrap();
    let refused = lease::acquire(store.clone(), LOCK_KEY, "run b", ttl).await.err().expect("one holder at a time");
    assert!(matches!(&refused, LakeError::Locked { holder, .. } if holder.contains("run a")), "{refused:?}");
    // Renewed while held: well past the TTL, another taker is still refused.
    tokio::time::sleep(ttl * 2).await;
    assert!(a.is_held());
    assert!(lease::acquire(store.clone(), LOCK_KEY, "run b", ttl).await.is_err(), "the holder renews its lease");
    a.release().await.unwrap();
    assert_eq!(store.get(LOCK_KEY).await.unwrap(), None, "released");

    // An expired lease: of two racing takers exactly one wins.
    store.put(LOCK_KEY, lease_body("dead run", chrono::Utc::now() - chrono::TimeDelta::minutes(5))).await.unwrap();
    let (x, y) = tokio::join!(
        lease::acquire(store.clone(), LOCK_KEY, "taker x", Duration::from_secs(60)),
        lease::acquire(store.clone(), LOCK_KEY, "taker y", Duration::from_secs(60)),
    );
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "exactly one taker wins: {:?} / {:?}", x.as_ref().err(), y.as_ref().err());
    let winner = x.or(y).unwrap();

    // A holder whose lease was taken over does not release its successor's lease.
    store.put(LOCK_KEY, lease_body("successor", chrono::Utc::now() + chrono::TimeDelta::minutes(5))).await.unwrap();
    winner.release().await.unwrap();
    let left = store.get(LOCK_KEY).await.unwrap().expect("the successor's lease stays");
    assert!(String::from_utf8_lossy(&left).contains("successor"));
    store.delete(LOCK_KEY).await.unwrap();
}

/// A store that forwards to another and can misbehave as a network does: answer a conditional
/// create with 412 after performing it (the first attempt landed, its answer was lost, the
/// retry found the object), or fail every write for a while.
#[derive(Debug)]
struct Flaky {
    inner: Lake,
    /// Lose the answer of the next create of this key.
    lose_create_answer: std::sync::Mutex<Option<String>>,
    /// Fail every write with a timeout.
    writes_fail: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ObjectStore for Flaky {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> tickerlake::lake::LakeResult<Vec<tickerlake::lake::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn get_versioned(&self, key: &str) -> tickerlake::lake::LakeResult<Option<tickerlake::lake::Versioned>> {
        self.inner.get_versioned(key).await
    }
    async fn get_to_file(&self, key: &str, dest: &std::path::Path) -> tickerlake::lake::LakeResult<()> {
        self.inner.get_to_file(key, dest).await
    }
    async fn put_opts(&self, key: &str, data: Bytes, mode: PutMode<'_>) -> tickerlake::lake::LakeResult<String> {
        if self.writes_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LakeError::Timeout { endpoint: "flaky".into() });
        }
        let lose = mode == PutMode::Create && self.lose_create_answer.lock().unwrap().take_if(|k| k == key).is_some();
        let version = self.inner.put_opts(key, data, mode).await?;
        if lose {
            return Err(LakeError::Conflict { key: key.to_owned() });
        }
        Ok(version)
    }
    async fn put_file(&self, key: &str, src: &std::path::Path) -> tickerlake::lake::LakeResult<()> {
        self.inner.put_file(key, src).await
    }
    async fn copy(&self, from: &str, to: &str) -> tickerlake::lake::LakeResult<()> {
        self.inner.copy(from, to).await
    }
    async fn delete(&self, key: &str) -> tickerlake::lake::LakeResult<()> {
        self.inner.delete(key).await
    }
    async fn delete_if(&self, key: &str, version: &str) -> tickerlake::lake::LakeResult<()> {
        self.inner.delete_if(key, version).await
    }
    async fn lock(&self, owner: &str) -> tickerlake::lake::LakeResult<tickerlake::lake::LockGuard> {
        self.inner.lock(owner).await
    }
    async fn check(&self, create: bool) -> tickerlake::lake::LakeResult<Vec<String>> {
        self.inner.check(create).await
    }
}

/// The lease under a network that loses answers and fails for a while.
async fn lease_under_faults(store: &Lake) {
    let flaky = Arc::new(Flaky { inner: store.clone(), lose_create_answer: Default::default(), writes_fail: Default::default() });
    let as_lake: Lake = flaky.clone();
    // The create landed, its answer was lost, the retry got 412: the lease is this run's own.
    *flaky.lose_create_answer.lock().unwrap() = Some(LOCK_KEY.to_owned());
    let guard = lease::acquire(as_lake.clone(), LOCK_KEY, "run a", Duration::from_secs(60)).await.expect("its own lease, not another's");
    assert!(guard.is_held());
    guard.release().await.unwrap();
    assert_eq!(store.get(LOCK_KEY).await.unwrap(), None, "and it releases it");

    // Renewals that fail for the lease's whole term: the run must act as if it had lost it.
    let ttl = Duration::from_millis(900);
    let guard = lease::acquire(as_lake.clone(), LOCK_KEY, "run b", ttl).await.unwrap();
    let fence = guard.fence();
    flaky.writes_fail.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(ttl / 2).await;
    assert!(guard.is_held() && fence.is_held(), "a renewal failing briefly is not a loss");
    tokio::time::sleep(ttl * 2).await;
    assert!(!guard.is_held() && !fence.is_held(), "no renewal for a whole term: lost");
    flaky.writes_fail.store(false, std::sync::atomic::Ordering::SeqCst);
    guard.release().await.unwrap();
    store.delete(LOCK_KEY).await.unwrap();
}

/// The local lake's lock is an OS lock (no lease): one holder, released with the guard.
async fn local_lock_contract(store: &Lake) {
    let a = store.lock("run a").await.unwrap();
    let err = store.lock("run b").await.err().expect("one holder");
    assert!(matches!(&err, LakeError::Locked { holder, .. } if holder.contains("run a")), "{err:?}");
    a.release().await.unwrap();
    store.lock("run b").await.expect("free again").release().await.unwrap();
}

/// A poller's read: nothing while the object is at the version it has, the new bytes once it
/// changed (one request either way on S3: a GET with If-None-Match answered 304 or 200).
async fn conditional_get(store: &Lake) {
    assert_eq!(store.get_if_changed("g/m", "\"whatever\"").await.unwrap(), IfChanged::Missing);
    store.put("g/m", Bytes::from_static(b"one")).await.unwrap();
    let v1 = store.get_versioned("g/m").await.unwrap().unwrap();
    let before = store.requests();
    assert_eq!(store.get_if_changed("g/m", &v1.version).await.unwrap(), IfChanged::NotModified);
    if let (Some(a), Some(b)) = (before, store.requests()) {
        assert_eq!(b - a, 1, "one request");
    }
    store.put("g/m", Bytes::from_static(b"two")).await.unwrap();
    match store.get_if_changed("g/m", &v1.version).await.unwrap() {
        IfChanged::Changed(v2) => {
            assert_eq!(v2.data, Bytes::from_static(b"two"));
            assert_eq!(v2, store.get_versioned("g/m").await.unwrap().unwrap(), "the version a later poll compares with");
            assert_eq!(store.get_if_changed("g/m", &v2.version).await.unwrap(), IfChanged::NotModified);
        }
        other => panic!("a rewrite is a change: {other:?}"),
    }
    store.delete("g/m").await.unwrap();
}

async fn contract(store: &Lake) {
    put_get_and_versions(store).await;
    conditional_get(store).await;
    create_if_absent(store).await;
    compare_and_swap(store).await;
    copy_and_files(store).await;
    listing_sorted_and_paged(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let (_dir, store) = local().await;
    contract(&store).await;
    // The lease protocol works on the local store's primitives too (S3's lock uses it).
    lease_contract(&store).await;
    lease_under_faults(&store).await;
    local_lock_contract(&store).await;
}

macro_rules! s3_conformance {
    ($name:ident, $kind:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(emu) = Emulator::start($kind) else { return };
            let store = s3(&emu, "conformance").await;
            contract(&store).await;
            lease_contract(&store).await;
            lease_under_faults(&store).await;
        }
    };
}

s3_conformance!(s3_on_ministack_conforms, Kind::Ministack);
s3_conformance!(s3_on_localstack_conforms, Kind::Localstack);
s3_conformance!(s3_on_moto_conforms, Kind::Moto);
