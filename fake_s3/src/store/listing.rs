//! ListObjects(V2) over keys in byte order: prefix, delimiter (common
//! prefixes), a start marker, and a page size. Pure: a function of the
//! keys and the query.

use std::sync::Arc;

use super::ObjectMeta;

#[derive(Debug, Clone, Default)]
pub struct ListingQuery<'a> {
    pub prefix: &'a str,
    /// Empty means none.
    pub delimiter: &'a str,
    /// List only entries after this key or common prefix.
    pub after: Option<&'a str>,
    /// Keys plus common prefixes on one page.
    pub max_keys: usize,
}

/// One page: objects and common prefixes (each in order), whether more
/// follow, and the last entry returned (the marker of the next page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<Arc<ObjectMeta>>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    pub last: Option<String>,
}

/// Lists `entries` (in key order) per `query`.
pub fn list<'a>(entries: impl Iterator<Item = (&'a str, &'a Arc<ObjectMeta>)>, query: &ListingQuery<'_>) -> Listing {
    let mut listing = Listing::default();
    let mut count = 0;
    for (key, meta) in entries {
        if query.after.is_some_and(|after| key <= after) {
            continue;
        }
        if !key.starts_with(query.prefix) {
            if key > query.prefix {
                break;
            }
            continue;
        }
        let rest = &key[query.prefix.len()..];
        let common = (!query.delimiter.is_empty())
            .then(|| rest.find(query.delimiter))
            .flatten()
            .map(|at| &key[..query.prefix.len() + at + query.delimiter.len()]);
        match common {
            Some(common) => {
                // Keys under a common prefix already returned (on this page
                // or as the marker of the previous one) are rolled into it.
                if listing.prefixes.last().is_some_and(|last| last == common) || query.after == Some(common) {
                    continue;
                }
                if count == query.max_keys {
                    listing.truncated = true;
                    break;
                }
                listing.prefixes.push(common.to_string());
                listing.last = Some(common.to_string());
            }
            None => {
                if count == query.max_keys {
                    listing.truncated = true;
                    break;
                }
                listing.objects.push(meta.clone());
                listing.last = Some(key.to_string());
            }
        }
        count += 1;
    }
    listing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn keys(names: &[&str]) -> BTreeMap<String, Arc<ObjectMeta>> {
        names
            .iter()
            .map(|name| {
                let meta = ObjectMeta {
                    key: name.to_string(),
                    size: 0,
                    etag: String::new(),
                    last_modified_ms: 0,
                    content_type: None,
                    headers: Vec::new(),
                    metadata: Vec::new(),
                    checksum: None,
                    parts_count: None,
                    crc32c: 0,
                };
                (name.to_string(), Arc::new(meta))
            })
            .collect()
    }

    fn run(map: &BTreeMap<String, Arc<ObjectMeta>>, query: &ListingQuery<'_>) -> (Vec<String>, Vec<String>, bool) {
        let listing = list(map.iter().map(|(k, m)| (k.as_str(), m)), query);
        (listing.objects.iter().map(|m| m.key.clone()).collect(), listing.prefixes, listing.truncated)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefix_and_delimiter() {
        let map = keys(&["a", "a/1", "a/2", "a/b/3", "b", "b/1", "c"]);
        let query = ListingQuery { prefix: "", delimiter: "/", after: None, max_keys: 1000 };
        assert_eq!(run(&map, &query), (strings(&["a", "b", "c"]), strings(&["a/", "b/"]), false));
        let query = ListingQuery { prefix: "a/", delimiter: "/", after: None, max_keys: 1000 };
        assert_eq!(run(&map, &query), (strings(&["a/1", "a/2"]), strings(&["a/b/"]), false));
    }

    /// Paging with any page size visits every entry exactly once, in order,
    /// the same as one big page.
    #[test]
    fn paging_matches_one_page() {
        let names: Vec<String> =
            (0..300).map(|i| format!("{}/{}", i % 7, i)).chain((0..50).map(|i| format!("k{i}"))).collect();
        let map = keys(&names.iter().map(String::as_str).collect::<Vec<_>>());
        for delimiter in ["", "/"] {
            let whole = ListingQuery { prefix: "", delimiter, after: None, max_keys: usize::MAX };
            let (all_objects, all_prefixes, _) = run(&map, &whole);
            for page in [1, 2, 3, 7, 100] {
                let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
                let mut after: Option<String> = None;
                loop {
                    let query = ListingQuery { prefix: "", delimiter, after: after.as_deref(), max_keys: page };
                    let listing = list(map.iter().map(|(k, m)| (k.as_str(), m)), &query);
                    assert!(listing.objects.len() + listing.prefixes.len() <= page);
                    objects.extend(listing.objects.iter().map(|m| m.key.clone()));
                    prefixes.extend(listing.prefixes.clone());
                    if !listing.truncated {
                        break;
                    }
                    after = listing.last.clone();
                }
                assert_eq!((&objects, &prefixes), (&all_objects, &all_prefixes), "page {page} delimiter {delimiter:?}");
            }
        }
    }

    #[test]
    fn exactly_full_page_is_not_truncated() {
        let map = keys(&["a", "b"]);
        let query = ListingQuery { prefix: "", delimiter: "", after: None, max_keys: 2 };
        assert_eq!(run(&map, &query), (strings(&["a", "b"]), vec![], false));
    }
}
