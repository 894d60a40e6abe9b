//! Blocking work (DuckDB, a fault injection's pause) inside the async runtime.

/// Run `f` on the current thread without starving the other tasks of a multi-thread runtime
/// (they move to other workers meanwhile); on any other runtime, or none, just run it.
pub fn in_place<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
