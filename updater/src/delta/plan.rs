//! Where each chunk of the new image comes from, and which byte ranges of
//! the image object to request: pure functions of the indexes.

use std::collections::HashMap;

use abnix_core::pipeline::{FrameRange, Tally};
use abnix_formats::digest::Digest;
use abnix_formats::index::Index;

/// The source of one chunk of the new image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The target already holds it at its offset (its hash was checked).
    Target,
    /// The active slot holds the same bytes at this offset, by its index;
    /// checked when read.
    Active { offset: u64 },
    /// Only the bucket has it.
    Remote,
}

/// How fetched frames are grouped into range requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// Two runs of wanted frames separated by at most this many compressed
    /// bytes of unwanted ones are fetched with one request, the gap read
    /// through: a request's round trip costs more than a small gap.
    pub max_gap: u64,
    /// A request spans at most this many bytes (a single larger frame
    /// excepted), so that a large delta still spreads over the parallel
    /// requests.
    pub max_request: u64,
}

/// Every chunk's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    sources: Vec<Source>,
}

/// Bytes a plan saves and costs, in compressed bytes of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub(crate) kept: Tally,
    pub(crate) copied: Tally,
    pub(crate) fetched: Tally,
    /// Compressed bytes the range requests ask for, gaps included.
    pub download: u64,
    pub requests: usize,
}

impl Plan {
    /// Picks each chunk's source: the target when `in_target` says it holds
    /// it, else the active slot when `active` (its index) has a chunk with
    /// the same hash, else the bucket. `in_target` has one entry per chunk of
    /// `new`, or is empty when the target was not checked.
    pub fn new(new: &Index, active: Option<&Index>, in_target: &[bool]) -> Plan {
        let mut local: HashMap<Digest, u64> = HashMap::new();
        for chunk in active.map_or(&[][..], |index| &index.chunks) {
            local.entry(chunk.sha256).or_insert(chunk.offset);
        }
        let sources = new
            .chunks
            .iter()
            .enumerate()
            .map(|(position, chunk)| {
                if in_target.get(position) == Some(&true) {
                    Source::Target
                } else if let Some(&offset) = local.get(&chunk.sha256) {
                    Source::Active { offset }
                } else {
                    Source::Remote
                }
            })
            .collect();
        Plan { sources }
    }

    /// (position, offset in the active slot) of every chunk to copy.
    pub(crate) fn copies(&self) -> Vec<(usize, u64)> {
        self.sources
            .iter()
            .enumerate()
            .filter_map(|(position, source)| match source {
                Source::Active { offset } => Some((position, *offset)),
                _ => None,
            })
            .collect()
    }

    /// Positions of the chunks to fetch, ascending.
    pub(crate) fn fetches(&self) -> Vec<usize> {
        self.sources
            .iter()
            .enumerate()
            .filter_map(|(position, source)| (*source == Source::Remote).then_some(position))
            .collect()
    }

    /// What the plan reuses and downloads, with its requests coalesced by
    /// `coalescing`.
    pub fn cost(&self, new: &Index, coalescing: Coalescing) -> Cost {
        let mut cost = Cost {
            kept: Tally::default(),
            copied: Tally::default(),
            fetched: Tally::default(),
            download: 0,
            requests: 0,
        };
        for (chunk, source) in new.chunks.iter().zip(&self.sources) {
            match source {
                Source::Target => cost.kept.add(chunk),
                Source::Active { .. } => cost.copied.add(chunk),
                Source::Remote => cost.fetched.add(chunk),
            }
        }
        let ranges = coalesce(new, &self.fetches(), coalescing);
        cost.requests = ranges.len();
        cost.download = ranges
            .iter()
            .map(|range| {
                let (start, end) = range.span(new);
                end - start
            })
            .sum();
        cost
    }
}

/// Groups the frames of `wanted` (positions, ascending) into range requests:
/// a range grows over the next wanted frame while the unwanted bytes before
/// it are at most `max_gap` and the whole stays within `max_request`.
pub fn coalesce(index: &Index, wanted: &[usize], coalescing: Coalescing) -> Vec<FrameRange> {
    let chunks = &index.chunks;
    let mut ranges: Vec<FrameRange> = Vec::new();
    let mut range_start = 0;
    for &position in wanted {
        let chunk = &chunks[position];
        let end = chunk.compressed_offset + u64::from(chunk.compressed_len);
        if let Some(current) = ranges.last_mut() {
            let last = &chunks[*current.chunks.last().expect("ranges are never empty")];
            let gap =
                chunk.compressed_offset - (last.compressed_offset + u64::from(last.compressed_len));
            if gap <= coalescing.max_gap && end - range_start <= coalescing.max_request {
                current.chunks.push(position);
                continue;
            }
        }
        range_start = chunk.compressed_offset;
        ranges.push(FrameRange {
            chunks: vec![position],
        });
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index of chunks with these (raw length, frame length, content tag)
    /// records; chunks with the same tag have the same hash.
    fn index(chunks: &[(u32, u32, &str)]) -> Index {
        let mut index = Index::default();
        for &(len, compressed_len, tag) in chunks {
            index.push(len, compressed_len, Digest::of(tag.as_bytes()));
        }
        index
    }

    const NO_GAPS: Coalescing = Coalescing {
        max_gap: 0,
        max_request: u64::MAX,
    };

    fn positions(ranges: &[FrameRange]) -> Vec<Vec<usize>> {
        ranges.iter().map(|r| r.chunks.clone()).collect()
    }

    #[test]
    fn the_target_wins_then_the_active_slot_then_the_bucket() {
        let new = index(&[(10, 5, "a"), (10, 5, "b"), (10, 5, "c"), (10, 5, "d")]);
        // The active image has "b" and "c" elsewhere (content shifted).
        let active = index(&[(7, 3, "x"), (10, 5, "c"), (10, 5, "b")]);
        let plan = Plan::new(&new, Some(&active), &[false, false, true, false]);
        assert_eq!(
            plan.sources,
            [
                Source::Remote,
                Source::Active { offset: 17 },
                Source::Target,
                Source::Remote
            ]
        );
        assert_eq!(plan.copies(), [(1, 17)]);
        assert_eq!(plan.fetches(), [0, 3]);
    }

    #[test]
    fn without_local_sources_everything_is_fetched() {
        let new = index(&[(10, 5, "a"), (10, 5, "b")]);
        let plan = Plan::new(&new, None, &[]);
        assert_eq!(plan.sources, [Source::Remote, Source::Remote]);
        let cost = plan.cost(&new, NO_GAPS);
        assert_eq!((cost.download, cost.requests), (10, 1));
        assert_eq!(
            cost.fetched,
            Tally {
                chunks: 2,
                bytes: 20
            }
        );
    }

    #[test]
    fn a_duplicated_chunk_is_copied_from_its_first_place() {
        let new = index(&[(10, 5, "z")]);
        let active = index(&[(4, 2, "a"), (10, 5, "z"), (10, 5, "z")]);
        assert_eq!(
            Plan::new(&new, Some(&active), &[]).sources,
            [Source::Active { offset: 4 }]
        );
    }

    #[test]
    fn adjacent_frames_make_one_request() {
        let new = index(&[
            (10, 100, "a"),
            (10, 100, "b"),
            (10, 100, "c"),
            (10, 100, "d"),
        ]);
        assert_eq!(
            positions(&coalesce(&new, &[0, 1, 3], NO_GAPS)),
            [vec![0, 1], vec![3]]
        );
        assert!(coalesce(&new, &[], NO_GAPS).is_empty());
    }

    #[test]
    fn gaps_up_to_the_limit_are_read_through() {
        let new = index(&[
            (10, 100, "a"),
            (10, 100, "b"),
            (10, 50, "c"),
            (10, 100, "d"),
        ]);
        let with_gap = |max_gap| Coalescing {
            max_gap,
            max_request: u64::MAX,
        };
        assert_eq!(
            positions(&coalesce(&new, &[0, 2], with_gap(99))),
            [vec![0], vec![2]]
        );
        assert_eq!(
            positions(&coalesce(&new, &[0, 2], with_gap(100))),
            [vec![0, 2]]
        );
        let ranges = coalesce(&new, &[0, 3], with_gap(150));
        assert_eq!(positions(&ranges), [vec![0, 3]]);
        assert_eq!(ranges[0].span(&new), (0, 350));
    }

    #[test]
    fn requests_are_split_at_the_size_limit() {
        let new = index(&[
            (10, 100, "a"),
            (10, 100, "b"),
            (10, 100, "c"),
            (10, 500, "d"),
        ]);
        let limit = Coalescing {
            max_gap: 0,
            max_request: 200,
        };
        // A frame larger than the limit still gets its own request.
        assert_eq!(
            positions(&coalesce(&new, &[0, 1, 2, 3], limit)),
            [vec![0, 1], vec![2], vec![3]]
        );
    }

    #[test]
    fn cost_counts_gaps_as_downloaded() {
        let new = index(&[(10, 100, "a"), (20, 100, "b"), (30, 100, "c")]);
        let active = index(&[(20, 100, "b")]);
        let plan = Plan::new(&new, Some(&active), &[]);
        let cost = plan.cost(
            &new,
            Coalescing {
                max_gap: 100,
                max_request: u64::MAX,
            },
        );
        assert_eq!(
            cost.copied,
            Tally {
                chunks: 1,
                bytes: 20
            }
        );
        assert_eq!(
            cost.fetched,
            Tally {
                chunks: 2,
                bytes: 40
            }
        );
        assert_eq!((cost.download, cost.requests), (300, 1));
    }
}
