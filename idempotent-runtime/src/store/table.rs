//! The memory store's table: for each key, an in-flight claim, a completed record, or the mark
//! of an attempt that did not complete. One map per shard, each behind its own lock, so a
//! claim, a completion and a replay each take one lock and one hash lookup.
//!
//! A shard keeps its entries in a slab, its completed records in least-recently-used order and
//! its release marks oldest first, both as lists threaded through the slab. Every claim also
//! sweeps a few slots: a claim whose lease lapsed becomes a release mark (its next claim is
//! [`Claim::Reacquired`]), and an expired record or mark is dropped, so nothing abandoned stays
//! in memory longer than one pass of the sweep over its shard.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use super::pages::{Kept, Pages};
use super::{Claim, FencingToken, Lookup, RecordKey};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// Slots each claim sweeps: a pass over a shard of `n` slots takes `n / SWEEP_STEP` claims.
const SWEEP_STEP: usize = 4;

/// The end of a list.
const NIL: u32 = u32::MAX;

/// The records and bytes of every shard of one store.
#[derive(Default)]
pub(super) struct Totals {
    pub(super) records: AtomicU64,
    pub(super) weight: AtomicU64,
}

/// What one shard holds for a key.
enum State {
    Claimed {
        token: FencingToken,
        fingerprint: Fingerprint,
        lease_until: Instant,
    },
    Completed {
        kept: Kept,
        expires_at: Instant,
        /// What the record weighs beside its page: its key and its place in the table (and its
        /// headers and body when it is kept whole).
        weight: u32,
    },
    /// An attempt started and did not complete (it was released, or its lease lapsed): the
    /// next claim is [`Claim::Reacquired`].
    Released { until: Instant },
}

struct Slot {
    key: RecordKey,
    state: State,
    /// Links of the list the slot is on: records (least recently used first) or release marks
    /// (oldest first). A claim is on no list.
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: Self = Self {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

#[derive(Clone, Copy)]
enum ListOf {
    Records,
    Released,
}

/// A record [`Shard::evict_one`] removed.
pub(super) enum Evicted {
    /// Before its deadline: a retry of this key will run again.
    Live(RecordKey),
    Expired,
}

/// Passes a [`RecordKey`]'s own hash through: it is already keyed, and computed once. Words
/// written after it (the flight map's fingerprint) are folded in with xor.
#[derive(Clone, Copy, Default)]
pub(crate) struct KeyHash;

pub(crate) struct KeyHasher(u64);

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `RecordKey` hashes through `write_u64` alone; other bytes are folded in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 ^= hash;
    }
}

/// One shard: a map from key to slot, the slots, and the two lists.
pub(super) struct Shard {
    /// Slot numbers by their key's hash: a removal finds its entry by slot number, without
    /// reading the key again.
    index: HashTable<u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    records: List,
    released: List,
    /// The most release marks this shard keeps, and for how long.
    released_kept: usize,
    remembered: Duration,
    sweep_at: usize,
    pages: Pages,
}

impl Shard {
    /// A shard of `share` bytes of the store's capacity.
    pub(super) fn new(share: u64, released_kept: usize, remembered: Duration) -> Self {
        Self {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            records: List::EMPTY,
            released: List::EMPTY,
            released_kept: released_kept.max(1),
            remembered,
            sweep_at: 0,
            pages: Pages::new(share),
        }
    }

    /// The live record of `key`, marked as just used.
    pub(super) fn record(&mut self, key: &RecordKey, now: Instant, totals: &Totals) -> Option<Arc<Record>> {
        let at = self.find(key)?;
        match &self.slot(at).state {
            State::Completed { expires_at, .. } if *expires_at > now => Some(self.touch(at, totals)),
            _ => None,
        }
    }

    /// Claims `key` as the [contract](super) defines it; `next_token` is called once the
    /// caller holds the key.
    pub(super) fn claim(
        &mut self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        now: Instant,
        lease_until: Instant,
        next_token: impl FnOnce() -> FencingToken,
        totals: &Totals,
    ) -> Claim {
        self.sweep(now, totals);
        let Some(at) = self.find(key) else {
            let token = next_token();
            let state = State::Claimed {
                token,
                fingerprint,
                lease_until,
            };
            self.insert(key.clone(), state, totals);
            return Claim::Acquired(token);
        };
        let attempted_before = match &self.slot(at).state {
            State::Claimed {
                fingerprint,
                lease_until,
                ..
            } if *lease_until > now => {
                return Claim::InFlight {
                    fingerprint: *fingerprint,
                }
            }
            State::Completed { expires_at, .. } if *expires_at > now => {
                return Claim::Completed(self.touch(at, totals))
            }
            // Expired: the key is forgotten, as if never used.
            State::Completed { .. } => false,
            State::Claimed { .. } | State::Released { .. } => true,
        };
        let token = next_token();
        let state = State::Claimed {
            token,
            fingerprint,
            lease_until,
        };
        self.replace(at, state, totals);
        match attempted_before {
            true => Claim::Reacquired(token),
            false => Claim::Acquired(token),
        }
    }

    /// Extends the claim `token` holds; `false` if it holds none.
    pub(super) fn renew(&mut self, key: &RecordKey, token: FencingToken, until: Instant) -> bool {
        let Some(at) = self.held_by(key, token) else {
            return false;
        };
        if let State::Claimed { lease_until, .. } = &mut self.slot(at).state {
            *lease_until = until;
        }
        true
    }

    /// Replaces the claim `token` holds with `record`, weighing `weight` bytes beside its page
    /// (and its headers and body if it cannot be packed); `false` if it holds none.
    pub(super) fn complete(
        &mut self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        expires_at: Instant,
        weight: u32,
        totals: &Totals,
    ) -> bool {
        let Some(at) = self.held_by(key, token) else {
            return false;
        };
        let kept = self.pages.pack(record, totals);
        let weight = weight.saturating_add(kept.unpaged_weight());
        let state = State::Completed {
            kept,
            expires_at,
            weight,
        };
        self.replace(at, state, totals);
        true
    }

    /// Replaces the claim `token` holds with a release mark; `false` if it holds none.
    pub(super) fn release(&mut self, key: &RecordKey, token: FencingToken, now: Instant, totals: &Totals) -> bool {
        let Some(at) = self.held_by(key, token) else {
            return false;
        };
        let until = now + self.remembered;
        self.replace(at, State::Released { until }, totals);
        true
    }

    pub(super) fn lookup(&mut self, key: &RecordKey, now: Instant, totals: &Totals) -> Lookup {
        let Some(at) = self.find(key) else {
            return Lookup::Absent;
        };
        match &self.slot(at).state {
            State::Claimed {
                fingerprint,
                lease_until,
                ..
            } if *lease_until > now => Lookup::InFlight {
                fingerprint: *fingerprint,
            },
            State::Completed { expires_at, .. } if *expires_at > now => Lookup::Completed(self.touch(at, totals)),
            _ => Lookup::Absent,
        }
    }

    /// Drops whatever the shard holds for `key`; `false` if it held nothing.
    pub(super) fn forget(&mut self, key: &RecordKey, totals: &Totals) -> bool {
        let Some(at) = self.find(key) else {
            return false;
        };
        self.remove(at, totals);
        true
    }

    /// Removes the least recently used record other than `spare`'s; `None` if there is none.
    pub(super) fn evict_one(&mut self, spare: Option<&RecordKey>, now: Instant, totals: &Totals) -> Option<Evicted> {
        let mut at = self.records.head;
        if at != NIL && spare.is_some_and(|spare| self.slot(at).key == *spare) {
            at = self.slot(at).next;
        }
        if at == NIL {
            return None;
        }
        let evicted = match self.slot(at).state {
            State::Completed { expires_at, .. } if expires_at > now => Evicted::Live(self.slot(at).key.clone()),
            _ => Evicted::Expired,
        };
        self.remove(at, totals);
        Some(evicted)
    }

    /// Whether `key` has a completed record, without using it.
    #[cfg(test)]
    pub(super) fn holds_record(&self, key: &RecordKey) -> bool {
        self.find(key).is_some_and(|at| {
            matches!(
                self.slots[at as usize],
                Some(Slot {
                    state: State::Completed { .. },
                    ..
                })
            )
        })
    }

    /// Keys held in any state, release marks included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of `key` if `token` holds its claim.
    fn held_by(&mut self, key: &RecordKey, token: FencingToken) -> Option<u32> {
        let at = self.find(key)?;
        match self.slot(at).state {
            State::Claimed { token: holder, .. } if holder == token => Some(at),
            _ => None,
        }
    }

    /// The slot number of `key`.
    fn find(&self, key: &RecordKey) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(key.hash, |&at| {
                slots[at as usize].as_ref().is_some_and(|slot| slot.key == *key)
            })
            .copied()
    }

    fn slot(&mut self, at: u32) -> &mut Slot {
        self.slots[at as usize]
            .as_mut()
            .expect("the index and the lists point at occupied slots only")
    }

    fn insert(&mut self, key: RecordKey, state: State, totals: &Totals) {
        let hash = key.hash;
        let slot = Slot {
            key,
            state,
            prev: NIL,
            next: NIL,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = Some(slot);
                at
            }
            None => {
                let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 entries in a shard");
                self.slots.push(Some(slot));
                at
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, at, |&at| hash_of(slots, at));
        self.link(at, totals);
    }

    /// Gives slot `at` a new state, moving it to the list of that state.
    fn replace(&mut self, at: u32, state: State, totals: &Totals) {
        self.unlink(at, totals);
        self.slot(at).state = state;
        self.link(at, totals);
    }

    fn remove(&mut self, at: u32, totals: &Totals) {
        self.unlink(at, totals);
        let slot = self.slots[at as usize].take().expect("an occupied slot");
        if let Ok(entry) = self.index.find_entry(slot.key.hash, |&entry| entry == at) {
            entry.remove();
        }
        self.free.push(at);
    }

    /// Puts slot `at` on the list of its state and counts its record.
    fn link(&mut self, at: u32, totals: &Totals) {
        match self.slot(at).state {
            State::Completed { weight, .. } => {
                totals.records.fetch_add(1, Ordering::Relaxed);
                totals.weight.fetch_add(u64::from(weight), Ordering::Relaxed);
                self.push_back(at, ListOf::Records);
            }
            State::Released { .. } => {
                self.push_back(at, ListOf::Released);
                if self.released.len > self.released_kept {
                    self.remove(self.released.head, totals);
                }
            }
            State::Claimed { .. } => {}
        }
    }

    /// Takes slot `at` off the list of its state and uncounts its record.
    fn unlink(&mut self, at: u32, totals: &Totals) {
        let slot = self.slots[at as usize].as_ref().expect("an occupied slot");
        match &slot.state {
            State::Completed { weight, kept, .. } => {
                totals.records.fetch_sub(1, Ordering::Relaxed);
                totals.weight.fetch_sub(u64::from(*weight), Ordering::Relaxed);
                self.pages.release(kept, totals);
                self.take_off(at, ListOf::Records);
            }
            State::Released { .. } => self.take_off(at, ListOf::Released),
            State::Claimed { .. } => {}
        }
    }

    /// Marks slot `at` (a record) as the most recently used, moving it to the page being
    /// filled; its record.
    fn touch(&mut self, at: u32, totals: &Totals) -> Arc<Record> {
        if self.records.tail != at {
            self.take_off(at, ListOf::Records);
            self.push_back(at, ListOf::Records);
        }
        let Some(Slot {
            state: State::Completed { kept, .. },
            ..
        }) = &mut self.slots[at as usize]
        else {
            unreachable!("touch is called on records only")
        };
        self.pages.refresh(kept, totals);
        kept.record()
    }

    /// Looks at the next few slots: a lapsed claim becomes a release mark, an expired record or
    /// mark is dropped.
    fn sweep(&mut self, now: Instant, totals: &Totals) {
        for _ in 0..SWEEP_STEP.min(self.slots.len()) {
            self.sweep_at = (self.sweep_at + 1) % self.slots.len();
            let at = self.sweep_at as u32;
            let Some(slot) = &self.slots[self.sweep_at] else {
                continue;
            };
            match slot.state {
                State::Claimed { lease_until, .. } if lease_until <= now => {
                    let until = now + self.remembered;
                    self.replace(at, State::Released { until }, totals);
                }
                State::Completed { expires_at: end, .. } | State::Released { until: end } if end <= now => {
                    self.remove(at, totals);
                }
                _ => {}
            }
        }
    }

    fn list(&mut self, list: ListOf) -> &mut List {
        match list {
            ListOf::Records => &mut self.records,
            ListOf::Released => &mut self.released,
        }
    }

    fn push_back(&mut self, at: u32, list: ListOf) {
        let tail = self.list(list).tail;
        let slot = self.slot(at);
        slot.prev = tail;
        slot.next = NIL;
        match tail {
            NIL => self.list(list).head = at,
            tail => self.slot(tail).next = at,
        }
        let list = self.list(list);
        list.tail = at;
        list.len += 1;
    }

    fn take_off(&mut self, at: u32, list: ListOf) {
        let slot = self.slot(at);
        let (prev, next) = (slot.prev, slot.next);
        slot.prev = NIL;
        slot.next = NIL;
        match prev {
            NIL => self.list(list).head = next,
            prev => self.slot(prev).next = next,
        }
        match next {
            NIL => self.list(list).tail = prev,
            next => self.slot(next).prev = prev,
        }
        self.list(list).len -= 1;
    }
}

/// The hash of the key in slot `at`, for the index to grow.
fn hash_of(slots: &[Option<Slot>], at: u32) -> u64 {
    slots[at as usize].as_ref().map_or(0, |slot| slot.key.hash)
}
