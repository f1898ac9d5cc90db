//! Asks the kernel to read the SQLite WAL's pages ahead of the writer.
//!
//! SQLite writes a WAL frame of 24 + 4,096 bytes, so every frame covers
//! parts of two file pages, and after each restart it writes the WAL again
//! from its start. A partial write to a page that is not in the page cache
//! reads the page from disk first, inside the `pwrite`, on the one thread
//! every order and payment of SQLite waits for. The WAL's pages are written
//! once per pass over the file and not read in between, which is what
//! reclaim takes first: on this project's VM a DAMON `pageout` scheme
//! dropped enough of them that a notification storm's writer blocked on
//! 250–1,000 such reads (`perf`: `ext4_block_write_begin`, `bit_wait_io`),
//! and the storm's p99 followed the bytes read (stop 18). A machine short of
//! memory reclaims the same pages the same way.
//!
//! So the background checkpoint task, which learns the WAL's length every
//! pass, asks for the next stretch of frames with `posix_fadvise(WILLNEED)`
//! ahead of the writer, and for the WAL's head just before the writer
//! restarts it: the reads the writer would have waited on are issued
//! earlier, asynchronously, off its thread. Pages still cached cost a
//! lookup. Nothing here is needed for correctness; every failure is ignored.

use std::fs::File;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The WAL file's header, before the first frame.
const WAL_HEADER: u64 = 32;
/// A frame's header, before its page.
const FRAME_HEADER: u64 = 24;
/// How far ahead of the writer the page cache is asked for, in frames
/// (about 135 MB of 4 KiB pages): half a second of the heaviest storm
/// measured (60,000 frames a second), several of the checkpoint task's
/// passes, so the reads finish before the writer gets there.
const AHEAD_FRAMES: i64 = 32_768;

/// Bytes asked for per advice. Linux reads at most one readahead window
/// per `WILLNEED` (`force_page_cache_ra`: the larger of the device's
/// `read_ahead_kb` and `max_sectors_kb`, 8 MiB on this machine's disk) and
/// silently drops the rest of a longer range: one advice over 135 MB read
/// 8 MiB (`fincore`). A mebibyte is within the window of most disks; where
/// the window is smaller, part of each piece is read ahead and the writer
/// reads the rest as before. Pieces of 128 KiB (the least window Linux
/// uses) cost the server 5–19% more CPU per notification in alternated
/// storms (stop 20), more than the reads they would have saved here.
const ADVICE_CHUNK: u64 = 1 << 20;

/// Which frames to ask for, from the WAL's length at each of the
/// checkpoint task's passes. Pure bookkeeping, so it can be tested alone.
#[derive(Debug, Default)]
struct Plan {
    /// Frames from the WAL's start already asked for in this pass over it.
    asked_to: i64,
    /// The length at the last report: a shorter one means a restart.
    last_frames: i64,
    /// Whether the head was asked for ahead of the coming restart.
    head_asked: bool,
}

impl Plan {
    /// The frame ranges to ask for now that the WAL is `frames` long, with
    /// the writer restarting it once it passes `restart_at`.
    fn advance(&mut self, frames: i64, restart_at: i64) -> Vec<Range<i64>> {
        let mut ask = Vec::new();
        if frames < self.last_frames {
            // The writer started over: what was asked for ahead of the
            // restart is the new pass's head.
            self.asked_to = if self.head_asked { AHEAD_FRAMES } else { 0 };
            self.head_asked = false;
        }
        self.last_frames = frames;
        let from = self.asked_to.max(frames);
        let to = frames + AHEAD_FRAMES;
        if to > from {
            ask.push(from..to);
            self.asked_to = to;
        }
        if !self.head_asked && frames + AHEAD_FRAMES >= restart_at {
            ask.push(0..AHEAD_FRAMES);
            self.head_asked = true;
        }
        ask
    }
}

/// The plan and the open WAL file.
pub(super) struct WalPrefetch {
    path: PathBuf,
    file: Option<Arc<File>>,
    frame_bytes: u64,
    plan: Plan,
}

/// Byte spans of the WAL to ask the kernel for (`send`).
pub(super) struct Request {
    file: Arc<File>,
    spans: Vec<(u64, NonZeroU64)>,
}

impl Request {
    /// Advises the kernel that the spans will be needed: it queues reads of
    /// their pages not cached and returns without waiting for them, though
    /// queueing may block on a busy device, so callers run this on a
    /// blocking thread.
    pub(super) fn send(self) {
        for (offset, len) in self.spans {
            let end = offset + len.get();
            let mut at = offset;
            while let Some(len) = NonZeroU64::new(ADVICE_CHUNK.min(end - at)) {
                let advice = rustix::fs::Advice::WillNeed;
                if let Err(e) = rustix::fs::fadvise(&*self.file, at, Some(len), advice) {
                    tracing::debug!(error = %e, "asking for the WAL's next pages failed");
                    return;
                }
                at += len.get();
            }
        }
    }
}

impl WalPrefetch {
    /// For the WAL of the database at `db`, whose pages are `page_size` bytes.
    pub(super) fn new(db: &Path, page_size: u64) -> Self {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalPrefetch {
            path: path.into(),
            file: None,
            frame_bytes: FRAME_HEADER + page_size,
            plan: Plan::default(),
        }
    }

    /// What to ask for of what the writer will write next, the WAL being
    /// `frames` long; `None` when nothing is new.
    pub(super) fn advance(&mut self, frames: i64, restart_at: i64) -> Option<Request> {
        if self.file.is_none() {
            // The WAL exists once the database is in WAL mode; until then
            // there is nothing to read, and the plan waits for it rather
            // than count as asked what never was.
            self.file = Some(Arc::new(File::open(&self.path).ok()?));
        }
        let ranges = self.plan.advance(frames, restart_at);
        if ranges.is_empty() {
            return None;
        }
        let spans = ranges
            .into_iter()
            .filter_map(|r| {
                let offset = WAL_HEADER + r.start as u64 * self.frame_bytes;
                let len = NonZeroU64::new((r.end - r.start) as u64 * self.frame_bytes)?;
                Some((offset, len))
            })
            .collect();
        Some(Request {
            file: self.file.clone()?,
            spans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTART: i64 = 131_072;

    #[test]
    fn asks_ahead_of_the_writer_once_per_stretch() {
        let mut plan = Plan::default();
        assert_eq!(plan.advance(0, RESTART), vec![0..AHEAD_FRAMES]);
        // Still inside what was asked for: only the new tail.
        assert_eq!(
            plan.advance(1_000, RESTART),
            vec![AHEAD_FRAMES..1_000 + AHEAD_FRAMES]
        );
        // The same length again (an idle WAL): nothing.
        assert!(plan.advance(1_000, RESTART).is_empty());
        // The writer outran the asking: from where it is.
        assert_eq!(
            plan.advance(50_000, RESTART),
            vec![50_000..50_000 + AHEAD_FRAMES]
        );
    }

    #[test]
    fn asks_for_the_head_before_a_restart_and_not_again_after_it() {
        let mut plan = Plan::default();
        plan.advance(90_000, RESTART);
        let near = RESTART - AHEAD_FRAMES + 10;
        assert_eq!(
            plan.advance(near, RESTART),
            vec![90_000 + AHEAD_FRAMES..near + AHEAD_FRAMES, 0..AHEAD_FRAMES]
        );
        // Past the restart length, waiting for the writer: the head once.
        assert_eq!(
            plan.advance(RESTART + 5, RESTART),
            vec![near + AHEAD_FRAMES..RESTART + 5 + AHEAD_FRAMES]
        );
        // Restarted: the head is asked for already, so only past it.
        assert_eq!(
            plan.advance(2_000, RESTART),
            vec![AHEAD_FRAMES..2_000 + AHEAD_FRAMES]
        );
        // And the next approach to the restart asks for the head again.
        let ask = plan.advance(RESTART, RESTART);
        assert_eq!(ask.last(), Some(&(0..AHEAD_FRAMES)));
    }

    #[test]
    fn a_restart_seen_without_the_head_asked_starts_from_zero() {
        let mut plan = Plan::default();
        plan.advance(10_000, 1_000_000);
        // The WAL started over (a restart after an idle check, say) while
        // nowhere near the length this plan expected.
        assert_eq!(plan.advance(100, 1_000_000), vec![100..100 + AHEAD_FRAMES]);
    }

    #[test]
    fn asks_of_the_wal_file_once_it_exists() {
        let dir = std::env::temp_dir().join(format!("kami-prefetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("kami.db");
        // A file the size of a few frames stands in for the WAL.
        std::fs::write(dir.join("kami.db-wal"), vec![7u8; 64 * 4_120]).unwrap();
        let mut prefetch = WalPrefetch::new(&db, 4_096);
        let request = prefetch.advance(10, RESTART).expect("a request");
        let offset = WAL_HEADER + 10 * 4_120;
        let len = NonZeroU64::new(AHEAD_FRAMES as u64 * 4_120).unwrap();
        assert_eq!(request.spans, vec![(offset, len)]);
        request.send();
        // Nothing new, nothing asked.
        assert!(prefetch.advance(10, RESTART).is_none());
        // A missing WAL is no error: nothing is asked until it exists.
        let mut missing = WalPrefetch::new(&dir.join("none.db"), 4_096);
        assert!(missing.advance(0, RESTART).is_none());
        // Once it exists, asking starts where the writer is then.
        std::fs::write(dir.join("none.db-wal"), vec![7u8; 4_120]).unwrap();
        let request = missing.advance(5, RESTART).expect("a request");
        assert_eq!(request.spans[0].0, WAL_HEADER + 5 * 4_120);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
