//! The static table (RFC 7541 Appendix A) and the dynamic table (RFC 7541
//! sections 2.3 and 4).
//!
//! Both tables share one index space (section 2.3.3): indices 1 to 61 name
//! static entries, and index 62 onwards names dynamic entries, newest first.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// RFC 7541 section 4.1: "The size of an entry is the sum of its name's length
/// in octets (as defined in Section 5.2), its value's length in octets, and
/// 32."
const ENTRY_OVERHEAD: usize = 32;

/// The number of entries in the static table.
pub(crate) const STATIC_LEN: usize = STATIC_TABLE.len();

/// The static table, RFC 7541 Appendix A. Index 1 is the first element.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The size of an entry with this name and value (RFC 7541 section 4.1).
pub(crate) fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len()
        .saturating_add(value.len())
        .saturating_add(ENTRY_OVERHEAD)
}

/// One dynamic table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: Bytes,
    pub(crate) value: Bytes,
}

impl Entry {
    fn size(&self) -> usize {
        entry_size(&self.name, &self.value)
    }
}

/// The dynamic table: a FIFO of entries whose total size never exceeds
/// `max_size`.
#[derive(Debug)]
pub(crate) struct DynamicTable {
    /// Newest entry at the front, so that `entries[i]` has dynamic index `i`.
    entries: VecDeque<Entry>,
    /// The sum of the sizes of all entries.
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    pub(crate) fn new(max_size: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The current maximum size.
    pub(crate) fn max_size(&self) -> usize {
        self.max_size
    }

    /// The sum of the sizes of all entries.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The entries, newest first.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Changes the maximum size, evicting entries as needed.
    ///
    /// RFC 7541 section 4.3: "Whenever the maximum size for the dynamic table
    /// is reduced, entries are evicted from the end of the dynamic table until
    /// the size of the dynamic table is less than or equal to the maximum
    /// size."
    pub(crate) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_until(max_size);
    }

    /// Adds an entry, evicting old ones to make room.
    ///
    /// RFC 7541 section 4.4: "It is not an error to attempt to add an entry
    /// that is larger than the maximum size; an attempt to add an entry larger
    /// than the maximum size causes the table to be emptied of all existing
    /// entries and results in an empty table."
    pub(crate) fn insert(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let entry = Entry {
            name: name.into(),
            value: value.into(),
        };
        let size = entry.size();
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_until(self.max_size - size);
        self.size += size;
        self.entries.push_front(entry);
    }

    /// Evicts the oldest entries until the table size is at most `target`.
    fn evict_until(&mut self, target: usize) {
        while self.size > target {
            let Some(oldest) = self.entries.pop_back() else {
                // Unreachable while `size` is kept in step with `entries`;
                // resetting keeps the invariant even if it were not.
                self.size = 0;
                return;
            };
            self.size -= oldest.size();
        }
    }

    /// Looks up an entry by its index in the combined index space (RFC 7541
    /// section 2.3.3). Index 0 and indices beyond both tables give `None`. The
    /// name and value are shared with the table, not copied: a static entry's
    /// are static, a dynamic entry's are reference-counted.
    pub(crate) fn get(&self, index: usize) -> Option<(Bytes, Bytes)> {
        if index == 0 {
            return None;
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
            return Some((
                Bytes::from_static(name.as_bytes()),
                Bytes::from_static(value.as_bytes()),
            ));
        }
        let entry = self.entries.get(index - 1 - STATIC_LEN)?;
        Some((entry.name.clone(), entry.value.clone()))
    }

    /// Finds the best index for a field in the combined index space.
    ///
    /// A full match (name and value) wins; otherwise the lowest index with the
    /// same name is returned, because it encodes in the fewest octets.
    pub(crate) fn find(&self, name: &[u8], value: &[u8]) -> Match {
        let mut name_index = None;
        if let Some((first, last)) = static_name(name) {
            for index in first..=last {
                if STATIC_TABLE[index - 1].1.as_bytes() == value {
                    return Match::Full(index);
                }
            }
            name_index = Some(first);
        }
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.name != name {
                continue;
            }
            let index = STATIC_LEN + 1 + i;
            if entry.value == value {
                return Match::Full(index);
            }
            name_index.get_or_insert(index);
        }
        match name_index {
            Some(index) => Match::Name(index),
            None => Match::None,
        }
    }
}

/// The 1-based indices of the static entries named `name` (the first and the
/// last: entries of one name are consecutive in the table), from a hash map of
/// the table's names instead of a scan of all 61 entries or a binary search's
/// string comparisons (an encoder looks up every header it writes).
fn static_name(name: &[u8]) -> Option<(usize, usize)> {
    type Names = HashMap<&'static [u8], (usize, usize), foldhash::fast::FixedState>;
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        let mut names = Names::default();
        for (i, &(n, _)) in STATIC_TABLE.iter().enumerate() {
            names
                .entry(n.as_bytes())
                .and_modify(|range| range.1 = i + 1)
                .or_insert((i + 1, i + 1));
        }
        names
    });
    names.get(name).copied()
}

/// The result of [`DynamicTable::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// An entry with the same name and value.
    Full(usize),
    /// An entry with the same name only.
    Name(usize),
    /// No entry with this name.
    None,
}

impl Match {
    /// The index of an entry with the same name, if any.
    pub(crate) fn name_index(self) -> Option<usize> {
        match self {
            Self::Full(index) | Self::Name(index) => Some(index),
            Self::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entry `index` as owned bytes, to compare with literals.
    fn at(table: &DynamicTable, index: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        table.get(index).map(|(n, v)| (n.to_vec(), v.to_vec()))
    }

    fn names(table: &DynamicTable) -> Vec<&[u8]> {
        table.entries().map(|e| &e.name[..]).collect()
    }

    #[test]
    fn static_table_matches_appendix_a_ends() {
        let table = DynamicTable::new(4096);
        assert_eq!(STATIC_LEN, 61);
        assert_eq!(at(&table, 1), Some((b":authority".to_vec(), b"".to_vec())));
        assert_eq!(at(&table, 2), Some((b":method".to_vec(), b"GET".to_vec())));
        assert_eq!(
            at(&table, 16),
            Some((b"accept-encoding".to_vec(), b"gzip, deflate".to_vec()))
        );
        assert_eq!(
            at(&table, 61),
            Some((b"www-authenticate".to_vec(), b"".to_vec()))
        );
    }

    /// `find` over the static table as a scan of every entry would answer.
    fn scan(name: &[u8], value: &[u8]) -> Match {
        let mut name_index = None;
        for (i, &(n, v)) in STATIC_TABLE.iter().enumerate() {
            if n.as_bytes() == name {
                if v.as_bytes() == value {
                    return Match::Full(i + 1);
                }
                name_index.get_or_insert(i + 1);
            }
        }
        name_index.map_or(Match::None, Match::Name)
    }

    #[test]
    fn static_lookups_answer_as_a_scan_of_the_table() {
        let table = DynamicTable::new(4096);
        let mut cases: Vec<(&[u8], &[u8])> = STATIC_TABLE
            .iter()
            .map(|&(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        // Known names with other values, and names the table lacks.
        cases.extend(
            STATIC_TABLE
                .iter()
                .map(|&(n, _)| (n.as_bytes(), &b"other"[..])),
        );
        cases.extend([
            (&b""[..], &b""[..]),
            (b":statu", b"200"),
            (b":statuses", b"200"),
            (b"te", b"trailers"),
            (b"zzz", b""),
            (b"\x00", b""),
        ]);
        for (name, value) in cases {
            assert_eq!(
                table.find(name, value),
                scan(name, value),
                "{name:?} {value:?}"
            );
        }
        // Every name of several entries answers its lowest index for an unknown
        // value: :method 2, :path 4, :scheme 6, :status 8.
        for (name, first) in [(":method", 2), (":path", 4), (":scheme", 6), (":status", 8)] {
            assert_eq!(table.find(name.as_bytes(), b"?"), Match::Name(first));
        }
    }

    #[test]
    fn index_zero_and_past_the_end_are_absent() {
        let mut table = DynamicTable::new(4096);
        assert_eq!(at(&table, 0), None);
        assert_eq!(at(&table, 62), None);
        table.insert(b"a".to_vec(), b"b".to_vec());
        assert_eq!(at(&table, 62), Some((b"a".to_vec(), b"b".to_vec())));
        assert_eq!(at(&table, 63), None);
        assert_eq!(at(&table, usize::MAX), None);
    }

    #[test]
    fn newest_entry_has_the_lowest_index() {
        let mut table = DynamicTable::new(4096);
        table.insert(b"first".to_vec(), Vec::new());
        table.insert(b"second".to_vec(), Vec::new());
        assert_eq!(at(&table, 62).map(|e| e.0), Some(b"second".to_vec()));
        assert_eq!(at(&table, 63).map(|e| e.0), Some(b"first".to_vec()));
    }

    #[test]
    fn insert_evicts_oldest_entries_to_fit() {
        // Each entry is 1 + 1 + 32 = 34 octets; three fit in 102 but not 101.
        let mut table = DynamicTable::new(101);
        table.insert(b"a".to_vec(), b"1".to_vec());
        table.insert(b"b".to_vec(), b"2".to_vec());
        assert_eq!(table.size(), 68);
        table.insert(b"c".to_vec(), b"3".to_vec());
        assert_eq!(names(&table), [&b"c"[..], b"b"]);
        assert_eq!(table.size(), 68);
    }

    #[test]
    fn entry_exactly_the_max_size_fits() {
        let mut table = DynamicTable::new(34);
        table.insert(b"a".to_vec(), b"1".to_vec());
        assert_eq!(table.size(), 34);
        assert_eq!(names(&table), [&b"a"[..]]);
    }

    #[test]
    fn entry_larger_than_the_table_empties_it() {
        let mut table = DynamicTable::new(100);
        table.insert(b"a".to_vec(), b"1".to_vec());
        table.insert(vec![b'x'; 60], vec![b'y'; 10]);
        assert_eq!(table.size(), 0);
        assert_eq!(table.entries().count(), 0);
    }

    #[test]
    fn shrinking_evicts_and_zero_empties() {
        let mut table = DynamicTable::new(4096);
        table.insert(b"a".to_vec(), b"1".to_vec());
        table.insert(b"b".to_vec(), b"2".to_vec());
        table.set_max_size(40);
        assert_eq!(names(&table), [&b"b"[..]]);
        table.set_max_size(0);
        assert_eq!(table.size(), 0);
        assert_eq!(table.entries().count(), 0);
        // A zero-sized table accepts nothing.
        table.insert(Vec::new(), Vec::new());
        assert_eq!(table.entries().count(), 0);
    }

    #[test]
    fn find_prefers_full_matches_then_lowest_name_index() {
        let mut table = DynamicTable::new(4096);
        assert_eq!(table.find(b":method", b"POST"), Match::Full(3));
        assert_eq!(table.find(b":method", b"PUT"), Match::Name(2));
        assert_eq!(table.find(b"x-custom", b"1"), Match::None);

        table.insert(b"x-custom".to_vec(), b"1".to_vec());
        table.insert(b":method".to_vec(), b"PUT".to_vec());
        assert_eq!(table.find(b":method", b"PUT"), Match::Full(62));
        assert_eq!(table.find(b"x-custom", b"1"), Match::Full(63));
        assert_eq!(table.find(b"x-custom", b"2"), Match::Name(63));
        assert_eq!(table.find(b":method", b"PATCH"), Match::Name(2));
    }
}
