//! The one fixed scorer: a verdict from a marker in the message instead of the filter, so proxy tests and benchmarks
//! check the relay and not rule tuning.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use popguard::filter::{Hit, Verdict};

/// The scripted upstream's spam marker (see [`crate::fake::mixed`]).
pub const SPAM_MARKER: &[u8] = b"SPAM-ME";
/// The Message-ID prefix of [`crate::fixtures::spam`] messages.
pub const FIXTURE_SPAM_ID: &[u8] = b"Message-ID: <spam-";
/// Score of a spam verdict: over [`SPAM_THRESHOLD`].
pub const SPAM_SCORE: f64 = 10.0;
/// Score of a ham verdict: under [`UNSURE_THRESHOLD`].
pub const HAM_SCORE: f64 = 0.5;
/// The thresholds the verdicts are classed with (the filter's defaults).
pub const SPAM_THRESHOLD: f64 = 5.0;
pub const UNSURE_THRESHOLD: f64 = 3.0;

/// Spam when the scanned bytes contain [`SPAM_MARKER`] or [`FIXTURE_SPAM_ID`] (one rule `TEST_SPAM`, score 10.0),
/// ham otherwise (`TEST_HAM`, 0.5). Counts its calls, so tests can see the verdict cache work; can be made slow, to
/// exercise the scan budget. Clones share the counter.
#[derive(Clone, Debug, Default)]
pub struct FixedScorer {
    calls: Arc<AtomicUsize>,
    delay: Option<Duration>,
}

impl FixedScorer {
    pub fn new() -> FixedScorer {
        FixedScorer::default()
    }

    /// Counts calls in `calls` (shared with the test) instead of a counter of its own.
    pub fn counting(mut self, calls: Arc<AtomicUsize>) -> FixedScorer {
        self.calls = calls;
        self
    }

    /// Sleeps `delay` in every call (blocking, as a CPU-bound scorer would).
    pub fn slow(mut self, delay: Duration) -> FixedScorer {
        self.delay = Some(delay);
        self
    }

    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The verdict for `bytes`; the signature of `Proxy::with_scorer`.
    pub fn verdict(&self, _user: Option<&str>, bytes: &[u8]) -> Verdict {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(delay) = self.delay {
            std::thread::sleep(delay);
        }
        let spam = contains(bytes, SPAM_MARKER) || contains(bytes, FIXTURE_SPAM_ID);
        let hit = Hit {
            name: if spam { "TEST_SPAM" } else { "TEST_HAM" }.into(),
            score: if spam { SPAM_SCORE } else { HAM_SCORE },
            description: String::new(),
        };
        Verdict::from_hits(vec![hit], SPAM_THRESHOLD, UNSURE_THRESHOLD)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
