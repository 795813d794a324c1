//! One arbiter (an OS thread with its own event loop) per core.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Addr, Arbiter, Context, Supervised, Supervisor};

/// A pool of arbiters; actors are placed on them round robin.
pub struct Arbiters {
    arbiters: Vec<Arbiter>,
    next: AtomicUsize,
}

impl Arbiters {
    /// One arbiter per available core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn new(n: usize) -> Self {
        Self {
            arbiters: (0..n.max(1)).map(|_| Arbiter::new()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    /// Starts a supervised actor on the next arbiter.
    pub fn start<A, F>(&self, f: F) -> Addr<A>
    where
        A: Actor<Context = Context<A>> + Supervised,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        Supervisor::start_in_arbiter(&self.arbiters[i].handle(), f)
    }

    /// Stops every arbiter and waits for their threads.
    pub fn stop(self) {
        for a in self.arbiters {
            a.stop();
            let _ = a.join();
        }
    }
}
