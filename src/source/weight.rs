//! Binance's request-weight budget, kept on the client side so a long backfill paces itself
//! instead of running into HTTP 429s (and, ignoring those, a 418 ban).
//!
//! Binance counts weight per IP in fixed windows (6,000 per minute on the spot API; the window and
//! limit are in `exchangeInfo`'s `rateLimits`) and reports the count so far in
//! `X-MBX-USED-WEIGHT-<n><unit>` on every answer. The budget reserves each request's weight before
//! it is sent, takes the server's count when it is higher (other programs on the same IP spend
//! weight too), and when the window is nearly spent makes callers wait for the next one. A request
//! sent in the last moments of a window may reach Binance in the next one, so it is counted in
//! both. It keeps
//! a tenth of the limit free for `collect` and whatever else shares the IP. After a 429 every
//! request waits out its `Retry-After`, not only the one that got it.

use std::sync::Mutex;
use std::time::Duration;

/// The weight limit and its window, and what has been spent in the current window.
#[derive(Debug)]
pub struct WeightBudget {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: u32,
    window_ms: i64,
    header: String,
    /// The current window (index since the epoch) and the weight used in it.
    index: i64,
    used: u32,
    /// Weight reserved near the end of this window, counted in the next one too.
    carry: u32,
    /// No request before this time (ms), after a 429's `Retry-After`.
    paused_until: i64,
}

impl Default for WeightBudget {
    fn default() -> Self {
        Self::new(6000, 60)
    }
}

impl WeightBudget {
    /// A budget of `limit` weight per `window_secs` seconds.
    pub fn new(limit: u32, window_secs: u32) -> Self {
        let mut state = State { limit, window_ms: 60_000, header: String::new(), index: 0, used: 0, carry: 0, paused_until: 0 };
        state.set(limit, window_secs, 0);
        Self { state: Mutex::new(state) }
    }

    /// Adopt the limit and window `exchangeInfo` announces (at `now_ms`); what was spent so far
    /// counts in the new window, as it may well be in Binance's.
    pub fn configure(&self, limit: u32, window_secs: u32, now_ms: i64) {
        self.state.lock().unwrap().set(limit, window_secs, now_ms);
    }

    /// The lowercase name of the header that reports the weight used in this window.
    pub fn header(&self) -> String {
        self.state.lock().unwrap().header.clone()
    }

    /// The usable part of the limit (nine tenths).
    fn usable(limit: u32) -> u32 {
        (limit - limit / 10).max(1)
    }

    /// Reserve `weight` at `now_ms`, or say how long to wait before asking again.
    pub fn try_reserve(&self, weight: u32, now_ms: i64) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap();
        if now_ms < s.paused_until {
            return Err(Duration::from_millis((s.paused_until - now_ms) as u64));
        }
        s.roll(now_ms);
        // A request heavier than the whole budget still goes out, alone in a fresh window.
        if s.used == 0 || s.used + weight <= Self::usable(s.limit) {
            s.used += weight;
            let next = (s.index + 1) * s.window_ms;
            if next - now_ms <= (s.window_ms / 4).min(1000) {
                s.carry += weight;
            }
            return Ok(());
        }
        let next = (s.index + 1) * s.window_ms;
        // A little past the boundary, so clocks a few milliseconds apart agree it has passed.
        Err(Duration::from_millis((next - now_ms + 50).max(1) as u64))
    }

    /// Reserve `weight`, waiting for the next window while this one is spent.
    pub async fn reserve(&self, weight: u32) {
        loop {
            match self.try_reserve(weight, chrono::Utc::now().timestamp_millis()) {
                Ok(()) => return,
                Err(wait) => {
                    tracing::debug!(wait_ms = wait.as_millis() as u64, "Binance request weight nearly spent; waiting for the next window");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Take the server's count of the weight used in this window, when it says more than ours.
    pub fn observe(&self, used: u32, now_ms: i64) {
        let mut s = self.state.lock().unwrap();
        s.roll(now_ms);
        s.used = s.used.max(used);
    }

    /// The server refused with 429 and `Retry-After`: no request before `until_ms`.
    pub fn pause_until(&self, until_ms: i64) {
        let mut s = self.state.lock().unwrap();
        s.paused_until = s.paused_until.max(until_ms);
    }
}

impl State {
    fn set(&mut self, limit: u32, window_secs: u32, now_ms: i64) {
        let window_secs = window_secs.max(1);
        self.limit = limit.max(1);
        self.window_ms = i64::from(window_secs) * 1000;
        self.index = now_ms.div_euclid(self.window_ms);
        self.carry = 0;
        let (n, unit) = match window_secs {
            s if s.is_multiple_of(86_400) => (s / 86_400, 'd'),
            s if s.is_multiple_of(3600) => (s / 3600, 'h'),
            s if s.is_multiple_of(60) => (s / 60, 'm'),
            s => (s, 's'),
        };
        self.header = format!("x-mbx-used-weight-{n}{unit}");
    }

    fn roll(&mut self, now_ms: i64) {
        let index = now_ms.div_euclid(self.window_ms);
        if index != self.index {
            self.used = if index == self.index + 1 { self.carry } else { 0 };
            self.carry = 0;
            self.index = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_nine_tenths_then_waits_for_the_next_window() {
        let b = WeightBudget::new(100, 60);
        let t0 = 60_000 * 1000 + 10_000; // 10 s into a window
        for _ in 0..45 {
            b.try_reserve(2, t0).unwrap();
        }
        let wait = b.try_reserve(2, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50_050));
        b.try_reserve(2, t0 + 50_000).unwrap();
    }

    #[test]
    fn weight_sent_just_before_a_window_ends_counts_in_the_next_too() {
        let b = WeightBudget::new(100, 60);
        let end = 120_000;
        b.try_reserve(50, end - 500).unwrap(); // may arrive after the boundary
        b.try_reserve(30, end - 5_000).unwrap(); // surely before it
        b.try_reserve(40, end + 10).unwrap();
        assert!(b.try_reserve(1, end + 10).is_err(), "50 carried + 40 = 90, the usable budget");
    }

    #[test]
    fn a_new_limit_keeps_what_was_spent() {
        let b = WeightBudget::new(6000, 60);
        b.try_reserve(20, 61_000).unwrap();
        b.configure(40, 2, 61_500);
        b.try_reserve(16, 61_600).unwrap();
        assert!(b.try_reserve(2, 61_600).is_err(), "20 + 16 = 36 of 40 usable");
    }

    #[test]
    fn the_servers_higher_count_wins_and_a_429_pauses_every_request() {
        let b = WeightBudget::new(6000, 60);
        let t = 120_000;
        b.observe(5390, t);
        b.try_reserve(10, t).unwrap();
        assert!(b.try_reserve(10, t).is_err(), "5400 of 6000 is the usable budget");
        b.observe(1, t + 60_000);
        b.try_reserve(10, t + 60_000).unwrap();
        b.pause_until(t + 63_000);
        assert_eq!(b.try_reserve(1, t + 61_000), Err(Duration::from_millis(2000)));
        b.try_reserve(1, t + 63_000).unwrap();
    }

    #[test]
    fn the_header_names_the_window() {
        assert_eq!(WeightBudget::new(6000, 60).header(), "x-mbx-used-weight-1m");
        assert_eq!(WeightBudget::new(60, 2).header(), "x-mbx-used-weight-2s");
        assert_eq!(WeightBudget::new(60, 86_400).header(), "x-mbx-used-weight-1d");
    }
}
