//! The open connections of one listener: what each is doing, and which to close at the cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use super::Limits;

/// One connection's state, shared by its I/O, its requests and its watchdog.
pub struct Track {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last had nothing in flight.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` (plus one, so 0 means "not reading") when the client began
    /// sending a request's head: set at accept and at the first byte after a response.
    reading_since: AtomicU64,
    evicting: AtomicBool,
    /// Wakes the watchdog to close the connection for a newcomer.
    pub evicted: Notify,
}

impl Track {
    fn new(epoch: Instant) -> Self {
        let now = millis(epoch);
        Self {
            epoch,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            reading_since: AtomicU64::new(now + 1),
            evicting: AtomicBool::new(false),
            evicted: Notify::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Bytes arrived from the client.
    pub fn received(&self) {
        if self.in_flight() == 0 {
            let _ = self.reading_since.compare_exchange(
                0,
                millis(self.epoch) + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// A request's head was read; it is in flight until its response is sent or dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.reading_since.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// When the connection must be closed if nothing changes: none while a request is in flight.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight() > 0 {
            return None;
        }
        let at = |since: u64, after: Duration| self.epoch + Duration::from_millis(since) + after;
        match self.reading_since.load(Ordering::Acquire) {
            0 => Some(at(
                self.idle_since.load(Ordering::Acquire),
                limits.idle_timeout,
            )),
            since => Some(at(since - 1, limits.header_read_timeout)),
        }
    }
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A request in flight on a connection.
pub struct InFlight(Arc<Track>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let track = &self.0;
        if track.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            track
                .idle_since
                .store(millis(track.epoch), Ordering::Release);
        }
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    live: HashMap<u64, Arc<Track>>,
    /// Live connections already told to close for a newcomer.
    evicting: usize,
}

pub struct Registry {
    epoch: Instant,
    max: usize,
    inner: Mutex<Inner>,
    empty: Notify,
}

/// What becomes of a new connection.
pub enum Admission {
    Admitted(Slot),
    /// At the cap with every connection busy.
    Full,
}

/// A connection's place in the registry, given back when it is dropped.
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    pub track: Arc<Track>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.live.remove(&self.id);
        if self.track.evicting.load(Ordering::Acquire) {
            inner.evicting -= 1;
        }
        if inner.live.is_empty() {
            self.registry.empty.notify_one();
        }
    }
}

impl Registry {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            max,
            inner: Mutex::default(),
            empty: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the map consistent: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection, at the cap in place of the one idle longest.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut inner = self.lock();
        if inner.live.len() - inner.evicting >= self.max {
            let idlest = inner
                .live
                .values()
                .filter(|t| t.in_flight() == 0 && !t.evicting.load(Ordering::Acquire))
                .min_by_key(|t| t.idle_since.load(Ordering::Acquire))
                .cloned();
            let Some(idlest) = idlest else {
                return Admission::Full;
            };
            idlest.evicting.store(true, Ordering::Release);
            idlest.evicted.notify_one();
            inner.evicting += 1;
        }
        let id = inner.next;
        inner.next += 1;
        let track = Arc::new(Track::new(self.epoch));
        inner.live.insert(id, track.clone());
        Admission::Admitted(Slot {
            registry: self.clone(),
            id,
            track,
        })
    }

    /// Resolves once every connection has closed.
    pub async fn drained(&self) {
        loop {
            let empty = self.empty.notified();
            if self.lock().live.is_empty() {
                return;
            }
            empty.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 2,
        }
    }

    fn admitted(registry: &Arc<Registry>) -> Slot {
        match registry.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Full => panic!("refused"),
        }
    }

    #[test]
    fn a_connection_has_the_header_timeout_then_the_idle_timeout() {
        let registry = Registry::new(2);
        let slot = admitted(&registry);
        let header = slot.track.deadline(&limits()).unwrap();
        assert!(header <= Instant::now() + Duration::from_secs(10));
        let request = slot.track.begin();
        assert!(slot.track.deadline(&limits()).is_none(), "in flight");
        drop(request);
        let idle = slot.track.deadline(&limits()).unwrap();
        assert!(idle > Instant::now() + Duration::from_secs(50));
        // The first byte of the next request starts its header timeout.
        slot.track.received();
        let header = slot.track.deadline(&limits()).unwrap();
        assert!(header <= Instant::now() + Duration::from_secs(10));
    }

    #[test]
    fn at_the_cap_the_idlest_connection_makes_room_unless_all_are_busy() {
        let registry = Registry::new(2);
        let first = admitted(&registry);
        let second = admitted(&registry);
        // The second has just served a request: the first is the idler.
        drop(second.track.begin());
        second.track.idle_since.store(u64::MAX, Ordering::Release);
        let third = admitted(&registry);
        assert!(first.track.evicting.load(Ordering::Acquire));
        assert!(!second.track.evicting.load(Ordering::Acquire));
        drop(first);

        let _busy = (second.track.begin(), third.track.begin());
        assert!(matches!(registry.admit(), Admission::Full));
    }
}
