//! A small pool of threads with big stacks for the parser.
//!
//! libpg_query bounds its own recursion (it measures the stack it was given and stops at 2 MiB
//! of C frames with "stack depth limit exceeded"), but the Rust side then decodes, walks and
//! frees a tree as deep as that, recursively. On a 2 MiB tokio worker stack that overflows (an
//! abort, not an error); on 64 MiB it has ample room, and the walker adds its own depth bound.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use crate::AnalysisError;

/// Stack size of every parser thread.
pub const STACK_SIZE: usize = 64 * 1024 * 1024;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    jobs: Sender<Job>,
}

static POOL: OnceLock<Result<Pool, String>> = OnceLock::new();

fn pool() -> Result<&'static Pool, AnalysisError> {
    POOL.get_or_init(start)
        .as_ref()
        .map_err(|e| AnalysisError::Internal(e.clone()))
}

fn start() -> Result<Pool, String> {
    let (jobs, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let threads = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let mut started = 0;
    for i in 0..threads {
        let rx = Arc::clone(&rx);
        let spawned = thread::Builder::new()
            .name(format!("gatehouse-sql-{i}"))
            .stack_size(STACK_SIZE)
            .spawn(move || worker(&rx));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::error!(error = %e, "cannot start an SQL analyser thread"),
        }
    }
    if started == 0 {
        return Err("no SQL analyser thread could be started".to_owned());
    }
    tracing::debug!(
        threads = started,
        stack_mib = STACK_SIZE >> 20,
        "SQL analyser pool started"
    );
    Ok(Pool { jobs })
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return, // the pool is gone
        }
    }
}

thread_local! {
    /// Set on threads started with at least [`STACK_SIZE`] of stack (see [`mark_big_stack`]).
    static BIG_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Declares that the current thread was started with at least [`STACK_SIZE`] bytes of stack,
/// so analysis may run on it directly instead of handing over to the pool (one thread
/// wake-up less per statement). Call it from a runtime's `on_thread_start` when the runtime's
/// `thread_stack_size` is at least [`STACK_SIZE`].
pub fn mark_big_stack() {
    BIG_STACK.with(|b| b.set(true));
}

fn guarded<T>(f: impl FnOnce() -> Result<T, AnalysisError>) -> Result<T, AnalysisError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        tracing::error!(panic = %what, "SQL analyser panicked");
        Err(AnalysisError::Internal(format!(
            "analyser panicked: {what}"
        )))
    })
}

/// Runs `f` on a thread with a big stack and waits for its result: the current one if it is
/// marked (see [`mark_big_stack`]), else a parser thread. A panic inside `f` becomes
/// [`AnalysisError::Internal`] (the thread survives).
pub(crate) fn run<T, F>(f: F) -> Result<T, AnalysisError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, AnalysisError> + Send + 'static,
{
    if BIG_STACK.with(std::cell::Cell::get) {
        return guarded(f);
    }
    let (tx, rx) = mpsc::sync_channel::<Result<T, AnalysisError>>(1);
    let job: Job = Box::new(move || {
        let result = guarded(f);
        // The caller may have gone away; nothing to do then.
        let _ = tx.send(result);
    });
    pool()?
        .jobs
        .send(job)
        .map_err(|_| AnalysisError::Internal("SQL analyser pool stopped".to_owned()))?;
    rx.recv()
        .map_err(|_| AnalysisError::Internal("SQL analyser thread died".to_owned()))?
}
