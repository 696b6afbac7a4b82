//! Keyed hash maps. Keys the peer chooses (fragment identities, neighbour addresses) are hashed
//! with a key derived from the stack's seed, so collisions cannot be aimed at from outside when the
//! seed is secret (the service draws it at start-up), and runs stay reproducible under test.

use std::collections::HashMap;

/// A hash map keyed with `ahash`.
pub type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// An empty map with room for `cap` entries, hashed with a key derived from `seed`.
pub fn map<K, V>(cap: usize, seed: u64) -> Map<K, V> {
    let s = ahash::RandomState::with_seeds(
        seed,
        seed ^ 0x243f_6a88_85a3_08d3,
        seed.rotate_left(17) ^ 0x1319_8a2e_0370_7344,
        !seed,
    );
    HashMap::with_capacity_and_hasher(cap, s)
}
