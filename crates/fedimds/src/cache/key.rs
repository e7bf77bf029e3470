//! Looking a slot up by a key's borrowed parts: moka finds an entry by any `Q` the key type
//! borrows as (`K: Borrow<Q>`), and a [`TokenKey`] cannot borrow as a struct of references,
//! so both borrow as a trait object that yields the parts. Equal parts hash and compare
//! equal on either side ([`TokenKey`]'s `Hash` and `Eq` are its parts'). A hit then builds no
//! key: no allocation for the resource, no reference counts of the shared tenant, app and
//! source names touched (each a cache line every core writes).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use crate::upstream::{KeyParts, TokenKey};

/// Anything that has a cache key's parts.
pub(super) trait AsParts {
    fn parts(&self) -> KeyParts<'_>;
}

impl AsParts for TokenKey {
    fn parts(&self) -> KeyParts<'_> {
        TokenKey::parts(self)
    }
}

impl AsParts for KeyParts<'_> {
    fn parts(&self) -> KeyParts<'_> {
        *self
    }
}

impl<'a> Borrow<dyn AsParts + 'a> for TokenKey {
    fn borrow(&self) -> &(dyn AsParts + 'a) {
        self
    }
}

impl Hash for dyn AsParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn AsParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AsParts + '_ {}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher as _;

    use super::*;
    use crate::cloud::CloudName;

    #[test]
    fn borrowed_parts_find_the_owned_key() {
        let parts = KeyParts {
            cloud: CloudName::Public,
            tenant: "t",
            client_id: "c",
            resource: "https://r.example",
            capabilities: Some("cp1"),
            source: "default",
            home: false,
            shared: None,
        };
        let key = parts.to_key();
        let hasher = std::collections::hash_map::RandomState::new();
        let by_parts: &dyn AsParts = &parts;
        let by_key: &dyn AsParts = key.borrow();
        assert_eq!(hasher.hash_one(by_parts), hasher.hash_one(&key));
        assert!(by_parts == by_key);
        let cache = moka::sync::Cache::new(10);
        cache.insert(key.clone(), 1);
        assert_eq!(cache.get(by_parts), Some(1));
        // Any part that differs is another key.
        let other = KeyParts {
            capabilities: None,
            ..parts
        };
        assert_eq!(cache.get(&other as &dyn AsParts), None);
        let other = KeyParts {
            home: true,
            ..parts
        };
        assert_eq!(cache.get(&other as &dyn AsParts), None);
    }

    #[test]
    fn a_new_key_shares_the_targets_names_and_they_are_no_part_of_it() {
        use crate::upstream::SharedNames;
        let names = SharedNames {
            tenant: "t".into(),
            client_id: "c".into(),
            source: "default".into(),
        };
        let parts = KeyParts {
            cloud: CloudName::Public,
            tenant: "t",
            client_id: "c",
            resource: "https://r.example",
            capabilities: None,
            source: "default",
            home: false,
            shared: Some(&names),
        };
        let key = parts.to_key();
        assert!(std::sync::Arc::ptr_eq(&key.tenant, &names.tenant));
        assert!(std::sync::Arc::ptr_eq(&key.client_id, &names.client_id));
        assert!(std::sync::Arc::ptr_eq(&key.source, &names.source));
        // A tenant the caller named (tenant_id) is its own.
        let other = KeyParts {
            tenant: "u",
            ..parts
        }
        .to_key();
        assert_eq!(&*other.tenant, "u");
        assert!(std::sync::Arc::ptr_eq(&other.client_id, &names.client_id));
        // Where the names came from makes no other key.
        let hasher = std::collections::hash_map::RandomState::new();
        let unshared = KeyParts {
            shared: None,
            ..parts
        };
        assert!(parts == unshared);
        assert_eq!(hasher.hash_one(parts), hasher.hash_one(unshared));
        assert_eq!(key, unshared.to_key());
    }
}
