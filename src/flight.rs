//! Single-flight table: concurrent misses for the same key share one backend call.
//!
//! Pure and generic so it can be tested without Redis. The first asker of a key becomes the
//! leader (it starts the backend call); later askers join as followers. Whoever finishes
//! the call takes every waiter out at once with [`SingleFlight::finish`].

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// No call was in flight: the caller must start one.
    Leader,
    /// A call is already in flight; the waiter will be handed back by `finish`.
    Follower,
}

pub struct SingleFlight<K, W> {
    flights: HashMap<K, Vec<W>>,
}

impl<K: Eq + Hash, W> Default for SingleFlight<K, W> {
    fn default() -> Self {
        Self {
            flights: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, W> SingleFlight<K, W> {
    pub fn is_in_flight(&self, key: &K) -> bool {
        self.flights.contains_key(key)
    }

    /// Adds `waiter` under `key`, creating the flight if there was none.
    pub fn join(&mut self, key: K, waiter: W) -> Joined {
        match self.flights.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.get_mut().push(waiter);
                Joined::Follower
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(vec![waiter]);
                Joined::Leader
            }
        }
    }

    /// Ends the flight for `key` and returns everyone who waited on it (leader first).
    pub fn finish(&mut self, key: &K) -> Vec<W> {
        self.flights.remove(key).unwrap_or_default()
    }

    /// Opens a flight with no waiter (a background refresh); false if one is in flight.
    pub fn open(&mut self, key: K) -> bool {
        match self.flights.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Vec::new());
                true
            }
        }
    }

    /// Takes out the waiters of `key` but keeps the flight: later askers still join it.
    pub fn drain(&mut self, key: &K) -> Vec<W> {
        self.flights
            .get_mut(key)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Takes out every waiter for which `expired` is true, keeping the flights themselves: a
    /// call whose waiters all gave up still finishes and stores its answer.
    pub fn take_waiters_where(&mut self, mut expired: impl FnMut(&W) -> bool) -> Vec<W> {
        let mut out = Vec::new();
        for waiters in self.flights.values_mut() {
            let mut i = 0;
            while i < waiters.len() {
                if expired(&waiters[i]) {
                    out.push(waiters.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    /// Number of distinct calls in flight.
    pub fn len(&self) -> usize {
        self.flights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    /// Number of waiters over all flights.
    pub fn waiters(&self) -> usize {
        self.flights.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_leads_then_followers_share() {
        let mut t = SingleFlight::default();
        assert_eq!(t.join("k", 1), Joined::Leader);
        assert_eq!(t.join("k", 2), Joined::Follower);
        assert_eq!(t.join("k", 3), Joined::Follower);
        assert!(t.is_in_flight(&"k"));
        assert_eq!((t.len(), t.waiters()), (1, 3));
        assert_eq!(t.finish(&"k"), vec![1, 2, 3]);
        assert!(t.is_empty());
        assert_eq!(t.waiters(), 0);
    }

    #[test]
    fn keys_are_independent() {
        let mut t = SingleFlight::default();
        assert_eq!(t.join("a", 1), Joined::Leader);
        assert_eq!(t.join("b", 2), Joined::Leader);
        assert_eq!(t.finish(&"a"), vec![1]);
        assert!(t.is_in_flight(&"b"));
        assert!(!t.is_in_flight(&"a"));
    }

    #[test]
    fn after_finish_the_next_asker_leads_again() {
        let mut t = SingleFlight::default();
        t.join("k", 1);
        t.finish(&"k");
        assert_eq!(t.join("k", 2), Joined::Leader);
    }

    #[test]
    fn expired_waiters_leave_but_the_flight_stays() {
        let mut t = SingleFlight::default();
        t.join("a", 1);
        t.join("a", 2);
        t.join("b", 3);
        let mut gone = t.take_waiters_where(|w| *w != 2);
        gone.sort();
        assert_eq!(gone, vec![1, 3]);
        // "b" has no waiters left but its call is still in flight: a new asker follows it.
        assert!(t.is_in_flight(&"b"));
        assert_eq!(t.join("b", 4), Joined::Follower);
        assert_eq!(t.finish(&"a"), vec![2]);
        assert_eq!(t.finish(&"b"), vec![4]);
        assert!(t.take_waiters_where(|_| true).is_empty());
    }

    #[test]
    fn an_opened_flight_takes_followers() {
        let mut t = SingleFlight::default();
        assert!(t.open("k"));
        assert!(!t.open("k"));
        assert_eq!(t.join("k", 1), Joined::Follower);
        assert_eq!(t.finish(&"k"), vec![1]);
        assert!(t.open("k"));
    }

    #[test]
    fn drain_keeps_the_flight_open() {
        let mut t = SingleFlight::default();
        t.join("k", 1);
        t.join("k", 2);
        assert_eq!(t.drain(&"k"), vec![1, 2]);
        assert!(t.is_in_flight(&"k"));
        assert_eq!(t.join("k", 3), Joined::Follower);
        assert_eq!(t.finish(&"k"), vec![3]);
        assert!(t.drain(&"nope").is_empty());
    }

    #[test]
    fn finishing_an_unknown_key_is_empty() {
        let mut t: SingleFlight<&str, i32> = SingleFlight::default();
        assert!(t.finish(&"nope").is_empty());
    }
}
