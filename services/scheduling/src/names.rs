//! Display names held in memory for the cards of ListCalls.
//!
//! Looked up per page, the names of a page's people were half of the
//! database's work for ListCalls. The database counts changes of names
//! (`directory_epoch`, migration 0011); the statement that reads a page
//! reads that count in its own snapshot, and names held here are used only
//! when they were read at the same count. So a card never shows a name that
//! was already changed when its call was read, whichever instance or
//! projection changed it, and the cache needs no messages between instances.
//! "No such participant" is never kept, so a new participant needs no count.

use std::sync::{Arc, Mutex};

use hashlink::LruCache;

use crate::mapping::Names;

/// Names as of one epoch of the directory, the most recently used kept.
pub struct NameCache {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The epoch the held names were read at; `None` before the first read.
    epoch: Option<i64>,
    /// Shared, so that a page takes its names without copying them.
    names: LruCache<Box<str>, Arc<str>>,
}

impl NameCache {
    /// At most `capacity` names (0: none kept, every page reads its names).
    pub fn new(capacity: usize) -> Self {
        NameCache {
            inner: Mutex::new(Inner {
                epoch: None,
                names: LruCache::new(capacity),
            }),
        }
    }

    /// The names of all of `ids` as of `epoch`, in the order of `ids`, or
    /// `None` when one of them is not held for that epoch.
    pub fn get(&self, epoch: i64, ids: &[&str]) -> Option<Vec<Arc<str>>> {
        let mut inner = self.lock();
        if inner.epoch != Some(epoch) {
            return None;
        }
        ids.iter().map(|&id| inner.names.get(id).cloned()).collect()
    }

    /// Keeps names read at `epoch`. Names of another epoch than the held
    /// ones replace them all: an older read may still be in flight when a
    /// newer one arrives, and the other way round, so whichever comes last
    /// wins, and a page is served from here only at that same epoch.
    pub fn put<'a, N: Into<Arc<str>>>(
        &self,
        epoch: i64,
        names: impl IntoIterator<Item = (&'a str, N)>,
    ) {
        let mut inner = self.lock();
        if inner.epoch != Some(epoch) {
            inner.names.clear();
            inner.epoch = Some(epoch);
        }
        if inner.names.capacity() == 0 {
            return;
        }
        for (id, name) in names {
            inner.names.insert(id.into(), name.into());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-changed
        // in a way that matters: at worst names are missing, and missing
        // names are read again.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The display names of one page's people, looked up by binary search: a
/// page has a few dozen, and this way it takes them from the cache without
/// hashing or copying any.
#[derive(Debug, Default)]
pub struct PageNames<'a> {
    /// Sorted, no duplicates; `names[i]` is the name of `ids[i]`.
    ids: Vec<&'a str>,
    names: Vec<Arc<str>>,
}

impl<'a> PageNames<'a> {
    /// `ids` sorted and without duplicates, `names` in the same order.
    pub fn from_sorted(ids: Vec<&'a str>, names: Vec<Arc<str>>) -> Self {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]));
        debug_assert_eq!(ids.len(), names.len());
        PageNames { ids, names }
    }

    /// Adds or replaces one person's name.
    pub fn insert(&mut self, id: &'a str, name: Arc<str>) {
        match self.ids.binary_search(&id) {
            Ok(i) => self.names[i] = name,
            Err(i) => {
                self.ids.insert(i, id);
                self.names.insert(i, name);
            }
        }
    }
}

impl Names for PageNames<'_> {
    fn name(&self, user_id: &str) -> Option<&str> {
        let i = self.ids.binary_search(&user_id).ok()?;
        Some(&self.names[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|&n| Arc::from(n)).collect()
    }

    #[test]
    fn nothing_is_held_before_the_first_read() {
        let cache = NameCache::new(10);
        assert_eq!(cache.get(0, &["ana"]), None);
    }

    #[test]
    fn names_read_at_an_epoch_serve_that_epoch() {
        let cache = NameCache::new(10);
        cache.put(3, [("ana", "Ana"), ("bo", "Bo")]);
        assert_eq!(cache.get(3, &["bo", "ana"]), Some(names(&["Bo", "Ana"])));
        assert_eq!(cache.get(3, &[]), Some(Vec::new()));
    }

    #[test]
    fn one_missing_name_misses_the_page() {
        let cache = NameCache::new(10);
        cache.put(3, [("ana", "Ana")]);
        assert_eq!(cache.get(3, &["ana", "cy"]), None);
    }

    #[test]
    fn names_of_another_epoch_are_not_served() {
        let cache = NameCache::new(10);
        cache.put(3, [("ana", "Ana")]);
        // A name changed since (4), and a statement from before the held
        // read (2) may have seen an older name than the one held.
        assert_eq!(cache.get(4, &["ana"]), None);
        assert_eq!(cache.get(2, &["ana"]), None);
    }

    #[test]
    fn a_read_at_another_epoch_replaces_every_held_name() {
        let cache = NameCache::new(10);
        cache.put(3, [("ana", "Ana"), ("bo", "Bo")]);
        cache.put(4, [("ana", "Anna")]);
        assert_eq!(cache.get(4, &["ana"]), Some(names(&["Anna"])));
        // Bo was read at 3: at 4 it must be read again.
        assert_eq!(cache.get(4, &["bo"]), None);
        assert_eq!(cache.get(3, &["ana"]), None);
        // A late read from before the change takes over until the next one.
        cache.put(3, [("ana", "Ana")]);
        assert_eq!(cache.get(4, &["ana"]), None);
        assert_eq!(cache.get(3, &["ana"]), Some(names(&["Ana"])));
    }

    #[test]
    fn the_least_recently_used_name_goes_first() {
        let cache = NameCache::new(2);
        cache.put(1, [("ana", "Ana"), ("bo", "Bo")]);
        assert!(cache.get(1, &["ana"]).is_some());
        cache.put(1, [("cy", "Cy")]);
        assert_eq!(cache.get(1, &["bo"]), None);
        assert!(cache.get(1, &["ana", "cy"]).is_some());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = NameCache::new(0);
        cache.put(1, [("ana", "Ana")]);
        assert_eq!(cache.get(1, &["ana"]), None);
    }

    #[test]
    fn a_page_finds_each_of_its_people_and_nobody_else() {
        let mut page = PageNames::from_sorted(vec!["ana", "cy"], names(&["Ana", "Cy"]));
        page.insert("bo", "Bo".into());
        page.insert("cy", "Cyd".into());
        assert_eq!(page.name("ana"), Some("Ana"));
        assert_eq!(page.name("bo"), Some("Bo"));
        assert_eq!(page.name("cy"), Some("Cyd"));
        assert_eq!(page.name("dee"), None);
        assert_eq!(PageNames::default().name("ana"), None);
    }
}
