//! SNMP counter output in kcptun's formats (spec §7.8): the SIGUSR1 dump line (Go's
//! `fmt.Sprintf("KCP SNMP:%+v", snmp)`), the `--snmplog` CSV file (header on an empty file, one row per
//! period), Go reference-time layouts (`time.Format`) for the log file name, and Go's `log` prefix.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use kcpd_datapath::proto::snmp::Snmp;

/// Which kcp-go `Snmp` the output imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// kcp-go v5.6.1 (Debian kcptun 20210922): 24 counters, ending in `FECShortShards`.
    Deb,
    /// kcp-go v5.6.64 (kcptun f788cbb): 30 counters, ending in `OOBPackets`.
    New,
}

/// Struct field name (as `%+v` prints it) and its value.
type Field = (&'static str, fn(&Snmp) -> u64);

macro_rules! fields {
    ($($name:literal => $f:ident),* $(,)?) => {
        [$(($name, (|s: &Snmp| s.$f) as fn(&Snmp) -> u64)),*]
    };
}

/// The first 20 fields, shared by both layouts in both orders.
const COMMON: [Field; 20] = fields![
    "BytesSent" => bytes_sent,
    "BytesReceived" => bytes_received,
    "MaxConn" => max_conn,
    "ActiveOpens" => active_opens,
    "PassiveOpens" => passive_opens,
    "CurrEstab" => curr_estab,
    "InErrs" => in_errs,
    "InCsumErrors" => in_csum_errors,
    "KCPInErrors" => kcp_in_errors,
    "InPkts" => in_pkts,
    "OutPkts" => out_pkts,
    "InSegs" => in_segs,
    "OutSegs" => out_segs,
    "InBytes" => in_bytes,
    "OutBytes" => out_bytes,
    "RetransSegs" => retrans_segs,
    "FastRetransSegs" => fast_retrans_segs,
    "EarlyRetransSegs" => early_retrans_segs,
    "LostSegs" => lost_segs,
    "RepeatSegs" => repeat_segs,
];

/// DEB struct order after `RepeatSegs`.
const DEB_STRUCT_TAIL: [Field; 4] = fields![
    "FECRecovered" => fec_recovered,
    "FECErrs" => fec_errs,
    "FECParityShards" => fec_parity_shards,
    "FECShortShards" => fec_short_shards,
];

/// DEB `Header()` order after `RepeatSegs`.
const DEB_HEADER_TAIL: [Field; 4] = fields![
    "FECParityShards" => fec_parity_shards,
    "FECErrs" => fec_errs,
    "FECRecovered" => fec_recovered,
    "FECShortShards" => fec_short_shards,
];

/// NEW struct order after `RepeatSegs`.
const NEW_STRUCT_TAIL: [Field; 10] = fields![
    "FECFullShardSet" => fec_full_shard_set,
    "FECRecovered" => fec_recovered,
    "FECErrs" => fec_errs,
    "FECParityShards" => fec_parity_shards,
    "FECShardSet" => fec_shard_set,
    "FECShardMin" => fec_shard_min,
    "RingBufferSndQueue" => ring_buffer_snd_queue,
    "RingBufferRcvQueue" => ring_buffer_rcv_queue,
    "RingBufferSndBuffer" => ring_buffer_snd_buffer,
    "OOBPackets" => oob_packets,
];

/// NEW `Header()` order after `RepeatSegs` (header name `FECFullShards` for field `FECFullShardSet`).
const NEW_HEADER_TAIL: [Field; 10] = fields![
    "FECFullShards" => fec_full_shard_set,
    "FECParityShards" => fec_parity_shards,
    "FECErrs" => fec_errs,
    "FECRecovered" => fec_recovered,
    "FECShardSet" => fec_shard_set,
    "FECShardMin" => fec_shard_min,
    "RingBufferSndQueue" => ring_buffer_snd_queue,
    "RingBufferRcvQueue" => ring_buffer_rcv_queue,
    "RingBufferSndBuffer" => ring_buffer_snd_buffer,
    "OOBPackets" => oob_packets,
];

impl Layout {
    fn struct_fields(self) -> impl Iterator<Item = &'static Field> {
        let tail: &'static [Field] = match self {
            Layout::Deb => &DEB_STRUCT_TAIL,
            Layout::New => &NEW_STRUCT_TAIL,
        };
        COMMON.iter().chain(tail)
    }

    fn header_fields(self) -> impl Iterator<Item = &'static Field> {
        let tail: &'static [Field] = match self {
            Layout::Deb => &DEB_HEADER_TAIL,
            Layout::New => &NEW_HEADER_TAIL,
        };
        COMMON.iter().chain(tail)
    }

    /// Number of counters (24 or 30).
    pub fn len(self) -> usize {
        self.struct_fields().count()
    }

    /// Always false: a layout has counters.
    pub fn is_empty(self) -> bool {
        false
    }
}

/// The CSV header line (no line ending): `Unix,BytesSent,…` in kcp-go's `Header()` order.
pub fn csv_header(layout: Layout) -> String {
    let mut out = String::from("Unix");
    for (name, _) in layout.header_fields() {
        out.push(',');
        out.push_str(name);
    }
    out
}

/// One CSV row (no line ending): `unix_secs` then the counters in header order.
pub fn csv_row(layout: Layout, unix_secs: i64, s: &Snmp) -> String {
    let mut out = unix_secs.to_string();
    for (_, get) in layout.header_fields() {
        out.push(',');
        out.push_str(&get(s).to_string());
    }
    out
}

/// The SIGUSR1 line without Go's log prefix: `KCP SNMP:&{BytesSent:69 BytesReceived:53 …}`, i.e.
/// Go's `fmt.Sprintf("KCP SNMP:%+v", snmpPtr)`, fields in struct order.
pub fn dump_line(layout: Layout, s: &Snmp) -> String {
    let mut out = String::from("KCP SNMP:&{");
    for (i, (name, get)) in layout.struct_fields().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&get(s).to_string());
    }
    out.push('}');
    out
}

/// A broken-down local time, what Go's `time.Time` methods report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 0..1_000_000_000.
    pub nanos: u32,
    /// 0 = Sunday.
    pub weekday: u8,
    /// Day of the year, 1..=366 (Go's `YearDay`).
    pub yday: u16,
    /// Seconds east of UTC.
    pub utc_offset_secs: i32,
    /// Zone abbreviation (`MST`), empty when unknown.
    pub zone_abbrev: String,
}

impl LocalTime {
    /// `t` in the process's local time zone (`TZ`, `/etc/localtime`), as Go's `time.Now()` sees it.
    /// Falls back to UTC, then to the zero value, should the C library fail.
    pub fn from_system(t: SystemTime) -> LocalTime {
        let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 { (-s, 0) } else { (-s - 1, 1_000_000_000 - d.subsec_nanos()) }
            }
        };
        // time_t is 64-bit on every target this daemon supports.
        let tt = secs as libc::time_t;
        // SAFETY: `tm` is plain old data; zeroed is a valid value, and localtime_r/gmtime_r only write
        // into it. `tm_zone`, when non-null, points at a NUL-terminated string owned by the C library
        // that lives at least until the next tzset.
        unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            if libc::localtime_r(&tt, &mut tm).is_null() && libc::gmtime_r(&tt, &mut tm).is_null() {
                return LocalTime::default();
            }
            let zone_abbrev = if tm.tm_zone.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(tm.tm_zone).to_string_lossy().into_owned()
            };
            LocalTime {
                year: tm.tm_year.saturating_add(1900),
                month: u8::try_from(tm.tm_mon + 1).unwrap_or(1),
                day: u8::try_from(tm.tm_mday).unwrap_or(1),
                hour: u8::try_from(tm.tm_hour).unwrap_or(0),
                minute: u8::try_from(tm.tm_min).unwrap_or(0),
                // A leap second (60) does not exist in Go's time; fold it.
                second: u8::try_from(tm.tm_sec.min(59)).unwrap_or(0),
                nanos,
                weekday: u8::try_from(tm.tm_wday).unwrap_or(0),
                yday: u16::try_from(tm.tm_yday + 1).unwrap_or(1),
                utc_offset_secs: i32::try_from(tm.tm_gmtoff).unwrap_or(0),
                zone_abbrev,
            }
        }
    }
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// Layout elements, as Go's `time/format.go` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    Tz,
    Iso8601Tz,
    Iso8601SecondsTz,
    Iso8601ShortTz,
    Iso8601ColonTz,
    Iso8601ColonSecondsTz,
    NumTz,
    NumSecondsTz,
    NumShortTz,
    NumColonTz,
    NumColonSecondsTz,
    /// Fractional seconds: separator, digit count, trim trailing zeros (`9`s).
    Frac(u8, usize, bool),
}

fn starts_with_lower(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_lowercase)
}

/// Go's `nextStdChunk`: (literal prefix length, element, length of the element) or None.
fn next_std_chunk(l: &[u8]) -> Option<(usize, Std, usize)> {
    let at = |i: usize, s: &str| l.get(i..i + s.len()) == Some(s.as_bytes());
    for i in 0..l.len() {
        let c = l[i];
        let found = match c {
            b'J' if at(i, "Jan") => {
                if at(i, "January") {
                    Some((Std::LongMonth, 7))
                } else if !starts_with_lower(&l[i + 3..]) {
                    Some((Std::Month, 3))
                } else {
                    None
                }
            }
            b'M' if at(i, "Mon") => {
                if at(i, "Monday") {
                    Some((Std::LongWeekDay, 6))
                } else if !starts_with_lower(&l[i + 3..]) {
                    Some((Std::WeekDay, 3))
                } else {
                    None
                }
            }
            b'M' if at(i, "MST") => Some((Std::Tz, 3)),
            b'0' => match l.get(i + 1) {
                Some(b'1') => Some((Std::ZeroMonth, 2)),
                Some(b'2') => Some((Std::ZeroDay, 2)),
                Some(b'3') => Some((Std::ZeroHour12, 2)),
                Some(b'4') => Some((Std::ZeroMinute, 2)),
                Some(b'5') => Some((Std::ZeroSecond, 2)),
                Some(b'6') => Some((Std::Year, 2)),
                Some(b'0') if l.get(i + 2) == Some(&b'2') => Some((Std::ZeroYearDay, 3)),
                _ => None,
            },
            b'1' => {
                if l.get(i + 1) == Some(&b'5') {
                    Some((Std::Hour, 2))
                } else {
                    Some((Std::NumMonth, 1))
                }
            }
            b'2' => {
                if at(i, "2006") {
                    Some((Std::LongYear, 4))
                } else {
                    Some((Std::Day, 1))
                }
            }
            b'_' => {
                if l.get(i + 1) == Some(&b'2') {
                    if at(i + 1, "2006") {
                        // `_2006` is a literal `_` then the long year.
                        return Some((i + 1, Std::LongYear, 4));
                    }
                    Some((Std::UnderDay, 2))
                } else if at(i + 1, "_2") {
                    Some((Std::UnderYearDay, 3))
                } else {
                    None
                }
            }
            b'3' => Some((Std::Hour12, 1)),
            b'4' => Some((Std::Minute, 1)),
            b'5' => Some((Std::Second, 1)),
            b'P' if l.get(i + 1) == Some(&b'M') => Some((Std::PM, 2)),
            b'p' if l.get(i + 1) == Some(&b'm') => Some((Std::Pm, 2)),
            b'-' => {
                if at(i, "-070000") {
                    Some((Std::NumSecondsTz, 7))
                } else if at(i, "-07:00:00") {
                    Some((Std::NumColonSecondsTz, 9))
                } else if at(i, "-0700") {
                    Some((Std::NumTz, 5))
                } else if at(i, "-07:00") {
                    Some((Std::NumColonTz, 6))
                } else if at(i, "-07") {
                    Some((Std::NumShortTz, 3))
                } else {
                    None
                }
            }
            b'Z' => {
                if at(i, "Z070000") {
                    Some((Std::Iso8601SecondsTz, 7))
                } else if at(i, "Z07:00:00") {
                    Some((Std::Iso8601ColonSecondsTz, 9))
                } else if at(i, "Z0700") {
                    Some((Std::Iso8601Tz, 5))
                } else if at(i, "Z07:00") {
                    Some((Std::Iso8601ColonTz, 6))
                } else if at(i, "Z07") {
                    Some((Std::Iso8601ShortTz, 3))
                } else {
                    None
                }
            }
            b'.' | b',' => match l.get(i + 1) {
                Some(&ch @ (b'0' | b'9')) => {
                    let mut j = i + 1;
                    while l.get(j) == Some(&ch) {
                        j += 1;
                    }
                    // Only a fractional second if the run of digits ends here.
                    if l.get(j).is_some_and(u8::is_ascii_digit) {
                        None
                    } else {
                        Some((Std::Frac(c, j - (i + 1), ch == b'9'), j - i))
                    }
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((std, len)) = found {
            return Some((i, std, len));
        }
    }
    None
}

/// Go's `appendInt`: decimal, zero-padded to `width` digits, sign first.
fn push_int(out: &mut String, v: i64, width: usize) {
    if v < 0 {
        out.push('-');
    }
    let digits = v.unsigned_abs().to_string();
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(&digits);
}

/// Go's `time.Time.Format(layout)` for `t`: the reference time `Mon Jan 2 15:04:05 MST 2006` in any of
/// its element spellings, everything else literal.
pub fn go_format(layout: &str, t: &LocalTime) -> String {
    let mut out = String::with_capacity(layout.len() + 10);
    let mut rest = layout.as_bytes();
    let month_idx = usize::from(t.month.clamp(1, 12) - 1);
    while let Some((pre, std, len)) = next_std_chunk(rest) {
        // Element boundaries are ASCII, so the literal prefix is whole UTF-8.
        out.push_str(&String::from_utf8_lossy(&rest[..pre]));
        rest = &rest[pre + len..];
        let (hour, min, sec) = (i64::from(t.hour), i64::from(t.minute), i64::from(t.second));
        match std {
            Std::Year => push_int(&mut out, i64::from(t.year) % 100, 2),
            Std::LongYear => push_int(&mut out, i64::from(t.year), 4),
            Std::Month => out.push_str(&LONG_MONTHS[month_idx][..3]),
            Std::LongMonth => out.push_str(LONG_MONTHS[month_idx]),
            Std::NumMonth => push_int(&mut out, i64::from(t.month), 0),
            Std::ZeroMonth => push_int(&mut out, i64::from(t.month), 2),
            Std::WeekDay => out.push_str(&LONG_DAYS[usize::from(t.weekday % 7)][..3]),
            Std::LongWeekDay => out.push_str(LONG_DAYS[usize::from(t.weekday % 7)]),
            Std::Day => push_int(&mut out, i64::from(t.day), 0),
            Std::UnderDay => {
                if t.day < 10 {
                    out.push(' ');
                }
                push_int(&mut out, i64::from(t.day), 0);
            }
            Std::ZeroDay => push_int(&mut out, i64::from(t.day), 2),
            Std::UnderYearDay => {
                if t.yday < 100 {
                    out.push(' ');
                    if t.yday < 10 {
                        out.push(' ');
                    }
                }
                push_int(&mut out, i64::from(t.yday), 0);
            }
            Std::ZeroYearDay => push_int(&mut out, i64::from(t.yday), 3),
            Std::Hour => push_int(&mut out, hour, 2),
            Std::Hour12 | Std::ZeroHour12 => {
                let h = if hour % 12 == 0 { 12 } else { hour % 12 };
                push_int(&mut out, h, if std == Std::Hour12 { 0 } else { 2 });
            }
            Std::Minute => push_int(&mut out, min, 0),
            Std::ZeroMinute => push_int(&mut out, min, 2),
            Std::Second => push_int(&mut out, sec, 0),
            Std::ZeroSecond => push_int(&mut out, sec, 2),
            Std::PM => out.push_str(if hour >= 12 { "PM" } else { "AM" }),
            Std::Pm => out.push_str(if hour >= 12 { "pm" } else { "am" }),
            Std::Tz => {
                if t.zone_abbrev.is_empty() {
                    let zone = i64::from(t.utc_offset_secs) / 60;
                    out.push(if zone < 0 { '-' } else { '+' });
                    push_int(&mut out, zone.abs() / 60, 2);
                    push_int(&mut out, zone.abs() % 60, 2);
                } else {
                    out.push_str(&t.zone_abbrev);
                }
            }
            Std::Iso8601Tz
            | Std::Iso8601SecondsTz
            | Std::Iso8601ShortTz
            | Std::Iso8601ColonTz
            | Std::Iso8601ColonSecondsTz
            | Std::NumTz
            | Std::NumSecondsTz
            | Std::NumShortTz
            | Std::NumColonTz
            | Std::NumColonSecondsTz => push_offset(&mut out, std, t.utc_offset_secs),
            Std::Frac(sep, n, trim) => push_frac(&mut out, t.nanos, sep, n, trim),
        }
    }
    out.push_str(&String::from_utf8_lossy(rest));
    out
}

/// The numeric zone elements (`Z07:00`, `-0700`, …), as Go's `appendFormat`.
fn push_offset(out: &mut String, std: Std, offset: i32) {
    let iso = matches!(
        std,
        Std::Iso8601Tz | Std::Iso8601SecondsTz | Std::Iso8601ShortTz | Std::Iso8601ColonTz | Std::Iso8601ColonSecondsTz
    );
    if iso && offset == 0 {
        out.push('Z');
        return;
    }
    // As Go: the sign comes from the whole minutes; a sub-minute negative offset prints `+00` and a
    // negative seconds field.
    let offset = i64::from(offset);
    let mut zone = offset / 60;
    let mut abs = offset;
    if zone < 0 {
        out.push('-');
        zone = -zone;
        abs = -abs;
    } else {
        out.push('+');
    }
    push_int(out, zone / 60, 2);
    let colon =
        matches!(std, Std::Iso8601ColonTz | Std::NumColonTz | Std::Iso8601ColonSecondsTz | Std::NumColonSecondsTz);
    if colon {
        out.push(':');
    }
    if !matches!(std, Std::NumShortTz | Std::Iso8601ShortTz) {
        push_int(out, zone % 60, 2);
    }
    if matches!(std, Std::Iso8601SecondsTz | Std::NumSecondsTz | Std::NumColonSecondsTz | Std::Iso8601ColonSecondsTz) {
        if matches!(std, Std::NumColonSecondsTz | Std::Iso8601ColonSecondsTz) {
            out.push(':');
        }
        push_int(out, abs % 60, 2);
    }
}

/// Go's `appendNano`: `sep` then the first `n` (at most 9) digits of the nanoseconds; `trim` (`.999`)
/// drops trailing zeros and the separator when nothing is left.
fn push_frac(out: &mut String, nanos: u32, sep: u8, n: usize, trim: bool) {
    if trim && (n == 0 || nanos == 0) {
        return;
    }
    let digits = format!("{:09}", nanos.min(999_999_999));
    let mut frac = &digits[..n.min(9)];
    if trim {
        frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            return;
        }
    }
    out.push(char::from(sep));
    out.push_str(frac);
}

/// Go's `log` prefix with `log.LstdFlags`: `2006/01/02 15:04:05 ` (trailing space included).
pub fn log_prefix(t: &LocalTime) -> String {
    go_format("2006/01/02 15:04:05 ", t)
}

/// kcptun's `--snmplog` writer (`std/snmp.go`): each [`SnmpLogger::write`] opens
/// `dir + Format(basename)` in append mode, writes the header if the file is empty, then one row.
#[derive(Clone, Debug)]
pub struct SnmpLogger {
    dir: String,
    base: String,
    layout: Layout,
}

impl SnmpLogger {
    /// `path_layout` is the `--snmplog` value, e.g. `./snmp-20060102.log`: as Go's `filepath.Split`,
    /// everything up to the last `/` is kept literally and the rest is a Go time layout.
    pub fn new(path_layout: &str, layout: Layout) -> Self {
        let (dir, base) = match path_layout.rfind('/') {
            Some(i) => path_layout.split_at(i + 1),
            None => ("", path_layout),
        };
        SnmpLogger { dir: dir.to_owned(), base: base.to_owned(), layout }
    }

    /// The file name a record written at `now` goes to.
    pub fn path_at(&self, now: SystemTime) -> PathBuf {
        let t = LocalTime::from_system(now);
        PathBuf::from(format!("{}{}", self.dir, go_format(&self.base, &t)))
    }

    /// Append one record of `s` stamped `now` (header first on an empty file); returns the file
    /// written. An error (e.g. a missing directory) leaves nothing behind: log it and try next period.
    pub fn write(&mut self, now: SystemTime, s: &Snmp) -> io::Result<PathBuf> {
        let path = self.path_at(now);
        let mut f = OpenOptions::new().append(true).create(true).mode(0o666).open(&path)?;
        let mut buf = String::new();
        if f.metadata()?.len() == 0 {
            buf.push_str(&csv_header(self.layout));
            buf.push('\n');
        }
        let unix = match now.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // Go's Unix() floors toward negative infinity.
            Err(e) => {
                let d = e.duration();
                let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 { -s } else { -s - 1 }
            }
        };
        buf.push_str(&csv_row(self.layout, unix, s));
        buf.push('\n');
        f.write_all(buf.as_bytes())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's reference time, 2006-01-02 15:04:05.123456789 -0700 MST (a Monday, day 2).
    fn reference() -> LocalTime {
        LocalTime {
            year: 2006,
            month: 1,
            day: 2,
            hour: 15,
            minute: 4,
            second: 5,
            nanos: 123_456_789,
            weekday: 1,
            yday: 2,
            utc_offset_secs: -7 * 3600,
            zone_abbrev: "MST".into(),
        }
    }

    fn t_2026() -> LocalTime {
        LocalTime {
            year: 2026,
            month: 11,
            day: 23,
            hour: 7,
            minute: 50,
            second: 48,
            nanos: 120_000_000,
            weekday: 1,
            yday: 327,
            utc_offset_secs: 5 * 3600 + 30 * 60,
            zone_abbrev: "IST".into(),
        }
    }

    #[test]
    fn reference_layouts_reproduce_themselves() {
        let r = reference();
        for l in [
            "Mon Jan _2 15:04:05 MST 2006",
            "Monday, 02-Jan-06 15:04:05 MST",
            "2006-01-02T15:04:05-07:00",
            "01/02 03:04:05PM '06 -0700",
            "Jan _2 15:04:05.000000",
            "January 2, 2006 3:04:05 PM",
        ] {
            let want = l.replace(".000000", ".123456").replace("_2", " 2");
            assert_eq!(go_format(l, &r), want, "layout {l}");
        }
    }

    #[test]
    fn elements() {
        let t = t_2026();
        let cases = [
            ("./snmp-20060102.log", "./snmp-20261123.log"),
            ("snmp-20060102.log", "snmp-20261123.log"),
            ("2006/01/02 15:04:05", "2026/11/23 07:50:48"),
            ("1 2 3 4 5", "11 23 7 50 48"),
            ("01 02 03 04 05 06", "11 23 07 50 48 26"),
            ("_2|002|__2", "23|327|327"),
            ("PM pm", "AM am"),
            ("Mon Monday Jan January MST", "Mon Monday Nov November IST"),
            ("Z07:00 Z0700 Z07 -07:00 -0700 -07", "+05:30 +0530 +05 +05:30 +0530 +05"),
            ("-07:00:00 -070000 Z07:00:00 Z070000", "+05:30:00 +053000 +05:30:00 +053000"),
            (".000 .999 ,000 .9 .000000000", ".120 .12 ,120 .1 .120000000"),
            // `.000` followed by a digit is no fraction; the `01` inside is the month.
            ("05.0001", "48.0011"),
            ("_2006", "_2026"),
            ("Janx Monx Month", "Janx Monx Month"),
            ("Jan1 Mon2", "Nov11 Mon23"),
            ("hello", "hello"),
            ("", ""),
            ("ünïcode-2006", "ünïcode-2026"),
        ];
        for (layout, want) in cases {
            assert_eq!(go_format(layout, &t), want, "layout {layout:?}");
        }
    }

    #[test]
    fn small_values_and_zones() {
        let t = LocalTime {
            year: 2009,
            month: 2,
            day: 3,
            hour: 0,
            minute: 6,
            second: 7,
            nanos: 0,
            weekday: 2,
            yday: 34,
            utc_offset_secs: 0,
            zone_abbrev: String::new(),
        };
        assert_eq!(go_format("_2 __2 002 3 03 PM", &t), " 3  34 034 12 12 AM");
        assert_eq!(go_format("Z07:00 -07:00 MST", &t), "Z +00:00 +0000");
        assert_eq!(go_format("05.999 05.000", &t), "07 07.000");
        let t = LocalTime { yday: 5, hour: 13, utc_offset_secs: -(3 * 3600 + 30 * 60 + 15), ..t };
        assert_eq!(go_format("__2 3 pm", &t), "  5 1 pm");
        assert_eq!(go_format("Z07:00:00 -0700 -07", &t), "-03:30:15 -0330 -03");
    }

    #[test]
    fn log_prefix_is_lstdflags() {
        assert_eq!(log_prefix(&t_2026()), "2026/11/23 07:50:48 ");
    }

    #[test]
    fn from_system_epoch_is_sane() {
        let t = LocalTime::from_system(SystemTime::UNIX_EPOCH);
        assert!(t.year == 1970 || t.year == 1969);
        assert_eq!(t.nanos, 0);
        // 2026-11-23 12:00 UTC (a Monday): the 22nd to the 24th in any zone, fields consistent.
        let t = LocalTime::from_system(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_435_200));
        assert_eq!((t.year, t.month), (2026, 11));
        assert!((22..=24).contains(&t.day));
        assert_eq!(t.weekday, t.day - 22);
        assert_eq!(t.yday, 304 + u16::from(t.day));
        let local = (i32::from(t.day) - 23) * 86_400
            + i32::from(t.hour) * 3600
            + i32::from(t.minute) * 60
            + i32::from(t.second);
        assert_eq!(local, 12 * 3600 + t.utc_offset_secs);
    }
}
