//! In-process single flight: concurrent misses of one key share one run of
//! the body.
//!
//! The first caller becomes the leader; later callers follow and receive the
//! leader's result as the encoded value it stored (bytes are cheap to share
//! and every stored type can be decoded, while the return type need not be
//! `Clone`). A leader whose future is dropped releases its followers: they
//! see the flight abandoned and start again, one of them leading.
//!
//! **Read-after-invalidate.** A follower may only be handed a value that
//! was confirmed *after it joined*: a caller that begins after an
//! invalidation returned must not receive a result that the invalidation
//! already removed (a fill whose reply was slow to come back) or that a
//! body computed before it. Every join and every confirming step of the
//! leader draws a number from one per-cache sequence ([`Stamp`]); the
//! leader finishes with the stamp drawn just before the step that
//! confirmed its result (the fill it sent, the lease poll that saw another
//! process's fill, or, when nothing can confirm it, the start of its body).
//! A follower that joined after that stamp is [`Outcome::Late`]: it looks
//! the key up again instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;

#[derive(Debug, Clone)]
enum State {
    Running,
    /// `Some`: the encoded value, safe to return to every follower that
    /// joined before `confirmed`. `None`: followers run the body themselves
    /// (the leader's result was an error, or was not stored).
    Done {
        shared: Option<Bytes>,
        confirmed: Stamp,
    },
}

/// A point in a cache's sequence of joins and confirmations: `a < b` means
/// `a` was drawn first, so whatever was sent after drawing `b` reached the
/// store after `a` was drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

/// The flights of one cache, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Slot>>,
    /// The sequence [`Stamp`]s are drawn from.
    clock: AtomicU64,
}

/// The flights of one key: the one running, and the one queued behind it.
#[derive(Debug)]
struct Slot {
    current: watch::Receiver<State>,
    /// The current flight's body started with nothing to confirm its result
    /// afterwards: [`Flights::join_queued`] callers queue behind it.
    started: bool,
    /// A flight waiting for the current one to end before its body runs.
    next: Option<watch::Receiver<State>>,
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
    /// A queued flight: the flight to wait for before running.
    after: Option<watch::Receiver<State>>,
}

pub(crate) struct Follower {
    rx: watch::Receiver<State>,
    joined: Stamp,
}

/// How a follower's wait ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The leader's shared value, or `None` to run the body alone.
    Done(Option<Bytes>),
    /// The leader's value was confirmed before this follower joined: it
    /// may predate an invalidation that returned before this call began.
    /// Look the key up again.
    Late,
    /// The leader was dropped (cancelled) before finishing: start again.
    Abandoned,
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // The map is left consistent by every critical section, so a panic
        // elsewhere while it was held does not invalidate it.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stamp(&self) -> Stamp {
        Stamp(self.clock.fetch_add(1, SeqCst))
    }

    fn follow(&self, rx: &watch::Receiver<State>) -> Role {
        Role::Follower(Follower {
            rx: rx.clone(),
            joined: self.stamp(),
        })
    }

    fn lead(
        self: &Arc<Self>,
        key: &str,
        after: Option<watch::Receiver<State>>,
    ) -> (Role, watch::Receiver<State>) {
        let (tx, rx) = watch::channel(State::Running);
        let leader = Leader {
            flights: Arc::clone(self),
            key: key.to_owned(),
            tx,
            after,
        };
        (Role::Leader(leader), rx)
    }

    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut map = self.lock();
        if let Some(slot) = map.get(key) {
            return self.follow(&slot.current);
        }
        let (role, rx) = self.lead(key, None);
        map.insert(
            key.to_owned(),
            Slot {
                current: rx,
                started: false,
                next: None,
            },
        );
        role
    }

    /// Joins the flight for `key` whose body has not started yet: the
    /// current one, else the one queued behind it (or queues one, whose
    /// leader must [`Leader::ready`] first). For results nothing confirms
    /// after the body started (the store did not answer): each body run is
    /// shared only with callers that began before it, and callers that come
    /// later share the next run instead of each running their own.
    pub fn join_queued(self: &Arc<Self>, key: &str) -> Role {
        let mut map = self.lock();
        let Some(slot) = map.get_mut(key) else {
            drop(map);
            return self.join(key);
        };
        if !slot.started {
            return self.follow(&slot.current);
        }
        if let Some(next) = &slot.next {
            return self.follow(next);
        }
        let (role, rx) = self.lead(key, Some(slot.current.clone()));
        slot.next = Some(rx);
        role
    }

    /// Starts a flight for `key` unless one is running (a refresh does not
    /// wait for another one: it serves the value it has).
    pub fn try_lead(self: &Arc<Self>, key: &str) -> Option<Leader> {
        match self.join(key) {
            Role::Leader(leader) => Some(leader),
            Role::Follower(_) => None,
        }
    }

    /// How many keys have flights (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Leader {
    /// Draws a stamp: call it just before sending the command that will
    /// confirm the result.
    pub fn stamp(&self) -> Stamp {
        self.flights.stamp()
    }

    /// Draws the stamp of a body start that nothing will confirm later:
    /// from now on, [`Flights::join_queued`] callers queue behind this flight.
    pub fn body_started(&self) -> Stamp {
        let mut map = self.flights.lock();
        if let Some(slot) = map.get_mut(&self.key)
            && slot.current.same_channel(&self.tx.subscribe())
        {
            slot.started = true;
        }
        self.flights.stamp()
    }

    /// A queued flight waits here for the flight ahead of it to end (and
    /// to make this one current).
    pub async fn ready(&mut self) {
        if let Some(mut ahead) = self.after.take() {
            // Closed when the leader ahead is dropped, after it promoted us.
            while ahead.changed().await.is_ok() {}
        }
    }

    /// Ends the flight, handing `shared` to every follower that joined
    /// before `confirmed` (later ones look the key up again).
    pub fn finish(self, shared: Option<Bytes>, confirmed: Stamp) {
        // Send before leaving the map: a caller arriving in between still
        // gets the result (or is told it is late) instead of starting a
        // flight of its own.
        self.tx.send_replace(State::Done { shared, confirmed });
        // Drop removes the entry.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        let ours = self.tx.subscribe();
        let Some(slot) = map.get_mut(&self.key) else {
            return;
        };
        if slot.current.same_channel(&ours) {
            // The queued flight (if any) becomes the current one.
            match slot.next.take() {
                Some(next) => {
                    slot.current = next;
                    slot.started = false;
                }
                None => {
                    map.remove(&self.key);
                }
            }
        } else if slot
            .next
            .as_ref()
            .is_some_and(|next| next.same_channel(&ours))
        {
            slot.next = None;
        }
        // The sender drops with `self`: followers still waiting on `Running`
        // see the channel closed and start again, and a flight queued
        // behind this one runs.
    }
}

impl Follower {
    pub async fn wait(mut self) -> Outcome {
        loop {
            if let State::Done { shared, confirmed } = &*self.rx.borrow_and_update() {
                return outcome(self.joined, shared, *confirmed);
            }
            if self.rx.changed().await.is_err() {
                return match &*self.rx.borrow() {
                    State::Done { shared, confirmed } => outcome(self.joined, shared, *confirmed),
                    State::Running => Outcome::Abandoned,
                };
            }
        }
    }
}

/// What a follower that joined at `joined` makes of the leader's result.
fn outcome(joined: Stamp, shared: &Option<Bytes>, confirmed: Stamp) -> Outcome {
    match shared {
        Some(_) if joined > confirmed => Outcome::Late,
        shared => Outcome::Done(shared.clone()),
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
        let confirmed = lead.stamp();
        lead.finish(Some(Bytes::from_static(b"42")), confirmed);
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
        let confirmed = second.stamp();
        second.finish(None, confirmed);
    }

    #[tokio::test]
    async fn a_follower_that_joined_after_the_confirmation_is_late() {
        let flights = Arc::new(Flights::default());
        let lead = leader(flights.join("k"));
        let early = follower(flights.join("k"));
        // The leader sends its fill now; its reply is slow to come back.
        let confirmed = lead.stamp();
        let late = follower(flights.join("k"));
        let waits = tokio::spawn(async move { (early.wait().await, late.wait().await) });
        tokio::task::yield_now().await;
        lead.finish(Some(Bytes::from_static(b"old")), confirmed);
        let (early, late) = waits.await.unwrap();
        assert!(
            matches!(early, Outcome::Done(Some(ref v)) if v == "old"),
            "{early:?}"
        );
        assert!(matches!(late, Outcome::Late), "{late:?}");
    }

    #[tokio::test]
    async fn callers_that_come_after_an_unconfirmed_body_started_share_the_next_run() {
        let flights = Arc::new(Flights::default());
        let first = leader(flights.join_queued("k"));
        let early = follower(flights.join_queued("k"));
        let started = first.body_started();
        // The body runs: later callers queue behind it.
        let mut next = leader(flights.join_queued("k"));
        let queued = follower(flights.join_queued("k"));
        // A plain join still follows the running flight (and will be late).
        let plain = follower(flights.join("k"));
        let ready = tokio::spawn(async move {
            next.ready().await;
            next
        });
        tokio::task::yield_now().await;
        assert!(
            !ready.is_finished(),
            "the queued flight waits for the running one"
        );
        first.finish(Some(Bytes::from_static(b"1")), started);
        assert!(matches!(early.wait().await, Outcome::Done(Some(_))));
        assert!(matches!(plain.wait().await, Outcome::Late));
        let next = ready.await.unwrap();
        // The queued flight is the current one now.
        assert!(matches!(flights.join_queued("k"), Role::Follower(_)));
        let started = next.body_started();
        next.finish(Some(Bytes::from_static(b"2")), started);
        assert!(matches!(queued.wait().await, Outcome::Done(Some(v)) if v == "2"));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_result_not_shared_reaches_late_followers_too() {
        // `None` sends every follower to its own body: that body starts
        // after the follower began, so lateness does not matter.
        let flights = Arc::new(Flights::default());
        let lead = leader(flights.join("k"));
        let confirmed = lead.stamp();
        let late = follower(flights.join("k"));
        lead.finish(None, confirmed);
        assert!(matches!(late.wait().await, Outcome::Done(None)));
    }

    #[tokio::test]
    async fn keys_are_independent() {
        let flights = Arc::new(Flights::default());
        let _a = leader(flights.join("a"));
        let _b = leader(flights.join("b"));
        assert_eq!(flights.len(), 2);
    }
}
