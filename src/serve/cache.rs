//! The files of a remote (S3) lake as `serve` reads them: fetched only when a query needs them,
//! kept in a cache of bounded size that drops versions no committed state names.
//!
//! DuckDB cannot fetch from S3 here (no extensions), so every committed file has a local path
//! under the cache directory from the start: the file itself once fetched, else an empty
//! placeholder (DuckDB's hive pruning needs every listed path to exist; an empty file fails
//! loudly, "too small to be a Parquet file", if a query ever opens one unfetched). Which files a
//! query opens is learnt by running it first on a *probe* database whose views list empty stub
//! files at the same partition paths, with DuckDB's file-system log on: the opened stubs name the
//! partitions the query reads after pruning. `raw` and `quarantine` are never pruned (CSV), so a
//! query naming them needs all of theirs.
//!
//! Each view's file list starts with a *sentinel*: an empty file of the view's schema that DuckDB
//! opens when it binds the view (it reads the first file's schema), so binding never needs a
//! fetch.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::lake::{IO_CONCURRENCY, Lake, LakeError};
use crate::sql::lit;

use super::ServeError;
use super::engine::SnapshotFiles;

/// Which view a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum View {
    /// `processed`: hive-partitioned Parquet.
    Processed,
    /// `daily`: the per-symbol daily rollup, hive-partitioned Parquet.
    Daily,
    /// `snapshots`: the per-snapshot rollup, hive-partitioned Parquet.
    Snapshots,
    /// `raw`: CSV snapshots.
    Raw,
    /// `quarantine`: CSV.
    Quarantine,
}

impl View {
    /// Whether DuckDB prunes the view's files by date (Parquet under `date=` directories).
    pub fn is_partitioned(self) -> bool {
        matches!(self, Self::Processed | Self::Daily | Self::Snapshots)
    }
}

/// One committed file: where it is in the lake and its cache path, which names its content
/// (a partition by date and run, a raw file by version), so it stays the same across commits
/// that do not change it and a staged partition's publication is no new download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its view.
    pub view: View,
    /// The lake key it is read from now.
    pub key: String,
    /// Its path relative to the cache (and stub) directory.
    pub rel: String,
}

/// Letters and digits of a version or run id, for a directory name (no `=`: hive would parse it).
pub fn tag(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).take(48).collect()
}

struct Entry {
    key: String,
    view: View,
    fetched: bool,
    size: u64,
    pins: usize,
    last_used: u64,
    named: bool,
    fetching: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    clock: u64,
}

/// What the cache holds (figures, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Files fetched and kept.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Downloads since start.
    pub downloads: u64,
}

/// The local copies of a remote lake's committed files.
pub struct Cache {
    lake: Lake,
    files: PathBuf,
    stubs: PathBuf,
    budget: u64,
    inner: Mutex<Inner>,
    downloads: std::sync::atomic::AtomicU64,
}

/// Files pinned for a running query: not evicted until it ends.
pub struct Pins {
    cache: Arc<Cache>,
    rels: Vec<String>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut inner = self.cache.inner.lock().expect("cache lock");
        for rel in &self.rels {
            let gone = match inner.entries.get_mut(rel) {
                Some(e) => {
                    e.pins = e.pins.saturating_sub(1);
                    e.pins == 0 && !e.named
                }
                None => false,
            };
            if gone {
                inner.entries.remove(rel);
                self.cache.remove_files(rel);
            }
        }
    }
}

/// The file lists of one committed state: the real database's (cache paths) and the probe's
/// (stubs), each view's sentinel first; and each view's cache paths.
pub struct Layout {
    /// For the snapshot's database.
    pub real: SnapshotFiles,
    /// For its probe database.
    pub probe: SnapshotFiles,
    /// Cache-relative paths of each view's files.
    pub rels: BTreeMap<View, Vec<String>>,
}

const SENTINEL_PARQUET: &str = "sentinel/date=1970-01-01/part-00000.parquet";
const SENTINEL_DAILY: &str = "sentinel/daily/date=1970-01-01/daily.parquet";
const SENTINEL_SNAPSHOTS: &str = "sentinel/snapshots/date=1970-01-01/snapshots.parquet";
const SENTINEL_RAW: &str = "sentinel/raw.csv";
const SENTINEL_QUARANTINE: &str = "sentinel/quarantine.csv";

fn io(what: String) -> impl FnOnce(std::io::Error) -> ServeError {
    move |e| ServeError::Lake(LakeError::io(what, e))
}

impl Cache {
    /// A cache under `dir` (created), holding at most `budget` bytes of fetched files beyond
    /// those a running query needs.
    pub fn new(lake: Lake, dir: &Path, budget: u64) -> Result<Self, ServeError> {
        let files = dir.join("files");
        let stubs = dir.join("stubs");
        std::fs::create_dir_all(&files).map_err(io(format!("cannot create {}", files.display())))?;
        // The sentinels: empty files of each view's schema.
        let conn = duckdb::Connection::open_in_memory().map_err(|e| ServeError::Engine(e.to_string()))?;
        for (rel, columns) in [
            (SENTINEL_PARQUET, &crate::indicators::PROCESSED_COLUMNS[..]),
            (SENTINEL_DAILY, &crate::indicators::DAILY_COLUMNS[..]),
            (SENTINEL_SNAPSHOTS, &crate::indicators::SNAPSHOTS_COLUMNS[..]),
        ] {
            let parquet = stubs.join(rel);
            let parent = parquet.parent().expect("sentinels have a parent");
            std::fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
            let typed: Vec<String> = columns.iter().map(|c| format!("CAST(NULL AS {}) AS \"{}\"", c.duckdb, c.name)).collect();
            conn.execute_batch(&format!(
                "COPY (SELECT {} WHERE false) TO {} (FORMAT parquet)",
                typed.join(", "),
                lit(&parquet.to_string_lossy())
            ))
            .map_err(|e| ServeError::Engine(format!("cannot write the cache's sentinel file: {e}")))?;
        }
        for (rel, header) in [(SENTINEL_RAW, "symbol,price,timestamp\n"), (SENTINEL_QUARANTINE, "source_file,line,reason,record\n")] {
            let p = stubs.join(rel);
            std::fs::write(&p, header).map_err(io(format!("cannot write {}", p.display())))?;
        }
        Ok(Self { lake, files, stubs, budget, inner: Mutex::new(Inner::default()), downloads: Default::default() })
    }

    fn sentinel(&self, view: View) -> PathBuf {
        self.stubs.join(match view {
            View::Processed => SENTINEL_PARQUET,
            View::Daily => SENTINEL_DAILY,
            View::Snapshots => SENTINEL_SNAPSHOTS,
            View::Raw => SENTINEL_RAW,
            View::Quarantine => SENTINEL_QUARANTINE,
        })
    }

    fn remove_files(&self, rel: &str) {
        let _ = std::fs::remove_file(self.files.join(rel));
        let _ = std::fs::remove_file(self.stubs.join(rel));
    }

    /// Make `objects` the committed state: placeholders and stubs for new files, versions no
    /// longer named dropped (at once, or when the last query using them ends).
    pub fn sync(&self, objects: &[Object]) -> Result<Layout, ServeError> {
        let mut inner = self.inner.lock().expect("cache lock");
        for e in inner.entries.values_mut() {
            e.named = false;
        }
        for o in objects {
            if let Some(e) = inner.entries.get_mut(&o.rel) {
                e.named = true;
                e.key.clone_from(&o.key);
                continue;
            }
            let (file, stub) = (self.files.join(&o.rel), self.stubs.join(&o.rel));
            for p in [&file, &stub] {
                let parent = p.parent().expect("cache paths have a parent");
                std::fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
            }
            std::fs::File::create(&file).map_err(io(format!("cannot create {}", file.display())))?;
            if !stub.exists() {
                std::fs::hard_link(self.sentinel(o.view), &stub).map_err(io(format!("cannot create {}", stub.display())))?;
            }
            inner.entries.insert(
                o.rel.clone(),
                Entry {
                    key: o.key.clone(),
                    view: o.view,
                    fetched: false,
                    size: 0,
                    pins: 0,
                    last_used: 0,
                    named: true,
                    fetching: Arc::default(),
                },
            );
        }
        let stale: Vec<String> = inner.entries.iter().filter(|(_, e)| !e.named && e.pins == 0).map(|(k, _)| k.clone()).collect();
        for rel in stale {
            inner.entries.remove(&rel);
            self.remove_files(&rel);
        }
        let mut rels: BTreeMap<View, Vec<String>> = BTreeMap::new();
        for o in objects {
            rels.entry(o.view).or_default().push(o.rel.clone());
        }
        let list = |root: &Path, view: View| -> Vec<String> {
            std::iter::once(self.sentinel(view))
                .chain(rels.get(&view).into_iter().flatten().map(|r| root.join(r)))
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        };
        let files = |root: &Path| SnapshotFiles {
            processed: list(root, View::Processed),
            daily: list(root, View::Daily),
            snapshots: list(root, View::Snapshots),
            raw: list(root, View::Raw),
            quarantine: list(root, View::Quarantine),
            allowed_directories: Vec::new(),
            load_small_tables: false,
        };
        Ok(Layout { real: files(&self.files), probe: files(&self.stubs), rels })
    }

    /// The cache-relative path of a probe stub path, if it is one (not a sentinel).
    pub fn rel_of_stub(&self, path: &str) -> Option<String> {
        let rel = Path::new(path).strip_prefix(&self.stubs).ok()?.to_string_lossy().into_owned();
        (!rel.starts_with("sentinel/")).then_some(rel)
    }

    /// Pin `rels` for a query and fetch those not here yet (concurrently), then evict beyond the
    /// budget. Fails when the query alone needs more than the budget.
    pub async fn pin_and_fetch(self: &Arc<Self>, rels: Vec<String>) -> Result<Pins, ServeError> {
        let todo: Vec<(String, String, Arc<tokio::sync::Mutex<()>>)> = {
            let mut inner = self.inner.lock().expect("cache lock");
            inner.clock += 1;
            let now = inner.clock;
            rels.iter()
                .filter_map(|rel| {
                    let e = inner.entries.get_mut(rel)?;
                    e.pins += 1;
                    e.last_used = now;
                    (!e.fetched).then(|| (rel.clone(), e.key.clone(), e.fetching.clone()))
                })
                .collect()
        };
        let pins = Pins { cache: self.clone(), rels: rels.into_iter().filter(|r| self.is_entry(r)).collect() };
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(todo.into_iter().map(|(rel, key, lock)| async move {
            let _one_fetch = lock.lock().await;
            if self.inner.lock().expect("cache lock").entries.get(&rel).is_none_or(|e| e.fetched) {
                return Ok(());
            }
            let dest = self.files.join(&rel);
            let part = dest.with_extension("partial");
            self.lake.get_to_file(&key, &part).await?;
            let size = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            // A rename: a query holding the placeholder open keeps reading what it opened.
            std::fs::rename(&part, &dest).map_err(io(format!("cannot write {}", dest.display())))?;
            self.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(e) = self.inner.lock().expect("cache lock").entries.get_mut(&rel) {
                e.fetched = true;
                e.size = size;
            }
            Ok::<_, ServeError>(())
        }))
        .buffer_unordered(IO_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        self.evict()?;
        Ok(pins)
    }

    fn is_entry(&self, rel: &str) -> bool {
        self.inner.lock().expect("cache lock").entries.contains_key(rel)
    }

    /// Least recently used first, evict fetched files no query holds until within the budget
    /// (an evicted file becomes a placeholder again). Fails if pinned files alone exceed it.
    fn evict(&self) -> Result<(), ServeError> {
        let mut inner = self.inner.lock().expect("cache lock");
        let mut total: u64 = inner.entries.values().filter(|e| e.fetched).map(|e| e.size).sum();
        if total <= self.budget {
            return Ok(());
        }
        let mut candidates: Vec<(u64, String)> =
            inner.entries.iter().filter(|(_, e)| e.fetched && e.pins == 0).map(|(k, e)| (e.last_used, k.clone())).collect();
        candidates.sort();
        for (_, rel) in candidates {
            if total <= self.budget {
                break;
            }
            let e = inner.entries.get_mut(&rel).expect("listed");
            let placeholder = self.files.join(format!("{rel}.evicting"));
            std::fs::File::create(&placeholder).map_err(io(format!("cannot create {}", placeholder.display())))?;
            std::fs::rename(&placeholder, self.files.join(&rel)).map_err(io(format!("cannot evict {rel}")))?;
            total -= e.size;
            e.fetched = false;
            e.size = 0;
        }
        if total > self.budget {
            return Err(ServeError::CacheTooSmall { needed: total, budget: self.budget });
        }
        Ok(())
    }

    /// What the cache holds now.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().expect("cache lock");
        let fetched = inner.entries.values().filter(|e| e.fetched);
        CacheStats {
            files: fetched.clone().count(),
            bytes: fetched.map(|e| e.size).sum(),
            downloads: self.downloads.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Every file of `view` in the current state.
    pub fn view_rels(&self, view: View) -> Vec<String> {
        let inner = self.inner.lock().expect("cache lock");
        inner.entries.iter().filter(|(_, e)| e.named && e.view == view).map(|(k, _)| k.clone()).collect()
    }
}

/// Which of the lake's views a query names (as whole identifiers, outside literals).
pub fn views_named(sql: &str) -> Vec<View> {
    let mut out = Vec::new();
    for t in super::sqltext::tokenize(sql) {
        let view = match t.ident().as_deref() {
            Some("processed") => View::Processed,
            // The views over `daily` read the daily rollup's files.
            Some("daily") => View::Daily,
            Some(name) if crate::indicators::VIEWS_OVER_DAILY.iter().any(|(over, _)| *over == name) => View::Daily,
            Some("snapshots") => View::Snapshots,
            Some("raw") => View::Raw,
            Some("quarantine") => View::Quarantine,
            _ => continue,
        };
        if !out.contains(&view) {
            out.push(view);
        }
    }
    out
}
