//! The send side: kcp-go's flush as a stage machine (ACKs, window probes, data), one datagram per
//! `poll_transmit`, with RTO, fast and early retransmission and the congestion window.

use super::*;

/// Where a flush in progress stands (a flush may span several `poll_transmit` calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    Idle,
    Acks,
    Probes,
    Data,
}

#[derive(Debug)]
pub(super) struct Flush {
    pub(super) stage: Stage,
    pub(super) ack_only: bool,
    /// Index into `acklist`.
    pub(super) ack_i: usize,
    /// sn of the next `snd_buf` segment to visit.
    pub(super) cursor: u32,
    /// sn of a segment already chosen for (re)transmission that did not fit the previous datagram.
    pub(super) carry: Option<u32>,
    pub(super) wnd: u16,
    pub(super) una: u32,
    /// sn/ts of the last ACK written: kcp-go's probe segments reuse its template.
    pub(super) tmpl_sn: u32,
    pub(super) tmpl_ts: u32,
    pub(super) new_segs: usize,
    pub(super) change: u32,
    pub(super) lost: u32,
    pub(super) cwnd: u32,
    pub(super) resent: u32,
    pub(super) minrto: i32,
}

impl Kcp {
    // ---- network side: output ----

    /// Something to send now or later: segments queued or unacknowledged, ACKs owed, a probe to make.
    fn has_work(&self) -> bool {
        !self.snd_buf.is_empty()
            || !self.snd_queue.is_empty()
            || !self.acklist.is_empty()
            || self.probe != 0
            || self.rmt_wnd == 0
    }

    /// When [`poll_transmit`](Self::poll_transmit) has something to do: `now` (the last time seen) if a
    /// flush is requested, the next timer flush if there is work in flight, `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.want_full || self.want_acks || self.flush.stage != Stage::Idle {
            Some(self.clock)
        } else if self.has_work() {
            Some(if self.armed { self.clock.at_ms32(self.ts_flush) } else { self.clock })
        } else {
            None
        }
    }

    /// Write the next datagram of KCP segments into `out` (at least [`mtu`](Self::mtu) bytes) and return
    /// its length; `None` when nothing is due. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.clock = now;
        let now = now.ms32();
        self.current = now;
        assert!(out.len() >= self.mtu, "output buffer smaller than the KCP MTU");
        if self.flush.stage == Stage::Idle {
            let work = self.has_work();
            if !work {
                self.armed = false;
            }
            let timer = work && (!self.armed || diff(now, self.ts_flush) >= 0);
            if self.want_full || timer {
                self.start_flush(false);
            } else if self.want_acks {
                self.start_flush(true);
            } else {
                return None;
            }
            self.want_full = false;
            self.want_acks = false;
        }
        let out = &mut out[..self.mtu];
        let mut pos = 0;
        loop {
            match self.flush.stage {
                Stage::Idle => {
                    // Input or a send may have asked for another flush while a resumed one finished empty:
                    // run it now rather than report nothing to send.
                    if pos == 0 && (self.want_full || self.want_acks) {
                        self.start_flush(!self.want_full);
                        self.want_full = false;
                        self.want_acks = false;
                        continue;
                    }
                    return (pos > 0).then_some(pos);
                }
                Stage::Acks => {
                    if !self.write_acks(out, &mut pos) {
                        return Some(pos);
                    }
                    self.acklist.clear();
                    self.flush.ack_i = 0;
                    self.flush.stage = if self.flush.ack_only { Stage::Idle } else { Stage::Probes };
                }
                Stage::Probes => {
                    if !self.write_probes(now, out, &mut pos) {
                        return Some(pos);
                    }
                    self.fill_window();
                    self.flush.stage = Stage::Data;
                }
                Stage::Data => {
                    if !self.write_data(now, out, &mut pos) {
                        return Some(pos);
                    }
                    self.finish_flush(now);
                }
            }
        }
    }

    /// Write pending ACKs only (none of the flush's data) into `out` and return the datagram's length;
    /// `None` when there are none. A paced sender calls this while its pacer holds data back: an ACK
    /// that waited for the pacer would look like loss to the peer.
    pub fn poll_acks(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.clock = now;
        self.current = now.ms32();
        let out = &mut out[..self.mtu];
        if self.flush.stage == Stage::Acks {
            // A flush whose ACKs did not fit one datagram: its ACK stage goes on now, its data waits.
            let mut pos = 0;
            if self.write_acks(out, &mut pos) {
                self.acklist.clear();
                self.flush.ack_i = 0;
                self.flush.stage = if self.flush.ack_only { Stage::Idle } else { Stage::Probes };
            }
            return (pos > 0).then_some(pos);
        }
        if self.acklist.is_empty() {
            return None;
        }
        let (wnd, una) = (self.wnd_unused(), self.rcv_nxt);
        let last = self.acklist.len() - 1;
        let mut pos = 0;
        let mut i = 0;
        while i < self.acklist.len() && pos + OVERHEAD <= out.len() {
            let (sn, ts) = self.acklist[i];
            if diff(sn, self.rcv_nxt) >= 0 || i == last {
                let h = Header { conv: self.conv, cmd: Cmd::Ack as u8, frg: 0, wnd, ts, sn, una, len: 0 };
                h.write(&mut out[pos..]);
                pos += OVERHEAD;
                self.stats.out_segs += 1;
            }
            i += 1;
        }
        self.acklist.drain(..i);
        if self.acklist.is_empty() {
            self.want_acks = false;
        }
        (pos > 0).then_some(pos)
    }

    fn start_flush(&mut self, ack_only: bool) {
        let wnd = self.wnd_unused();
        let f = &mut self.flush;
        f.wnd = wnd;
        f.stage = Stage::Acks;
        f.ack_only = ack_only;
        f.ack_i = 0;
        f.carry = None;
        f.una = self.rcv_nxt;
        f.tmpl_sn = 0;
        f.tmpl_ts = 0;
        f.new_segs = 0;
        f.change = 0;
        f.lost = 0;
        f.minrto = self.interval as i32;
    }

    fn header(&self, cmd: Cmd, sn: u32, ts: u32, frg: u8, len: usize) -> Header {
        Header {
            conv: self.conv,
            cmd: cmd as u8,
            frg,
            wnd: self.flush.wnd,
            ts,
            sn,
            una: self.flush.una,
            len: len as u32,
        }
    }

    /// Returns false when the datagram is full (resume later).
    fn write_acks(&mut self, out: &mut [u8], pos: &mut usize) -> bool {
        let last = self.acklist.len().saturating_sub(1);
        while self.flush.ack_i < self.acklist.len() {
            let i = self.flush.ack_i;
            let (sn, ts) = self.acklist[i];
            // kcp-go: ACKs below rcv_nxt are jitter, except the very last one.
            if diff(sn, self.rcv_nxt) >= 0 || i == last {
                if *pos + OVERHEAD > out.len() {
                    return false;
                }
                self.header(Cmd::Ack, sn, ts, 0, 0).write(&mut out[*pos..]);
                *pos += OVERHEAD;
                self.flush.tmpl_sn = sn;
                self.flush.tmpl_ts = ts;
                self.stats.out_segs += 1;
            }
            self.flush.ack_i += 1;
        }
        true
    }

    fn write_probes(&mut self, now: u32, out: &mut [u8], pos: &mut usize) -> bool {
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = now.wrapping_add(self.probe_wait);
            } else if diff(now, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(PROBE_INIT);
                self.probe_wait = (self.probe_wait + self.probe_wait / 2).min(PROBE_LIMIT);
                self.ts_probe = now.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        for (flag, cmd) in [(ASK_SEND, Cmd::Wask), (ASK_TELL, Cmd::Wins)] {
            if self.probe & flag != 0 {
                if *pos + OVERHEAD > out.len() {
                    return false;
                }
                let (sn, ts) = (self.flush.tmpl_sn, self.flush.tmpl_ts);
                self.header(cmd, sn, ts, 0, 0).write(&mut out[*pos..]);
                *pos += OVERHEAD;
                self.probe &= !flag;
                self.stats.out_segs += 1;
            }
        }
        true
    }

    /// Move segments from the queue into the send window.
    fn fill_window(&mut self) {
        let mut cwnd = self.snd_wnd_now().min(self.rmt_wnd);
        if !self.nocwnd {
            cwnd = cwnd.min(self.cwnd);
        }
        self.flush.cwnd = cwnd;
        if self.snd_una == self.snd_nxt && !self.snd_queue.is_empty() {
            // Nothing in flight: delivery-rate sampling intervals start now.
            self.delivered_time = self.clock;
            self.first_sent_time = self.clock;
        }
        // A congestion controller caps what is in flight (acknowledged segments do not count), within the
        // windows, which count from `una`.
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 && self.in_flight() < self.cc_wnd {
            let Some(mut seg) = self.snd_queue.pop_front() else { break };
            seg.sn = self.snd_nxt;
            self.snd_buf.push_back(seg);
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.flush.new_segs += 1;
        }
        // Held back by the congestion controller, not out of data: not the tail early retransmit is for.
        if !self.snd_queue.is_empty() && self.in_flight() >= self.cc_wnd {
            self.flush.new_segs = self.flush.new_segs.max(1);
        }
        self.stats.max_snd_buf = self.stats.max_snd_buf.max(self.snd_buf.len() as u64);
        self.flush.resent = if self.fastresend == 0 { u32::MAX } else { self.fastresend };
        self.flush.cursor = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    fn write_data(&mut self, now: u32, out: &mut [u8], pos: &mut usize) -> bool {
        // A segment chosen last time that did not fit goes first.
        if let Some(sn) = self.flush.carry {
            if let Some(i) = self.snd_index(sn).filter(|&i| !self.snd_buf[i].acked)
                && !self.write_segment(i, out, pos)
            {
                return false;
            }
            self.flush.carry = None;
        }
        let mut i = match self.snd_buf.front() {
            Some(f) => diff(self.flush.cursor, f.sn).max(0) as usize,
            None => 0,
        };
        // Delivery-rate sampling state each transmission records.
        // A sample says little about the path when the application ran dry (not merely this queue: the
        // layer above keeps only a few bursts in it, [`Kcp::set_backlog`]), or when a window (ours or the
        // peer's), not the congestion controller, held the sender back: it is marked application-limited.
        let wnd = self.snd_wnd_now().min(self.rmt_wnd);
        // The windows count from `una` (a hole's span counts), the congestion controller's cap does not.
        let span = self.snd_nxt.wrapping_sub(self.snd_una);
        let window_limited = self.cc_wnd != u32::MAX && self.in_flight() < self.cc_wnd && span + 2 >= wnd;
        let limited = (self.snd_queue.is_empty() && !self.backlog) || window_limited;
        let mark = (self.clock, self.delivered, self.delivered_time, self.first_sent_time, limited);
        while i < self.snd_buf.len() {
            let new_segs = self.flush.new_segs;
            let (resent, rx_rto, nodelay) = (self.flush.resent, self.rx_rto, self.nodelay);
            let again = self.refast;
            let seg = &mut self.snd_buf[i];
            self.flush.cursor = seg.sn.wrapping_add(1);
            if seg.acked {
                i += 1;
                continue;
            }
            let mut send = false;
            if seg.xmit == 0 {
                send = true;
                seg.rto = rx_rto;
                seg.resendts = now.wrapping_add(seg.rto);
            } else if !seg.fast_done && seg.fastack >= resent {
                send = true;
                // Counting afresh, a repair that is lost in turn is repaired the same way
                // ([`Kcp::set_refast`]); kcp-go waits for the RTO.
                (seg.fast_done, seg.fastack) = if again { (false, 0) } else { (true, seg.fastack) };
                seg.rto = rx_rto;
                seg.resendts = now.wrapping_add(seg.rto);
                self.flush.change += 1;
                self.stats.fast_retrans_segs += 1;
            } else if !seg.fast_done && seg.fastack > 0 && new_segs == 0 {
                send = true;
                (seg.fast_done, seg.fastack) = if again { (false, 0) } else { (true, seg.fastack) };
                seg.rto = rx_rto;
                seg.resendts = now.wrapping_add(seg.rto);
                self.flush.change += 1;
                self.stats.early_retrans_segs += 1;
            } else if diff(now, seg.resendts) >= 0 {
                send = true;
                seg.rto += if nodelay { rx_rto / 2 } else { rx_rto };
                seg.fastack = 0;
                seg.fast_done = false;
                seg.resendts = now.wrapping_add(seg.rto);
                self.flush.lost += 1;
                self.stats.lost_segs += 1;
            }
            if send {
                seg.xmit += 1;
                seg.ts = now;
                (seg.sent_at, seg.del_at_send, seg.del_time_at_send, seg.first_sent_at_send, seg.app_limited) = mark;
                if seg.xmit > 1 {
                    self.stats.retrans_segs += 1;
                }
                if seg.xmit >= self.dead_link {
                    self.dead = true;
                }
            }
            let rto = diff(seg.resendts, now);
            if rto > 0 && rto < self.flush.minrto {
                self.flush.minrto = rto;
            }
            if send && !self.write_segment(i, out, pos) {
                self.flush.carry = Some(self.snd_buf[i].sn);
                return false;
            }
            i += 1;
        }
        true
    }

    fn write_segment(&mut self, i: usize, out: &mut [u8], pos: &mut usize) -> bool {
        let seg = &self.snd_buf[i];
        let need = OVERHEAD + seg.data.len();
        if *pos + need > out.len() {
            return false;
        }
        self.header(Cmd::Push, seg.sn, seg.ts, seg.frg, seg.data.len()).write(&mut out[*pos..]);
        out[*pos + OVERHEAD..*pos + need].copy_from_slice(&seg.data);
        *pos += need;
        self.stats.out_segs += 1;
        true
    }

    fn finish_flush(&mut self, now: u32) {
        self.flush.stage = Stage::Idle;
        if !self.nocwnd {
            if self.flush.change > 0 {
                // Rate halving (RFC 6937), as kcp-go.
                let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
                self.ssthresh = (inflight / 2).max(THRESH_MIN);
                // uint32 arithmetic as kcp-go (resent is 0xffffffff when fast resend is off).
                self.cwnd = self.ssthresh.wrapping_add(self.flush.resent);
                self.incr = self.cwnd.wrapping_mul(self.mss as u32);
            }
            if self.flush.lost > 0 {
                self.ssthresh = (self.flush.cwnd / 2).max(THRESH_MIN);
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
            if self.cwnd < 1 {
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
        }
        // Next timer flush: after `interval`, or earlier for the nearest retransmission.
        self.ts_flush = now.wrapping_add(self.flush.minrto.max(1) as u32);
        self.armed = true;
    }
}
