//! Where a memory store shard keeps its completed responses: packed one after another into
//! shared pages instead of a handful of allocations each.
//!
//! A record kept as it was built (an `Arc<Record>`, a header vector, a body buffer and its
//! reference count) scatters allocations of many sizes over the heap for as long as it lives,
//! and the allocator's work on every other allocation of the process grows with them
//! (`BENCHMARKS.md`, 2026-12-08). A packed record is one slice of a page: its headers' names
//! and values and its body, contiguous. The store counts a page in its weight, whole, until its
//! last record goes; its memory is freed then, or once the last replay still sending one of its
//! bodies is done. A record used again is copied to the page being filled, so a shard's pages
//! empty in the order its records are evicted: it costs its size once more for each page it
//! left until that page empties, where a page pinned by it would cost a whole page.
//!
//! A replay unpacks the record: the body and the header values are slices of the page, not
//! copies.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::table::Totals;
use crate::fingerprint::Fingerprint;
use crate::record::{Completion, Record, StoredResponse};

/// The largest page; a smaller store gets pages small enough that a full page is a small part of
/// each shard's share of the capacity.
const MAX_PAGE: usize = 64 * 1024;
const MIN_PAGE: usize = 512;
/// A shard's share of the capacity is at least this many pages; a share too small for that
/// many pages of [`MIN_PAGE`] gives every record a page of its own.
const PAGES_PER_SHARE: u64 = 16;

/// No page.
const NONE: u32 = u32::MAX;

/// A completed record as a shard holds it.
pub(super) enum Kept {
    /// Packed into page `page`.
    Packed {
        fingerprint: Fingerprint,
        status: StatusCode,
        headers: u16,
        /// Each header as a 2-byte name length, a 4-byte value length, the name and the value;
        /// then the body.
        bytes: Bytes,
        page: u32,
    },
    /// As it was built: a tombstone, or headers that could not be rebuilt from their bytes.
    Whole(Arc<Record>),
}

impl Kept {
    /// The record, rebuilt from its page: its body and header values share the page's memory.
    pub(super) fn record(&self) -> Arc<Record> {
        let (fingerprint, status, headers, bytes) = match self {
            Self::Packed {
                fingerprint,
                status,
                headers,
                bytes,
                ..
            } => (fingerprint, status, headers, bytes),
            Self::Whole(record) => return Arc::clone(record),
        };
        let mut rest = bytes.clone();
        let mut list = Vec::with_capacity(usize::from(*headers));
        for _ in 0..*headers {
            let name_len = usize::from(rest.get_u16());
            let value_len = rest.get_u32() as usize;
            let name = rest.split_to(name_len);
            let value = rest.split_to(value_len);
            // Both were checked when the record was packed.
            match (HeaderName::from_bytes(&name), HeaderValue::from_maybe_shared(value)) {
                (Ok(name), Ok(value)) => list.push((name, value)),
                _ => debug_assert!(false, "a packed header does not rebuild"),
            }
        }
        let response = StoredResponse::new(*status, list, rest);
        Arc::new(Record::new(*fingerprint, Completion::Response(response)))
    }

    /// What the record weighs outside pages: a response kept whole, its headers and body.
    pub(super) fn unpaged_weight(&self) -> u32 {
        match self {
            Self::Packed { .. } => 0,
            Self::Whole(record) => u32::try_from(record.payload_len()).unwrap_or(u32::MAX),
        }
    }

    /// The page this record pins, if it is packed.
    fn page(&self) -> Option<u32> {
        match self {
            Self::Packed { page, .. } => Some(*page),
            Self::Whole(_) => None,
        }
    }
}

struct Page {
    /// Records of this page a shard holds.
    held: u32,
    /// Whether the page holds one large record only.
    own: bool,
    /// Bytes the page occupies, counted in the store's weight while it lives.
    size: u64,
}

/// A shard's pages: the one being filled, and every page some record still pins.
pub(super) struct Pages {
    filling: BytesMut,
    /// The page being filled, or [`NONE`].
    filling_id: u32,
    pages: Vec<Option<Page>>,
    free: Vec<u32>,
    page_size: usize,
}

impl Pages {
    /// Pages for a shard whose share of the store is `share` bytes.
    pub(super) fn new(share: u64) -> Self {
        let page_size = match usize::try_from(share / PAGES_PER_SHARE).unwrap_or(MAX_PAGE) {
            // Shared pages would weigh more than the records they hold.
            size if size < MIN_PAGE => 0,
            size => size.min(MAX_PAGE),
        };
        Self {
            filling: BytesMut::new(),
            filling_id: NONE,
            pages: Vec::new(),
            free: Vec::new(),
            page_size,
        }
    }

    /// Packs `record`, adding any page it opens to `totals`' weight.
    pub(super) fn pack(&mut self, record: Arc<Record>, totals: &Totals) -> Kept {
        let Completion::Response(response) = &record.completion else {
            return Kept::Whole(record);
        };
        let headers = match u16::try_from(response.headers.len()) {
            Ok(headers) if response.headers.iter().all(|(_, value)| packs(value)) => headers,
            _ => return Kept::Whole(record),
        };
        let len = packed_len(response);
        let (page, bytes) = self.write(len, totals, |out| {
            for (name, value) in &response.headers {
                // Names are at most 64 KiB long (`http`'s limit), values were checked above.
                out.put_u16(name.as_str().len() as u16);
                out.put_u32(value.len() as u32);
                out.put_slice(name.as_str().as_bytes());
                out.put_slice(value.as_bytes());
            }
            out.put_slice(&response.body);
        });
        Kept::Packed {
            fingerprint: record.fingerprint,
            status: response.status,
            headers,
            bytes,
            page,
        }
    }

    /// Moves `kept` to the page being filled unless it is there already (or has a page of its
    /// own), so that the pages of records used again do not stay pinned by them.
    pub(super) fn refresh(&mut self, kept: &mut Kept, totals: &Totals) {
        let Kept::Packed { bytes, page, .. } = kept else {
            return;
        };
        if *page == self.filling_id || self.page(*page).own {
            return;
        }
        let old = *page;
        let (new, moved) = self.write(bytes.len(), totals, |out| out.put_slice(bytes));
        (*page, *bytes) = (new, moved);
        self.unpin(old, totals);
    }

    /// `kept` is no longer held: its page is freed (and uncounted) if nothing else pins it.
    pub(super) fn release(&mut self, kept: &Kept, totals: &Totals) {
        if let Some(page) = kept.page() {
            self.unpin(page, totals);
        }
    }

    fn write(&mut self, len: usize, totals: &Totals, fill: impl FnOnce(&mut BytesMut)) -> (u32, Bytes) {
        if self.page_size == 0 || len > self.page_size / 4 {
            // A large record gets a page of its own, of its exact size.
            let mut own = BytesMut::with_capacity(len);
            fill(&mut own);
            return (self.open(len as u64, true, totals), own.freeze());
        }
        if self.filling_id == NONE || self.filling.capacity() < len {
            // The page being filled holds a record (an empty one is closed): it stays until that
            // record goes.
            self.filling = BytesMut::with_capacity(self.page_size);
            self.filling_id = self.open(self.page_size as u64, false, totals);
        }
        fill(&mut self.filling);
        self.page(self.filling_id).held += 1;
        (self.filling_id, self.filling.split().freeze())
    }

    fn open(&mut self, size: u64, own: bool, totals: &Totals) -> u32 {
        totals.weight.fetch_add(size, Ordering::Relaxed);
        let page = Some(Page {
            held: u32::from(own),
            own,
            size,
        });
        match self.free.pop() {
            Some(id) => {
                self.pages[id as usize] = page;
                id
            }
            None => {
                self.pages.push(page);
                u32::try_from(self.pages.len() - 1).expect("fewer than 2^32 pages in a shard")
            }
        }
    }

    fn unpin(&mut self, id: u32, totals: &Totals) {
        let page = self.page(id);
        page.held -= 1;
        if page.held == 0 {
            if id == self.filling_id {
                // An empty shard holds no page.
                (self.filling, self.filling_id) = (BytesMut::new(), NONE);
            }
            self.close(id, totals);
        }
    }

    fn close(&mut self, id: u32, totals: &Totals) {
        let page = self.pages[id as usize].take().expect("a live page");
        totals.weight.fetch_sub(page.size, Ordering::Relaxed);
        self.free.push(id);
    }

    fn page(&mut self, id: u32) -> &mut Page {
        self.pages[id as usize].as_mut().expect("records pin live pages only")
    }
}

/// The bytes `response` takes in a page.
pub(super) fn packed_len(response: &StoredResponse) -> usize {
    response.payload_len() + 6 * response.headers.len()
}

/// Whether `value` comes back the same from its bytes in a page: any value built without
/// `unsafe` does, unless it is marked sensitive (a mark its bytes do not carry) or longer than
/// a page's 4-byte length.
fn packs(value: &HeaderValue) -> bool {
    !value.is_sensitive()
        && u32::try_from(value.len()).is_ok()
        && value
            .as_bytes()
            .iter()
            .all(|&byte| byte == b'\t' || (byte >= 32 && byte != 127))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)], body_len: usize) -> Arc<Record> {
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect();
        let body = Bytes::from(vec![b'x'; body_len]);
        let response = StoredResponse::new(StatusCode::CREATED, headers, body);
        Arc::new(Record::new(Fingerprint([3; 32]), Completion::Response(response)))
    }

    fn weight(totals: &Totals) -> u64 {
        totals.weight.load(Ordering::Relaxed)
    }

    #[test]
    fn a_packed_record_comes_back_equal_with_its_headers_in_order() {
        let (mut pages, totals) = (Pages::new(1 << 20), Totals::default());
        let original = response(
            &[
                ("link", "</a>; rel=next"),
                ("x-custom", "one"),
                ("link", "</b>; rel=prev"),
            ],
            300,
        );
        let kept = pages.pack(Arc::clone(&original), &totals);
        assert!(matches!(kept, Kept::Packed { .. }));
        assert_eq!(*kept.record(), *original);
        let empty = response(&[], 0);
        assert_eq!(*pages.pack(Arc::clone(&empty), &totals).record(), *empty);
    }

    #[test]
    fn a_sensitive_header_keeps_its_record_whole_and_weighed() {
        let (mut pages, totals) = (Pages::new(1 << 20), Totals::default());
        let mut secret = HeaderValue::from_static("token-1");
        secret.set_sensitive(true);
        let response = StoredResponse::new(
            StatusCode::OK,
            vec![(HeaderName::from_static("x-secret"), secret)],
            Bytes::from_static(b"{}"),
        );
        let record = Arc::new(Record::new(Fingerprint([2; 32]), Completion::Response(response)));
        let kept = pages.pack(Arc::clone(&record), &totals);
        assert!(matches!(kept, Kept::Whole(_)));
        assert_eq!(kept.unpaged_weight(), 8 + 7 + 2);
        let Completion::Response(back) = &kept.record().completion else {
            unreachable!()
        };
        assert!(back.headers[0].1.is_sensitive());
        assert_eq!(weight(&totals), 0, "no page opened");
    }

    #[test]
    fn a_tombstone_is_kept_whole() {
        let (mut pages, totals) = (Pages::new(1 << 20), Totals::default());
        let tombstone = Arc::new(Record::new(Fingerprint([1; 32]), Completion::Tombstone));
        let kept = pages.pack(Arc::clone(&tombstone), &totals);
        assert!(matches!(kept, Kept::Whole(_)));
        assert_eq!(*kept.record(), *tombstone);
        assert_eq!(weight(&totals), 0);
    }

    #[test]
    fn pages_are_counted_while_a_record_pins_them_and_freed_after() {
        let (mut pages, totals) = (Pages::new(1 << 20), Totals::default());
        let kept: Vec<_> = (0..1000).map(|_| pages.pack(response(&[], 500), &totals)).collect();
        let page = pages.page_size as u64;
        assert_eq!(weight(&totals) % page, 0, "whole pages");
        assert!(weight(&totals) >= 500 * 1000 && weight(&totals) <= 500 * 1000 + 2 * page);
        for kept in &kept {
            pages.release(kept, &totals);
        }
        assert_eq!(weight(&totals), 0);
        assert!(pages.pages.iter().all(Option::is_none));
    }

    #[test]
    fn a_record_used_again_moves_to_the_page_being_filled_and_frees_its_old_one() {
        let (mut pages, totals) = (Pages::new(1 << 20), Totals::default());
        let mut kept: Vec<_> = (0..1000).map(|_| pages.pack(response(&[], 500), &totals)).collect();
        let mut first = kept.remove(0);
        let before = first.record();
        pages.refresh(&mut first, &totals);
        assert_eq!(*first.record(), *before, "moved, not changed");
        for kept in &kept {
            pages.release(kept, &totals);
        }
        assert_eq!(
            weight(&totals),
            pages.page_size as u64,
            "only the page being filled is left"
        );
    }

    #[test]
    fn a_large_record_gets_a_page_of_its_exact_size() {
        let (mut pages, totals) = (Pages::new(1 << 20), Totals::default());
        let large = response(&[("content-type", "application/json")], 40_000);
        let mut kept = pages.pack(large, &totals);
        assert_eq!(weight(&totals), 40_000 + 12 + 16 + 6);
        pages.refresh(&mut kept, &totals);
        assert_eq!(weight(&totals), 40_034, "a page of its own is not copied");
        pages.release(&kept, &totals);
        assert_eq!(weight(&totals), 0);
    }

    #[test]
    fn a_small_store_gets_small_pages() {
        assert_eq!(Pages::new(1 << 30).page_size, MAX_PAGE);
        assert_eq!(Pages::new(64 << 10).page_size, 4096);
        assert_eq!(Pages::new(16 * MIN_PAGE as u64).page_size, MIN_PAGE);
        assert_eq!(Pages::new(1024).page_size, 0, "every record in a page of its own");
        let (mut pages, totals) = (Pages::new(1024), Totals::default());
        let kept = pages.pack(response(&[], 100), &totals);
        assert_eq!(weight(&totals), 100);
        pages.release(&kept, &totals);
        assert_eq!(weight(&totals), 0);
    }
}
