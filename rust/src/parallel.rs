//! The thread pool that large batches and scans are split over: sized by `BSC_NUM_THREADS`, and never
//! used in a process forked after it started.
//!
//! `fork()` copies only the calling thread, so in a child the pool's workers do not exist and a job handed
//! to them would wait forever (gunicorn `--preload`, Celery prefork and `multiprocessing`'s fork start
//! method all fork a parent that may have used it). Like huggingface/tokenizers, a forked child therefore
//! runs everything on the calling thread. The pool remembers the process that built it; comparing that
//! with the current process id is all the detection needs (no `pthread_atfork` handler, no unsafe code).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The environment variable that caps the pool's threads (1 turns parallelism off). Read once, when
/// the pool is first needed; unset or not a positive integer means rayon's default (`RAYON_NUM_THREADS`,
/// else one thread per core).
pub const THREADS_VAR: &str = "BSC_NUM_THREADS";

struct Pool {
    pool: ThreadPool,
    pid: u32,
}

static POOL: OnceLock<Option<Pool>> = OnceLock::new();
/// Set by the one thread that builds the pool. Nobody ever waits for that build: a process forked while
/// another thread was building would wait forever, because its copy of the builder does not exist (a
/// `OnceLock::get_or_init` here hung such children). Callers that find the build under way run on their
/// own thread meanwhile.
static BUILDING: AtomicBool = AtomicBool::new(false);

fn configured_threads() -> usize {
    std::env::var(THREADS_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0) // 0: rayon's default
}

fn build() -> Option<Pool> {
    let threads = configured_threads();
    if threads == 1 {
        return None;
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("bsc-worker-{i}"))
        .build()
        .ok()?; // cannot spawn threads: run on the calling thread
    (pool.current_num_threads() > 1).then(|| Pool {
        pool,
        pid: std::process::id(),
    })
}

/// The pool to split work over, or `None` to run on the calling thread: one thread configured or
/// available, or this process was forked from the one that built the pool.
pub fn pool() -> Option<&'static ThreadPool> {
    let built = match POOL.get() {
        Some(built) => built,
        None => {
            if BUILDING.swap(true, Ordering::AcqRel) {
                return None; // another thread is building it, or was when this process was forked
            }
            // Only this thread sets the cell, so `set` cannot find it already set.
            let _ = POOL.set(build());
            POOL.get()?
        }
    };
    let p = built.as_ref()?;
    (p.pid == std::process::id()).then_some(&p.pool)
}

/// How many threads large batches and scans use in this process (1 when they run on the caller).
pub fn threads() -> usize {
    pool().map_or(1, ThreadPool::current_num_threads)
}
