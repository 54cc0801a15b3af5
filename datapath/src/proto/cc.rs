//! Congestion control and pacing, sender side only: nothing here changes a byte format, so a stock kcptun
//! receiver understands every datagram. Three modes ([`CcMode`]):
//!
//! - `none`: kcp-go's sending, byte for byte (windows and `--mode`'s `nc` only; the golden traces hold);
//! - `bbr`: a model-based controller in the spirit of BBR v1 ([`Bbr`]): the bottleneck bandwidth is the
//!   windowed maximum of delivery-rate samples ([`RateSample`]) over 10 round trips, the path's RTT the
//!   minimum over 10 s; it paces at a gain cycle around that rate (probing up until what is in flight shows
//!   it, draining until the queue it made is gone) and caps what is in flight near the product (1.25×, or
//!   the product plus two KCP flush intervals; BBR v1's twice the product lets the first flow on
//!   a link keep its queue, and the link, from the next). Probing adds at least a number of segments that
//!   doubles every quiet gain cycle (up to 64), the same for every flow, so a small flow grows faster than
//!   a large one and shares converge. Random loss does not move it. **Its loss rule**: a round trip in which the
//!   flow pushed (startup, probing up, or the round after) that lost more than 2% of its segments, more
//!   than twice the path's steady loss (an average over earlier rounds) and more than that steady rate
//!   explains by chance (three standard deviations of a Poisson count, plus one), while its RTT stood 25%
//!   above the minimum (a queue), caps the bandwidth estimate at 85% of what it was for the next 10
//!   rounds: loss with a standing queue after the flow's own push is congestion; loss without a queue is
//!   the path, and loss while the flow cruises at its estimate is another flow's probe. Until eight
//!   rounds have taught the steady loss, the rule also needs eight losses in the round (BBR v2's count).
//!   In startup it also ends startup.
//!   **Its standing-queue rule**: a gain cycle in which no RTT sample came within 10% (plus 1 ms) of the
//!   minimum backs the estimate off by a tenth for 10 rounds, and the next two cycles probe by their
//!   additive part alone, from eight segments a round: every flow on the link sees the same queue, so
//!   the flows back off together and regain the same number of segments each (AIMD). ACK-only datagrams
//!   are never held by the pacer (a held ACK looks like loss to the peer);
//! - `rate`: pace at a declared rate (hysteria's "Brutal"), whatever the path says; never the default.
//!
//! The [`Pacer`] spreads datagrams at the pacing rate with a burst of four milliseconds' worth (at least two
//! datagrams), charged in wire bytes: parity and retransmissions count.

use kcpd_time::{Duration, Instant};

use crate::proto::kcp::RateSample;

/// Which congestion controller a session's sender runs (`--cc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CcMode {
    /// kcp-go's sending, unchanged.
    #[default]
    None,
    /// Model-based ([`Bbr`]).
    Bbr,
    /// A fixed pacing rate in bytes per second.
    Rate(u64),
}

/// A token bucket in wire bytes at sub-millisecond resolution; a sender may go into debt by one datagram.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: u64,
    tokens: i64,
    burst: i64,
    at: Instant,
}

impl Pacer {
    /// A pacer at `rate` bytes per second for datagrams of up to `mtu` bytes.
    pub fn new(now: Instant, rate: u64, mtu: usize) -> Self {
        let mut p = Pacer { rate: 0, tokens: 0, burst: 0, at: now };
        p.set_rate(rate, mtu);
        p.tokens = p.burst;
        p
    }

    /// Change the rate (bytes per second); the burst follows (4 ms worth, at least two datagrams): a
    /// wake-up that comes late (a busy core, the timer's millisecond) catches up that much, and a bucket
    /// of one millisecond lost the rest for good — the sender fell behind its own rate, the controller
    /// learned the shortfall as the path's rate, and paced lower still (30 MB/s to 4 in three seconds
    /// on a 2-core machine, through a relay on the same cores).
    pub fn set_rate(&mut self, rate: u64, mtu: usize) {
        self.rate = rate.max(1);
        self.burst = ((self.rate / 250) as i64).max(2 * mtu as i64);
        self.tokens = self.tokens.min(self.burst);
    }

    /// The rate, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The most wire bytes that may go back to back (4 ms worth).
    pub fn burst(&self) -> usize {
        self.burst as usize
    }

    fn refill(&mut self, now: Instant) {
        let us = now.saturating_since(self.at).as_micros();
        if us == 0 {
            return;
        }
        let add = (u128::from(us) * u128::from(self.rate) / 1_000_000).min(i64::MAX as u128) as i64;
        if add > 0 {
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
            self.at = now;
        }
    }

    /// May a datagram go now?
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    /// A datagram of `len` bytes went.
    pub fn spend(&mut self, len: usize) {
        self.tokens -= len as i64;
    }

    /// When the next datagram may go (now, if it may).
    pub fn next_at(&self, now: Instant) -> Instant {
        if self.tokens > 0 {
            return now;
        }
        let us = ((1 - self.tokens) as u64 * 1_000_000).div_ceil(self.rate);
        self.at + Duration::from_micros(us.max(1))
    }
}

const STARTUP_GAIN: f64 = 2.885;
/// Startup's in-flight cap, in estimated bandwidth-delay products (BBR v3's; v1 used the pacing gain):
/// a path with a queue of one product holds two, and at 2.885 a long path's startup overflowed the queue
/// by most of a product in its last round before the loss rule could end it (1600 datagrams at
/// 100 Mbit/s and 300 ms in the simulator, and a second of RTO stall after).
const STARTUP_CWND_GAIN: f64 = 2.0;
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const BW_ROUNDS: usize = 10;
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
const MIN_CWND: u32 = 4;
const CWND_GAIN: f64 = 1.25;
/// A gain cycle whose lowest RTT sample stayed above the minimum by this factor plus [`QUEUE_SLACK_US`]
/// never saw the queue drain: the flows on the link together send more than it carries.
const QUEUE_RTT_GAIN: f64 = 1.1;
const QUEUE_SLACK_US: u64 = 1_000;
/// What the standing-queue rule leaves of the estimate (for [`BW_ROUNDS`] rounds).
const QUEUE_BACKOFF: f64 = 0.9;
/// For this many gain cycles after the standing-queue rule fired, probing adds only its additive part,
/// which starts again at this many segments per round trip: at one (then two, four), the flows regained
/// far less than the tenth each gave up, the 1.25 probe that followed restored the rest in proportion,
/// and shares stayed where they were (100 Mbit/s, 1% loss, 3 s apart: 1.30:1 in the median of 8 seeds,
/// 1.09:1 at eight).
const ADDITIVE_CYCLES: u32 = 2;
const QUEUE_PROBE_ADD: u32 = 8;
/// Probing's additive part stops doubling here (segments per round trip). Past the point where it makes
/// every flow's probe the 2× clamp, probing is multiplicative again and shares freeze: on the real
/// 100 Mbit/s link, one flow whose queue stayed just under the standing-queue threshold doubled it to
/// millions, probed at 2× every cycle and kept 6.6 MB/s of 9.4.
const PROBE_ADD_MAX: u32 = 64;
/// Until this many rounds have taught the path's steady loss, the loss rule also needs
/// [`LOSS_MIN_EVENTS`] losses in the round (BBR v2's count).
const LOSS_LEARN_ROUNDS: u32 = 8;
const LOSS_MIN_EVENTS: u64 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Startup,
    Drain,
    ProbeBw(usize),
    ProbeRtt,
}

/// The model-based controller (see the module docs for its loss rule).
#[derive(Clone, Debug)]
pub struct Bbr {
    seg: u64,
    state: State,
    /// Per-round maxima of the delivery rate (bytes/s), newest last.
    bw_rounds: [u64; BW_ROUNDS],
    min_rtt_us: u64,
    min_rtt_at: Instant,
    round: u64,
    next_round_delivered: u64,
    full_bw: u64,
    full_bw_rounds: u32,
    filled: bool,
    cycle_at: Instant,
    probe_rtt_until: Option<Instant>,
    /// This round's losses and deliveries (segments), its largest RTT sample.
    round_lost: u64,
    round_delivered: u64,
    round_max_rtt_us: u64,
    /// The path's steady loss rate (an average over rounds), and the cap the loss rule set (bytes/s,
    /// rounds left).
    loss_avg: f64,
    cap: Option<(u64, u32)>,
    /// Probing's additive part: segments per round trip above the estimate, doubling every gain cycle
    /// without congestion up to [`PROBE_ADD_MAX`], back to one when the loss rule fires and to
    /// [`QUEUE_PROBE_ADD`] when the standing-queue rule does.
    probe_add: u32,
    /// The rounds averaged into `loss_avg`.
    loss_rounds: u32,
    initial_cwnd: u32,
    ack_delay_us: u64,
    /// The lowest RTT sample of the current gain cycle (µs), and the gain cycles since the standing-queue
    /// rule last fired.
    cycle_min_rtt_us: u64,
    since_queue: u32,
}

impl Bbr {
    /// A controller for segments of `seg` bytes (KCP MSS plus header), starting with `initial_cwnd`
    /// segments in flight, whose peer may delay an acknowledgement by up to `ack_delay`.
    pub fn new(now: Instant, seg: usize, initial_cwnd: u32, ack_delay: Duration) -> Self {
        Bbr {
            seg: seg.max(1) as u64,
            state: State::Startup,
            bw_rounds: [0; BW_ROUNDS],
            min_rtt_us: u64::MAX,
            min_rtt_at: now,
            round: 0,
            next_round_delivered: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            filled: false,
            cycle_at: now,
            probe_rtt_until: None,
            round_lost: 0,
            round_delivered: 0,
            round_max_rtt_us: 0,
            loss_avg: 0.0,
            cap: None,
            probe_add: 1,
            initial_cwnd: initial_cwnd.max(MIN_CWND),
            ack_delay_us: ack_delay.as_micros(),
            loss_rounds: 0,
            cycle_min_rtt_us: u64::MAX,
            since_queue: u32::MAX,
        }
    }

    /// The bottleneck bandwidth estimate, bytes per second (0 before the first sample).
    pub fn bandwidth(&self) -> u64 {
        let max = self.bw_rounds.iter().copied().max().unwrap_or(0);
        match self.cap {
            Some((c, _)) => max.min(c),
            None => max,
        }
    }

    /// The minimum RTT seen (µs), if any.
    pub fn min_rtt_us(&self) -> Option<u64> {
        (self.min_rtt_us != u64::MAX).then_some(self.min_rtt_us)
    }

    /// Still looking for the bottleneck's rate.
    pub fn in_startup(&self) -> bool {
        self.state == State::Startup
    }

    fn pacing_gain(&self) -> f64 {
        match self.state {
            State::Startup => STARTUP_GAIN,
            State::Drain => 1.0 / STARTUP_GAIN,
            State::ProbeBw(0) => self.probe_gain(),
            State::ProbeBw(i) => CYCLE[i],
            State::ProbeRtt => 1.0,
        }
    }

    /// Probing's gain: 1.25, or more when the additive part is larger (it is the same number of segments
    /// for every flow, so a small flow grows faster than a large one and shares converge); only the
    /// additive part for two gain cycles after the standing-queue rule fired (a multiplicative probe
    /// leaves shares where they are, and flows backing off in proportion keep them too).
    fn probe_gain(&self) -> f64 {
        let add = match self.bdp_segments(1.0) {
            Some(bdp) => 1.0 + f64::from(self.probe_add) / f64::from(bdp),
            None => CYCLE[0],
        };
        let floor = if self.since_queue < ADDITIVE_CYCLES { 1.0 } else { CYCLE[0] };
        add.clamp(floor, 2.0)
    }

    fn bdp_segments(&self, gain: f64) -> Option<u32> {
        let (bw, rtt) = (self.bandwidth(), self.min_rtt_us()?);
        if bw == 0 {
            return None;
        }
        let bytes = bw as f64 * rtt as f64 / 1e6 * gain;
        Some(((bytes / self.seg as f64).ceil() as u32).max(MIN_CWND))
    }

    /// Pacing rate, bytes per second of KCP segments.
    pub fn pacing_rate(&self) -> u64 {
        // The initial window per RTT (100 ms until one is measured): where startup begins, and a floor.
        let rtt = self.min_rtt_us().unwrap_or(100_000).max(1_000);
        let initial = u64::from(self.initial_cwnd) * self.seg * 1_000_000 / rtt;
        let bw = self.bandwidth();
        if bw == 0 {
            return (initial as f64 * STARTUP_GAIN) as u64;
        }
        // The floor matters to an end that sends little: its estimate comes from its own trickle (a
        // receiver's smux window updates, a request), and pacing that trickle at its own rate held each
        // window update for a round trip, which stalled the peer's bulk sender.
        ((bw as f64 * self.pacing_gain()) as u64).max(initial)
    }

    /// Segments that may be in flight: in startup and drain, the product at startup's gain; probing, the
    /// product at probing's gain; otherwise what keeps the pipe full, the product over the longer of 1.25
    /// minimum RTTs and the minimum plus the delay KCP adds (data waits for this end's flush, its ACK
    /// for the peer's: two flush intervals) — and no more, so that a flow holding more than its share of
    /// a queue cannot keep it (the in-flight cap of BBR v1, twice the product, lets the first flow hold the
    /// queue for good).
    pub fn cwnd(&self) -> u32 {
        if self.state == State::ProbeRtt {
            return MIN_CWND;
        }
        let gain = match (self.state, self.min_rtt_us()) {
            (State::Startup | State::Drain, _) => STARTUP_CWND_GAIN,
            (_, Some(m)) if m > 0 => {
                let headroom = ((m + self.ack_delay_us) as f64 / m as f64).max(CWND_GAIN);
                headroom.max(self.pacing_gain())
            }
            _ => CWND_GAIN,
        };
        // Two segments of headroom for ACK aggregation at small windows.
        self.bdp_segments(gain).map_or(self.initial_cwnd, |c| c + 2)
    }

    /// Feed what one input acknowledged (`rs`), the segments now in flight and the segments found lost
    /// (retransmitted) since the last call.
    pub fn on_ack(&mut self, now: Instant, rs: RateSample, in_flight: u32, lost: u64) {
        if rs.rtt_us > 0 && (rs.rtt_us <= self.min_rtt_us || now.saturating_since(self.min_rtt_at) > MIN_RTT_WINDOW) {
            // A stale minimum is replaced by the current sample (and probe-RTT is due, below).
            let stale = now.saturating_since(self.min_rtt_at) > MIN_RTT_WINDOW && rs.rtt_us > self.min_rtt_us;
            self.min_rtt_us = rs.rtt_us;
            self.min_rtt_at = now;
            if stale && self.state != State::ProbeRtt && self.filled {
                self.state = State::ProbeRtt;
                self.probe_rtt_until = Some(now + PROBE_RTT_TIME);
            }
        }
        self.round_lost += lost;
        self.round_delivered += rs.newly_acked.div_ceil(self.seg);
        self.round_max_rtt_us = self.round_max_rtt_us.max(rs.rtt_us);
        if rs.rtt_us > 0 {
            self.cycle_min_rtt_us = self.cycle_min_rtt_us.min(rs.rtt_us);
        }
        // A round ends when a segment sent after it began is acknowledged.
        let round_start = rs.prior_delivered >= self.next_round_delivered;
        let rate = (rs.delivered.saturating_mul(1_000_000)).checked_div(rs.interval_us).unwrap_or(0);
        if round_start {
            self.end_round();
            self.next_round_delivered = rs.prior_delivered + rs.delivered;
        }
        // App-limited samples only count when they raise the estimate. A retransmitted segment's sample
        // does not count (which copy was acknowledged is unknown), and past startup a sample counts for at
        // most 1.25× the estimate (probing's gain): KCP acknowledges in bursts (ACKs below `una` are not
        // sent), so a sample can span deliveries of an earlier interval and overstate the rate.
        let bw = self.bandwidth();
        let rate = if self.filled && bw > 0 { rate.min((bw as f64 * self.probe_gain()) as u64) } else { rate };
        let slot = &mut self.bw_rounds[BW_ROUNDS - 1];
        if rs.rtt_us > 0 && (!rs.app_limited || rate > *slot) {
            *slot = (*slot).max(rate);
        }
        // Startup ends when the path, not the application or a window, stops the growth.
        if round_start && !rs.app_limited {
            self.check_full_bw();
        }
        self.advance(now, in_flight, lost > 0);
    }

    fn end_round(&mut self) {
        self.round += 1;
        // The loss rule.
        let total = self.round_lost + self.round_delivered;
        if total >= 20 {
            let loss = self.round_lost as f64 / total as f64;
            let queued = self.min_rtt_us().is_some_and(|m| self.round_max_rtt_us as f64 > m as f64 * 1.25);
            // More losses than the steady rate explains by chance (three standard deviations of a Poisson
            // count, plus one): a round of a few dozen segments on a 1% path loses two or three often
            // enough, and a rule that fired on chance capped the smaller of two flows — which has the
            // shortest rounds, the noisiest counts — again and again (1.5:1 on a shared link).
            let expected = self.loss_avg * total as f64;
            let beyond_chance = self.round_lost as f64 > expected + 3.0 * expected.sqrt() + 1.0;
            // Only a round in which this flow was pushing (startup, probing up or the round after) can
            // show its own excess: loss while it cruises at its estimate is another flow's probe or the
            // path, and a rule that fired on it capped a flow again and again (1 MB/s of 12 on a real
            // 100 Mbit/s link).
            // Before the steady rate is learnt, two losses in a round of a hundred are not beyond chance
            // on a 1% path: startup then ended at a fifth of a real 100 Mbit/s link.
            let beyond_chance =
                beyond_chance && (self.loss_rounds >= LOSS_LEARN_ROUNDS || self.round_lost >= LOSS_MIN_EVENTS);
            let pushing = matches!(self.state, State::Startup | State::ProbeBw(0) | State::ProbeBw(1));
            if loss > (2.0 * self.loss_avg).max(0.02) && beyond_chance && queued && pushing {
                let bw = self.bandwidth();
                if bw > 0 {
                    self.cap = Some(((bw as f64 * 0.85) as u64, BW_ROUNDS as u32));
                }
                self.probe_add = 1;
                // Startup found the bottleneck's queue full: it ends (BBR v2), where its 2.885 gain went
                // on for the rounds the growth check takes and lost a queue's worth (a thousand datagrams
                // at 100 Mbit/s and 150 ms in the simulator).
                self.filled = true;
            } else {
                self.loss_avg = self.loss_avg * 0.875 + loss * 0.125;
                self.loss_rounds = self.loss_rounds.saturating_add(1);
            }
        }
        if let Some((c, left)) = self.cap {
            self.cap = (left > 1).then_some((c, left - 1));
        }
        self.round_lost = 0;
        self.round_delivered = 0;
        self.round_max_rtt_us = 0;
        self.bw_rounds.rotate_left(1);
        self.bw_rounds[BW_ROUNDS - 1] = 0;
    }

    /// The standing-queue rule, at the end of each gain cycle: if not one RTT sample of the cycle came
    /// near the minimum, the queue never drained although this flow drained its own part, so the flows on
    /// the link together send more than it carries (their estimates, maxima over ten rounds, each caught
    /// a moment of a larger share). Every flow on the link sees the same queue and backs off by the same
    /// factor; the probes that follow add the same number of segments for each, so the larger flow gives
    /// up more than it regains — AIMD's convergence, which probing by a factor alone lacks (two flows on
    /// a 100 Mbit/s link with 1% loss kept splits up to 2.7:1 in the simulator).
    fn end_cycle(&mut self) {
        // A cycle without a sample (`u64::MAX`) shows nothing either way.
        let standing = self.cycle_min_rtt_us != u64::MAX
            && self
                .min_rtt_us()
                .is_some_and(|m| self.cycle_min_rtt_us as f64 > m as f64 * QUEUE_RTT_GAIN + QUEUE_SLACK_US as f64);
        if standing {
            let bw = self.bandwidth();
            if bw > 0 {
                self.cap = Some(((bw as f64 * QUEUE_BACKOFF) as u64, BW_ROUNDS as u32));
            }
            self.probe_add = QUEUE_PROBE_ADD;
            self.since_queue = 0;
        } else {
            self.since_queue = self.since_queue.saturating_add(1);
        }
        self.cycle_min_rtt_us = u64::MAX;
    }

    fn check_full_bw(&mut self) {
        if self.filled {
            return;
        }
        let bw = self.bandwidth();
        if bw as f64 >= self.full_bw as f64 * 1.25 {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        if self.full_bw_rounds >= 3 {
            self.filled = true;
        }
    }

    fn advance(&mut self, now: Instant, in_flight: u32, lost: bool) {
        match self.state {
            State::Startup if self.filled => self.state = State::Drain,
            State::Drain if self.bdp_segments(1.0).is_none_or(|bdp| in_flight <= bdp) => {
                self.state = State::ProbeBw(2);
                self.cycle_at = now;
            }
            State::ProbeBw(i) => {
                let phase = Duration::from_micros(self.min_rtt_us().unwrap_or(100_000));
                let elapsed = now.saturating_since(self.cycle_at) >= phase;
                let gain = if i == 0 { self.probe_gain() } else { CYCLE[i] };
                // Probing up lasts until what is in flight shows the higher rate (or loss says stop);
                // draining ends early once the queue it made is gone (BBR v1's phase rules).
                let done = if gain > 1.0 {
                    elapsed && (lost || self.bdp_segments(gain).is_none_or(|b| in_flight >= b))
                } else if gain < 1.0 {
                    elapsed || self.bdp_segments(1.0).is_none_or(|b| in_flight <= b)
                } else {
                    elapsed
                };
                if done {
                    if i == CYCLE.len() - 1 {
                        self.end_cycle();
                    }
                    if i == 0 && self.cap.is_none() {
                        self.probe_add = (self.probe_add * 2).min(PROBE_ADD_MAX);
                    }
                    self.state = State::ProbeBw((i + 1) % CYCLE.len());
                    self.cycle_at = now;
                }
            }
            State::ProbeRtt if self.probe_rtt_until.is_some_and(|t| now >= t) => {
                self.probe_rtt_until = None;
                self.min_rtt_at = now;
                self.state = if self.filled { State::ProbeBw(2) } else { State::Startup };
                self.cycle_at = now;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spreads_datagrams_at_its_rate() {
        let t0 = Instant::from_millis(1000);
        // 1 MB/s, 1000-byte datagrams: a burst of four (4 ms worth), then one per millisecond.
        let mut p = Pacer::new(t0, 1_000_000, 1000);
        let mut sent = 0;
        let mut now = t0;
        for _ in 0..100_000 {
            if p.ready(now) {
                p.spend(1000);
                sent += 1;
            } else {
                now = p.next_at(now).max(now + Duration::from_micros(1));
            }
            if now >= t0 + Duration::from_secs(1) {
                break;
            }
        }
        assert!((1000..=1005).contains(&sent), "{sent} datagrams in a second at 1000/s");
    }

    /// An input acknowledging 100 segments of 1000 bytes on a path delivering 10 MB/s (500 KB per 50 ms
    /// sample interval), with this RTT sample; `delivered` advances.
    fn sample(delivered: &mut u64, rtt_us: u64) -> RateSample {
        let rs = RateSample {
            delivered: 500_000,
            interval_us: 50_000,
            rtt_us,
            prior_delivered: delivered.saturating_sub(500_000),
            app_limited: false,
            newly_acked: 100_000,
        };
        *delivered += 100_000;
        rs
    }

    /// A controller after 4 s of a 10 MB/s path with an RTT of `rtt_us` (every 10 ms, 100 segments
    /// acknowledged, `in_flight` in flight): (now, controller, delivered).
    fn learnt(rtt_us: u64, in_flight: u32) -> (Instant, Bbr, u64) {
        let mut now = Instant::from_millis(1000);
        let mut b = Bbr::new(now, 1000, 10, Duration::from_millis(10));
        let mut delivered = 0u64;
        for _ in 0..400 {
            now += Duration::from_millis(10);
            b.on_ack(now, sample(&mut delivered, rtt_us), in_flight, 0);
        }
        (now, b, delivered)
    }

    #[test]
    fn bbr_learns_the_bottleneck_and_caps_in_flight_near_the_bdp() {
        // A 10 MB/s path with a 50 ms RTT.
        let (mut now, mut b, mut delivered) = learnt(50_000, 500);
        assert!(!b.in_startup());
        assert_eq!(b.bandwidth(), 10_000_000);
        // 1.25 × BDP = 625 segments of 1000 bytes (plus two) outside probing, up to probing's gain.
        let cwnd = b.cwnd();
        assert!(cwnd == 627 || (b.pacing_gain() > 1.25 && cwnd <= 1002), "{cwnd}");
        // Random loss (2%) without a queue does not move the estimate.
        for _ in 0..100 {
            now += Duration::from_millis(10);
            b.on_ack(now, sample(&mut delivered, 50_000), 500, 2);
        }
        assert_eq!(b.bandwidth(), 10_000_000);
        // Heavy loss with a standing queue caps it.
        for _ in 0..10 {
            now += Duration::from_millis(10);
            b.on_ack(now, sample(&mut delivered, 90_000), 500, 30);
        }
        assert!(b.bandwidth() < 9_000_000, "{}", b.bandwidth());
    }

    /// The loss rule fires on a flow's own excess only: when a round in which it pushed (probing up) lost
    /// more than the path's steady rate explains by chance, with a queue standing; not on a small round's
    /// two or three losses, not while the flow cruises at its estimate (another flow's probe), not without
    /// a queue (the path).
    #[test]
    fn the_loss_rule_needs_excess_beyond_chance_from_a_pushing_flow() {
        let fires = |state: State, lost: u64, delivered: u64, max_rtt_us: u64| {
            let (_, mut b, _) = learnt(50_000, 500);
            (b.state, b.loss_avg, b.cap) = (state, 0.01, None);
            (b.round_lost, b.round_delivered, b.round_max_rtt_us) = (lost, delivered, max_rtt_us);
            b.end_round();
            b.cap.is_some()
        };
        assert!(fires(State::ProbeBw(0), 8, 100, 90_000));
        assert!(fires(State::ProbeBw(1), 8, 100, 90_000));
        // 3 of 40 (7%) on a 1% path: chance (expected 0.4, sd 0.6).
        assert!(!fires(State::ProbeBw(0), 3, 40, 90_000));
        assert!(!fires(State::ProbeBw(3), 8, 100, 90_000));
        assert!(!fires(State::ProbeBw(0), 8, 100, 55_000));
        // Before the steady rate is learnt (startup), it takes eight losses, not two of a hundred.
        let fires_unlearnt = |lost: u64| {
            let mut b = Bbr::new(Instant::from_millis(1000), 1000, 10, Duration::from_millis(10));
            (b.min_rtt_us, b.bw_rounds[BW_ROUNDS - 1]) = (50_000, 1_000_000);
            (b.round_lost, b.round_delivered, b.round_max_rtt_us) = (lost, 100, 90_000);
            b.end_round();
            b.cap.is_some()
        };
        assert!(!fires_unlearnt(3));
        assert!(fires_unlearnt(8));
    }

    /// A gain cycle in which the queue never drained (no RTT sample near the minimum) backs the estimate
    /// off by a tenth and makes the next probes additive; one sample near the minimum in the cycle is
    /// enough to leave it alone.
    #[test]
    fn a_queue_standing_through_a_gain_cycle_backs_off() {
        let run = |rtts: &dyn Fn(usize) -> u64| {
            let (mut now, mut b, mut delivered) = learnt(50_000, 500);
            for i in 0..100 {
                now += Duration::from_millis(10);
                b.on_ack(now, sample(&mut delivered, rtts(i)), 2000, 0);
            }
            b
        };
        // 60 ms against a 50 ms minimum (the threshold is 56) for a second: eight or more phases of 50 ms.
        let b = run(&|_| 60_000);
        assert!(b.bandwidth() <= 9_000_000, "{}", b.bandwidth());
        assert!(b.since_queue < ADDITIVE_CYCLES);
        assert_eq!(b.probe_gain(), 1.0 + f64::from(b.probe_add) / f64::from(b.bdp_segments(1.0).unwrap()));
        // The same, but one sample in twenty at the minimum.
        let b = run(&|i| if i % 20 == 0 { 50_000 } else { 60_000 });
        assert_eq!(b.bandwidth(), 10_000_000);
        assert!(b.probe_gain() >= CYCLE[0]);
    }

    /// Round trips without a single sample (every acknowledged segment a retransmission) empty the
    /// bandwidth window; the next samples must refill it (they were clamped to a multiple of the empty
    /// estimate, zero, and the session crawled at its initial window for good).
    #[test]
    fn an_empty_bandwidth_window_refills() {
        let (mut now, mut b, mut delivered) = learnt(50_000, 500);
        for _ in 0..200 {
            now += Duration::from_millis(10);
            let mut rs = sample(&mut delivered, 50_000);
            rs.rtt_us = 0;
            b.on_ack(now, rs, 500, 100);
        }
        assert_eq!(b.bandwidth(), 0);
        for _ in 0..50 {
            now += Duration::from_millis(10);
            b.on_ack(now, sample(&mut delivered, 50_000), 500, 0);
        }
        assert_eq!(b.bandwidth(), 10_000_000);
    }

    /// On a short path the receiver's acknowledgement delay is most of the round trip: the in-flight cap
    /// covers it.
    #[test]
    fn the_in_flight_cap_covers_the_acknowledgement_delay() {
        let (_, b, _) = learnt(2_000, 20);
        // 10 MB/s over 2 ms + 10 ms: 120 segments (the product alone is 20).
        assert!(b.cwnd() >= 120, "{}", b.cwnd());
    }
}
