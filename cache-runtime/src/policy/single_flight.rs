//! In-process single flight: concurrent misses of one key share one run of
//! the body.
//!
//! The first caller becomes the leader; later callers follow and receive the
//! leader's result as the encoded value it stored (bytes are cheap to share
//! and every stored type can be decoded, while the return type need not be
//! `Clone`). A leader whose future is dropped releases its followers: they
//! see the flight abandoned and start again, one of them leading.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;

#[derive(Debug, Clone)]
enum State {
    Running,
    /// `Some`: the encoded value, safe to return to every follower. `None`:
    /// followers run the body themselves (the leader's result was an error,
    /// or was not stored, or could not be trusted after a lost lease).
    Done(Option<Bytes>),
}

/// The flights of one cache, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<State>>>,
}

/// What a caller is in a flight.
pub(crate) enum Role {
    Leader(Leader),
    Follower(Follower),
}

/// Leads a flight; dropping it without [`Leader::finish`] abandons the flight.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: String,
    tx: watch::Sender<State>,
}

pub(crate) struct Follower {
    rx: watch::Receiver<State>,
}

/// How a follower's wait ended.
pub(crate) enum Outcome {
    /// The leader's shared value, or `None` to run the body alone.
    Done(Option<Bytes>),
    /// The leader was dropped (cancelled) before finishing: start again.
    Abandoned,
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<State>>> {
        // The map is left consistent by every critical section, so a panic
        // elsewhere while it was held does not invalidate it.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut map = self.lock();
        if let Some(rx) = map.get(key) {
            return Role::Follower(Follower { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(State::Running);
        map.insert(key.to_owned(), rx);
        Role::Leader(Leader {
            flights: Arc::clone(self),
            key: key.to_owned(),
            tx,
        })
    }

    /// Starts a flight for `key` unless one is running (a refresh does not
    /// wait for another one: it serves the value it has).
    pub fn try_lead(self: &Arc<Self>, key: &str) -> Option<Leader> {
        match self.join(key) {
            Role::Leader(leader) => Some(leader),
            Role::Follower(_) => None,
        }
    }

    /// How many flights are running (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Leader {
    /// Ends the flight, handing `shared` to every follower.
    pub fn finish(self, shared: Option<Bytes>) {
        // Send before leaving the map: a caller arriving in between still
        // gets the result instead of starting a flight of its own.
        self.tx.send_replace(State::Done(shared));
        // Drop removes the entry.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
        // The sender drops with `self`: followers still waiting on `Running`
        // see the channel closed and start again.
    }
}

impl Follower {
    pub async fn wait(mut self) -> Outcome {
        loop {
            if let State::Done(shared) = &*self.rx.borrow_and_update() {
                return Outcome::Done(shared.clone());
            }
            if self.rx.changed().await.is_err() {
                return match &*self.rx.borrow() {
                    State::Done(shared) => Outcome::Done(shared.clone()),
                    State::Running => Outcome::Abandoned,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(role: Role) -> Leader {
        match role {
            Role::Leader(l) => l,
            Role::Follower(_) => panic!("expected to lead"),
        }
    }

    fn follower(role: Role) -> Follower {
        match role {
            Role::Follower(f) => f,
            Role::Leader(_) => panic!("expected to follow"),
        }
    }

    #[tokio::test]
    async fn followers_get_the_leaders_value() {
        let flights = Arc::new(Flights::default());
        let lead = leader(flights.join("k"));
        let a = follower(flights.join("k"));
        let b = follower(flights.join("k"));
        assert!(flights.try_lead("k").is_none());
        let waits = tokio::spawn(async move { (a.wait().await, b.wait().await) });
        tokio::task::yield_now().await;
        lead.finish(Some(Bytes::from_static(b"42")));
        let (a, b) = waits.await.unwrap();
        for outcome in [a, b] {
            assert!(matches!(outcome, Outcome::Done(Some(v)) if v == "42"));
        }
        assert_eq!(flights.len(), 0, "a finished flight leaves the map");
        assert!(flights.try_lead("k").is_some(), "the next miss leads again");
    }

    #[tokio::test]
    async fn a_dropped_leader_abandons_the_flight() {
        let flights = Arc::new(Flights::default());
        let lead = leader(flights.join("k"));
        let f = follower(flights.join("k"));
        let wait = tokio::spawn(f.wait());
        tokio::task::yield_now().await;
        drop(lead);
        assert!(matches!(wait.await.unwrap(), Outcome::Abandoned));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_late_leader_drop_does_not_remove_a_newer_flight() {
        let flights = Arc::new(Flights::default());
        let first = leader(flights.join("k"));
        // Simulate the first flight having left the map (finished elsewhere).
        flights.lock().remove("k");
        let second = leader(flights.join("k"));
        drop(first);
        assert_eq!(flights.len(), 1, "the second flight is still registered");
        assert!(matches!(flights.join("k"), Role::Follower(_)));
        second.finish(None);
    }

    #[tokio::test]
    async fn keys_are_independent() {
        let flights = Arc::new(Flights::default());
        let _a = leader(flights.join("a"));
        let _b = leader(flights.join("b"));
        assert_eq!(flights.len(), 2);
    }
}
