//! kcp-go's SNMP counters (spec §7.8; kcp-go `snmp.go`): every field of both profiles — DEB 5.6.1's 24
//! and NEW 5.6.64's 30 (DEB's `FECShortShards` is kept too). Counters are kept per session / listener
//! and summed on demand; the high-water marks and gauges say how they aggregate.

/// One snapshot of all counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snmp {
    /// Bytes sent from the upper level.
    pub bytes_sent: u64,
    /// Bytes received by the upper level.
    pub bytes_received: u64,
    /// Most connections ever established at once (high-water mark: aggregated by max, not sum).
    pub max_conn: u64,
    /// Connections opened by dialling.
    pub active_opens: u64,
    /// Connections opened by accepting.
    pub passive_opens: u64,
    /// Connections established now (gauge).
    pub curr_estab: u64,
    /// UDP receive errors and datagrams refused before crypto (e.g. from an unexpected address).
    pub in_errs: u64,
    /// Datagrams failing the CRC32 or the AEAD tag.
    pub in_csum_errors: u64,
    /// Datagrams KCP refused (bad conv, truncated, unknown command).
    pub kcp_in_errors: u64,
    /// UDP datagrams received (each counted once, whatever became of it).
    pub in_pkts: u64,
    /// UDP datagrams sent.
    pub out_pkts: u64,
    /// KCP segments received.
    pub in_segs: u64,
    /// KCP segments sent.
    pub out_segs: u64,
    /// UDP payload bytes received.
    pub in_bytes: u64,
    /// UDP payload bytes sent.
    pub out_bytes: u64,
    /// KCP retransmissions of every kind.
    pub retrans_segs: u64,
    /// Fast retransmissions (duplicate ACKs).
    pub fast_retrans_segs: u64,
    /// Early retransmissions.
    pub early_retrans_segs: u64,
    /// Segments retransmitted on RTO.
    pub lost_segs: u64,
    /// Duplicate segments received.
    pub repeat_segs: u64,
    /// FEC groups that reached `ds` shards.
    pub fec_full_shard_set: u64,
    /// Data shards rebuilt from parity.
    pub fec_recovered: u64,
    /// FEC groups whose reconstruction failed.
    pub fec_errs: u64,
    /// Parity shards received.
    pub fec_parity_shards: u64,
    /// Data shards of FEC groups given up incomplete (DEB).
    pub fec_short_shards: u64,
    /// FEC groups held open by decoders now (gauge).
    pub fec_shard_set: u64,
    /// Most segments ever queued to send (high-water mark).
    pub ring_buffer_snd_queue: u64,
    /// Most segments ever waiting to be read (high-water mark).
    pub ring_buffer_rcv_queue: u64,
    /// Most segments ever in flight (high-water mark).
    pub ring_buffer_snd_buffer: u64,
    /// FEC out-of-band packets received (kcp-go NEW `OOBPackets`).
    pub oob_packets: u64,
    /// Smallest FEC group id held open (aggregated by min over non-empty decoders; 0 when none).
    pub fec_shard_min: u64,
}

impl Snmp {
    /// Fold `other` into `self`: sums for counters and gauges, max for high-water marks, min for
    /// `fec_shard_min`.
    pub fn merge(&mut self, o: &Snmp) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            bytes_sent,
            bytes_received,
            active_opens,
            passive_opens,
            curr_estab,
            in_errs,
            in_csum_errors,
            kcp_in_errors,
            in_pkts,
            out_pkts,
            in_segs,
            out_segs,
            in_bytes,
            out_bytes,
            retrans_segs,
            fast_retrans_segs,
            early_retrans_segs,
            lost_segs,
            repeat_segs,
            fec_full_shard_set,
            fec_recovered,
            fec_errs,
            fec_parity_shards,
            fec_short_shards,
            fec_shard_set,
            oob_packets
        );
        self.max_conn = self.max_conn.max(o.max_conn);
        self.ring_buffer_snd_queue = self.ring_buffer_snd_queue.max(o.ring_buffer_snd_queue);
        self.ring_buffer_rcv_queue = self.ring_buffer_rcv_queue.max(o.ring_buffer_rcv_queue);
        self.ring_buffer_snd_buffer = self.ring_buffer_snd_buffer.max(o.ring_buffer_snd_buffer);
        self.fec_shard_min = match (self.fec_shard_min, o.fec_shard_min) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_counters_and_maxes_high_water_marks() {
        let a = Snmp {
            in_pkts: 3,
            max_conn: 5,
            curr_estab: 2,
            ring_buffer_snd_buffer: 7,
            fec_shard_min: 9,
            ..Default::default()
        };
        let b = Snmp {
            in_pkts: 4,
            max_conn: 3,
            curr_estab: 1,
            ring_buffer_snd_buffer: 2,
            fec_shard_min: 4,
            ..Default::default()
        };
        let mut t = Snmp::default();
        t.merge(&a);
        t.merge(&b);
        assert_eq!((t.in_pkts, t.max_conn, t.curr_estab, t.ring_buffer_snd_buffer, t.fec_shard_min), (7, 5, 3, 7, 4));
    }
}
