//! The receive side: segments in, ACKs and RTT samples, the receive window, congestion window growth.

use super::*;

/// What an acknowledged segment recorded when it was sent.
struct Delivery {
    bytes: u64,
    /// Sent once: its round trip is unambiguous (Karn).
    once: bool,
    sent_at: Instant,
    del_at_send: u64,
    del_time_at_send: Instant,
    first_sent_at_send: Instant,
    app_limited: bool,
}

impl Delivery {
    fn of(seg: &Segment) -> Delivery {
        Delivery {
            bytes: (seg.data.len() + OVERHEAD) as u64,
            once: seg.xmit == 1,
            sent_at: seg.sent_at,
            del_at_send: seg.del_at_send,
            del_time_at_send: seg.del_time_at_send,
            first_sent_at_send: seg.first_sent_at_send,
            app_limited: seg.app_limited,
        }
    }
}

impl Kcp {
    // ---- network side: input ----

    /// Process one datagram's KCP bytes. `regular` is false for FEC-recovered data: its `wnd` is not
    /// trusted and it gives no RTT sample (spec §3.5).
    pub fn input(&mut self, now: Instant, mut data: &[u8], regular: bool) -> Result<(), InputError> {
        self.clock = now;
        let now = now.ms32();
        self.current = now;
        if data.len() < OVERHEAD {
            return Err(InputError::TooShort(data.len()));
        }
        let old_una = self.snd_una;
        self.sample = None;
        let mut latest_ack_ts = None;
        let mut window_slides = false;
        let mut fast_threshold = false;
        let mut result = Ok(());
        while let Some(h) = Header::parse(data) {
            if h.conv != self.conv {
                result = Err(InputError::Conv { got: h.conv, want: self.conv });
                break;
            }
            let body = &data[OVERHEAD..];
            if (body.len() as u64) < u64::from(h.len) {
                result = Err(InputError::Truncated { claimed: h.len, left: body.len() });
                break;
            }
            let Some(cmd) = Cmd::from_u8(h.cmd) else {
                result = Err(InputError::Cmd(h.cmd));
                break;
            };
            let payload = &body[..h.len as usize];
            if regular {
                self.rmt_wnd = u32::from(h.wnd);
            }
            if self.parse_una(h.una) > 0 {
                window_slides = true;
            }
            self.shrink_buf();
            match cmd {
                Cmd::Ack => {
                    if diff(h.ts, self.echo_ts) > 0 && diff(h.ts, now) <= 0 {
                        self.echo_ts = h.ts;
                    }
                    self.parse_ack(h.sn);
                    fast_threshold |= self.parse_fastack(h.sn, h.ts);
                    latest_ack_ts = Some(h.ts);
                }
                Cmd::Push => {
                    if self.peer_ts.is_none_or(|(t, _)| diff(h.ts, t) > 0) {
                        self.peer_ts = Some((h.ts, self.clock));
                    }
                    let mut repeat = true;
                    if self.over_budget(h.sn) {
                        // Not kept, so not acknowledged: the peer sends it again.
                        self.stats.budget_drops += 1;
                        crate::proto::budget::count_drop();
                        repeat = false;
                    } else if diff(h.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        self.acklist.push((h.sn, h.ts));
                        if diff(h.sn, self.rcv_nxt) >= 0 {
                            repeat = self.parse_data(h.sn, h.frg, payload);
                            self.rcv_arrived = self.rcv_arrived.wrapping_add(u32::from(!repeat));
                        }
                    }
                    if regular && repeat {
                        self.stats.repeat_segs += 1;
                    }
                }
                Cmd::Wask => self.probe |= ASK_TELL,
                Cmd::Wins => {}
            }
            self.stats.in_segs += 1;
            data = &body[h.len as usize..];
        }
        if let Some((rs, sent_at)) = self.sample.as_mut()
            && rs.rtt_us == 1
        {
            rs.rtt_us = self.clock.saturating_since(*sent_at).as_micros().max(1);
        }
        // RTT from the last ACK of the datagram, regular input only (kcp-go).
        if let (Some(ts), true) = (latest_ack_ts, regular) {
            let rtt = diff(now, ts);
            if rtt >= 0 {
                self.update_ack(rtt);
            }
        }
        if !self.nocwnd && diff(self.snd_una, old_una) > 0 {
            self.grow_cwnd();
        }
        if self.rcv_auto {
            self.tune_rcv_wnd();
        }
        if window_slides || fast_threshold {
            self.want_full = true;
        } else if !self.acklist.is_empty() && (self.ack_nodelay || self.acklist.len() >= self.mtu / OVERHEAD) {
            // ACK at once when asked to, or when a datagram's worth has piled up (kcp-go NEW "clocking").
            self.want_acks = true;
        }
        result
    }

    /// Whether `data`, a datagram's KCP bytes that arrived from an address this session has not used, is
    /// newer than anything the session has seen, so that it may move the session there (NAT rebinding):
    /// every segment is of this conv, well formed, and acknowledges no less than the peer already did
    /// (`una` at least `snd_una`) and nothing not yet sent (at most `snd_nxt`); and one segment is later
    /// evidence than any before it — a PUSH stamped after the newest the peer sent (by no more than the
    /// time since that one arrived, plus [`NEWER_SLACK_MS`]: the peer's clock runs as ours does, another
    /// client's does not), or an ACK echoing a send time after the newest echoed and not in the future.
    /// An old datagram replayed fails this once the session has heard anything newer (smux keepalives
    /// every 10 s see to it); a peer that reuses the conv by chance almost always fails it too.
    pub fn is_newer(&self, now: Instant, mut data: &[u8]) -> bool {
        let cur = now.ms32();
        let mut evidence = false;
        if data.len() < OVERHEAD {
            return false;
        }
        while let Some(h) = Header::parse(data) {
            let body = &data[OVERHEAD..];
            if h.conv != self.conv || (body.len() as u64) < u64::from(h.len) {
                return false;
            }
            if diff(h.una, self.snd_una) < 0 || diff(h.una, self.snd_nxt) > 0 {
                return false;
            }
            match Cmd::from_u8(h.cmd) {
                Some(Cmd::Push) => {
                    if let Some((ts, at)) = self.peer_ts {
                        let ahead = diff(h.ts, ts);
                        let since = now.saturating_since(at).as_millis().saturating_add(NEWER_SLACK_MS);
                        evidence |= ahead > 0 && ahead as u64 <= since;
                    }
                }
                Some(Cmd::Ack) => evidence |= diff(h.ts, self.echo_ts) > 0 && diff(h.ts, cur) <= 0,
                Some(_) => {}
                None => return false,
            }
            data = &body[h.len as usize..];
        }
        evidence && data.is_empty()
    }

    /// A segment was acknowledged for the first time: count its bytes, and keep it for the input's rate
    /// sample if it was sent after every other acknowledged so far in this input.
    fn on_delivered(&mut self, d: Delivery) {
        self.delivered += d.bytes;
        self.delivered_time = self.clock;
        let newer = self.sample.as_ref().is_none_or(|(_, at)| d.sent_at >= *at);
        let newly = self.sample.as_ref().map_or(0, |(s, _)| s.newly_acked) + d.bytes;
        if newer {
            self.first_sent_time = d.sent_at;
            let send_us = d.sent_at.saturating_since(d.first_sent_at_send).as_micros();
            let ack_us = self.clock.saturating_since(d.del_time_at_send).as_micros();
            let rs = RateSample {
                delivered: self.delivered - d.del_at_send,
                interval_us: send_us.max(ack_us),
                // Set once the input is done (1: measurable; 0: retransmitted, no sample).
                rtt_us: u64::from(d.once),
                prior_delivered: d.del_at_send,
                app_limited: d.app_limited,
                newly_acked: newly,
            };
            self.sample = Some((rs, d.sent_at));
        } else if let Some((s, _)) = self.sample.as_mut() {
            s.newly_acked = newly;
        }
    }

    /// Once a round trip, grow the receive window to [`RCV_WND_RTTS`] times what arrived in it (see
    /// [`Kcp::set_rcv_autotune`]); a new epoch begins.
    fn tune_rcv_wnd(&mut self) {
        let (at, from, arrived) = self.rcv_epoch;
        let rtt = kcpd_time::Duration::from_millis(if self.rx_srtt > 0 { self.rx_srtt as u64 } else { 100 });
        let since = self.clock.saturating_since(at);
        if since < rtt {
            return;
        }
        let taken = diff(self.rcv_nxt, from).max(0).max(self.rcv_arrived.wrapping_sub(arrived) as i32) as u64;
        // Per round trip, for an epoch that a quiet peer stretched.
        let per_rtt = taken * rtt.as_micros() / since.as_micros().max(1);
        let want = (RCV_WND_RTTS * per_rtt).min(u64::from(AUTO_RCV_WND_MAX)) as u32;
        let reader_keeps_up = self.rcv_queue.len() <= (self.rcv_wnd / 8) as usize;
        if want > self.rcv_wnd && reader_keeps_up && !crate::proto::budget::over() {
            self.rcv_wnd = want.min(self.rcv_wnd.saturating_mul(2));
        }
        self.rcv_epoch = (self.clock, self.rcv_nxt, self.rcv_arrived);
    }

    /// The delivery-rate sample of the last [`input`](Self::input), if it acknowledged anything.
    pub fn rate_sample(&self) -> Option<RateSample> {
        self.sample.map(|(s, _)| s)
    }

    pub(super) fn update_ack(&mut self, rtt: i32) {
        // RFC 6298, as kcp-go update_ack.
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttvar = rtt >> 1;
        } else {
            let mut delta = rtt - self.rx_srtt;
            self.rx_srtt += delta >> 3;
            if delta < 0 {
                delta = -delta;
            }
            if rtt < self.rx_srtt - self.rx_rttvar {
                // Below the expected range: 8x less weight.
                self.rx_rttvar += (delta - self.rx_rttvar) >> 5;
            } else {
                self.rx_rttvar += (delta - self.rx_rttvar) >> 2;
            }
        }
        let rto = (self.rx_srtt.max(0) as u32).saturating_add(self.interval.max((self.rx_rttvar.max(0) as u32) << 2));
        self.rx_rto = rto.clamp(self.rx_minrto.max(self.rto_floor), RTO_MAX);
    }

    fn shrink_buf(&mut self) {
        self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    /// Index of `sn` in `snd_buf` (contiguous sns from the front).
    pub(super) fn snd_index(&self, sn: u32) -> Option<usize> {
        let first = self.snd_buf.front()?.sn;
        let i = diff(sn, first);
        (i >= 0 && (i as usize) < self.snd_buf.len()).then_some(i as usize)
    }

    fn parse_ack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        if let Some(i) = self.snd_index(sn) {
            let seg = &mut self.snd_buf[i];
            if !seg.acked {
                seg.acked = true;
                self.acked_in_buf += 1;
                let rec = Delivery::of(&self.snd_buf[i]);
                self.on_delivered(rec);
                let seg = &mut self.snd_buf[i];
                // The payload is not needed any more; the slot stays until `una` passes it.
                let data = std::mem::take(&mut seg.data);
                self.recycle(data);
            }
        }
    }

    /// Every ACK counts a fast-ack for older unacked segments sent no later than the acked one (kcp-go,
    /// unlike C KCP). Returns true if one reached the fast-retransmit threshold.
    fn parse_fastack(&mut self, sn: u32, ts: u32) -> bool {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return false;
        }
        let resent = self.fastresend;
        let mut hit = false;
        for seg in self.snd_buf.iter_mut() {
            if diff(sn, seg.sn) <= 0 {
                break;
            }
            if !seg.acked && diff(seg.ts, ts) <= 0 {
                seg.fastack = seg.fastack.saturating_add(1);
                hit |= resent > 0 && seg.fastack >= resent && !seg.fast_done;
            }
        }
        hit
    }

    fn parse_una(&mut self, una: u32) -> usize {
        let mut n = 0;
        while let Some(seg) = self.snd_buf.front() {
            if diff(una, seg.sn) > 0 {
                let seg = self.snd_buf.pop_front().expect("front exists");
                if seg.acked {
                    self.acked_in_buf -= 1;
                } else {
                    self.on_delivered(Delivery::of(&seg));
                }
                self.give(seg);
                n += 1;
            } else {
                break;
            }
        }
        n
    }

    /// Over the process's memory budget ([`crate::proto::budget`]), a PUSH for `sn` is not kept unless it
    /// is the next in order and few segments wait to be read.
    fn over_budget(&self, sn: u32) -> bool {
        let i = diff(sn, self.rcv_nxt);
        i >= 0
            && (i > 0 || self.rcv_queue.len() >= crate::proto::budget::OVER_QUEUE)
            && (i as u32) < self.rcv_wnd
            && crate::proto::budget::over()
    }

    /// Store a PUSH in the reorder buffer; true if it was a repeat.
    fn parse_data(&mut self, sn: u32, frg: u8, payload: &[u8]) -> bool {
        let i = diff(sn, self.rcv_nxt);
        if i < 0 || i as u32 >= self.rcv_wnd {
            return true;
        }
        let i = i as usize;
        // Grown on demand (an idle or in-order session keeps it empty, not a window of slots).
        if self.rcv_buf.len() <= i {
            self.rcv_buf.resize_with(i + 1, || None);
        }
        if self.rcv_buf[i].is_some() {
            return true;
        }
        // Sized for the segment: a peer's MSS may exceed ours (any --mtu up to 1500).
        let mut data = crate::proto::pool::take(payload.len().max(self.mss));
        data.extend_from_slice(payload);
        self.rcv_charged += data.capacity();
        crate::proto::budget::charge(data.capacity() as isize);
        self.rcv_buf[i] = Some(Segment { sn, frg, data, ..Segment::default() });
        self.move_ready();
        false
    }

    fn grow_cwnd(&mut self) {
        if self.cwnd >= self.rmt_wnd {
            return;
        }
        let mss = self.mss as u32;
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr += mss;
        } else {
            if self.incr < mss {
                self.incr = mss;
            }
            self.incr += ((u64::from(mss) * u64::from(mss)) / u64::from(self.incr)) as u32 + mss / 16;
            if (self.cwnd + 1) * mss <= self.incr {
                self.cwnd = self.incr.div_ceil(mss.max(1));
            }
        }
        if self.cwnd > self.rmt_wnd {
            self.cwnd = self.rmt_wnd;
            self.incr = self.rmt_wnd * mss;
        }
    }
}
