//! The slots of keys asked for lately, found without asking moka: a hit on a key placed here
//! costs a hash, one lock-free load and a comparison, where moka's lookup also records the
//! read for its eviction policy in a queue every worker writes (about a thousand instructions
//! and a contended cache line a hit; `BENCHMARKS.md`, the hit path).
//!
//! Placed by the key's hash, [`PLACES`] places. A key takes a place that is free (never
//! taken, or its key left the cache) and keeps it until its key leaves; a key that finds its
//! place taken goes to moka, as every key did before, and costs nothing more than the look.
//! So keys asked for at random never replace each other (no allocation per request), and
//! the memory is bounded. Housekeeping frees the places of keys that left, and tells moka of
//! the reads it did not see (a placed key is a used key, and must not look idle to moka's
//! eviction when the cache is full).

use std::hash::BuildHasher as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::{Slot, Slots};
use crate::upstream::KeyParts;

/// How many keys the front holds at most.
const PLACES: usize = 256;

/// See the module. A place holds a slot, which knows its key.
pub(super) struct Front {
    places: Box<[ArcSwapOption<Slot>]>,
    hasher: foldhash::fast::RandomState,
}

impl Front {
    pub(super) fn new() -> Self {
        Front {
            places: (0..PLACES).map(|_| ArcSwapOption::empty()).collect(),
            hasher: Default::default(),
        }
    }

    fn place(&self, key: &KeyParts<'_>) -> &ArcSwapOption<Slot> {
        let hash = self.hasher.hash_one(key);
        // The modulo of a power of two: the low bits, which foldhash mixes well.
        &self.places[(hash as usize) % PLACES]
    }

    /// The slot of `key`, if it is placed and has not left the cache.
    pub(super) fn get(&self, key: &KeyParts<'_>) -> Option<Arc<Slot>> {
        let placed = self.place(key).load();
        placed
            .as_ref()
            .filter(|slot| !slot.left.load(Ordering::Relaxed) && slot.key.parts() == *key)
            .cloned()
    }

    /// Places `key` (found in moka, or just made) if its place is free.
    pub(super) fn offer(&self, key: &KeyParts<'_>, slot: &Arc<Slot>) {
        let place = self.place(key);
        let free = place
            .load()
            .as_ref()
            .is_none_or(|p| p.left.load(Ordering::Relaxed));
        if free && !slot.left.load(Ordering::Relaxed) {
            place.store(Some(slot.clone()));
        }
    }

    /// Housekeeping: frees the places of keys that left, and reads the others in moka, so
    /// its eviction policy counts them as used.
    pub(super) fn sweep(&self, slots: &Slots) {
        for place in self.places.iter() {
            let current = place.load_full();
            let Some(placed) = current.as_ref() else {
                continue;
            };
            if placed.left.load(Ordering::Relaxed) {
                place.compare_and_swap(&current, None);
            } else {
                let _ = slots.get(&placed.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::CloudName;

    fn parts(resource: &str) -> KeyParts<'_> {
        KeyParts {
            cloud: CloudName::Public,
            tenant: "t",
            client_id: "c",
            resource,
            capabilities: None,
            source: "default",
            home: false,
            shared: None,
        }
    }

    fn slot_of(resource: &str) -> Arc<Slot> {
        Arc::new(Slot::new(parts(resource).to_key()))
    }

    #[test]
    fn a_placed_key_is_found_until_it_leaves() {
        let front = Front::new();
        let slot = slot_of("a");
        assert!(front.get(&parts("a")).is_none());
        front.offer(&parts("a"), &slot);
        let found = front.get(&parts("a")).expect("placed");
        assert!(Arc::ptr_eq(&found, &slot));
        assert!(
            front.get(&parts("b")).is_none(),
            "another key is not this one"
        );
        // Evicted: passed over at once, before housekeeping frees the place.
        slot.evicted();
        assert!(front.get(&parts("a")).is_none());
        let slots: Slots =
            moka::sync::Cache::builder().build_with_hasher(foldhash::fast::RandomState::default());
        front.sweep(&slots);
        assert!(
            front.place(&parts("a")).load().is_none(),
            "the place is freed"
        );
        let again = slot_of("a");
        front.offer(&parts("a"), &again);
        assert!(Arc::ptr_eq(&front.get(&parts("a")).unwrap(), &again));
        // A slot that has left is never placed.
        let gone = slot_of("z");
        gone.evicted();
        front.offer(&parts("z"), &gone);
        assert!(front.get(&parts("z")).is_none());
    }

    #[test]
    fn a_taken_place_is_not_given_to_another_key() {
        let front = Front::new();
        let resources: Vec<String> = (0..10_000).map(|i| format!("https://r{i}")).collect();
        let first = &resources[0];
        let other = resources[1..]
            .iter()
            .find(|r| std::ptr::eq(front.place(&parts(r)), front.place(&parts(first))))
            .expect("two keys share a place");
        let (a, b) = (slot_of(first), slot_of(other));
        front.offer(&parts(first), &a);
        front.offer(&parts(other), &b);
        assert!(
            front.get(&parts(other)).is_none(),
            "it goes to moka instead"
        );
        assert!(Arc::ptr_eq(&front.get(&parts(first)).unwrap(), &a));
        // Once the holder leaves, the place is free for the other.
        a.evicted();
        front.offer(&parts(other), &b);
        assert!(Arc::ptr_eq(&front.get(&parts(other)).unwrap(), &b));
    }
}
