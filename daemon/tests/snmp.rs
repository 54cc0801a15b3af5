//! SNMP output against the Go-made vectors (spec §7.8), the snmplog file writer, systemd
//! notification, and the shipped systemd units and sysctl file.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kcpd::snmp::{Layout, SnmpLogger, csv_header, csv_row, dump_line};
use kcpd_datapath::proto::snmp::Snmp;
use kcpd_vectors::{Value, load};

/// Every NEW field set to 1000 + its index in the NEW struct (as the vector was made); the DEB-only
/// `fec_short_shards` gets 2000.
fn counters() -> Snmp {
    Snmp {
        bytes_sent: 1000,
        bytes_received: 1001,
        max_conn: 1002,
        active_opens: 1003,
        passive_opens: 1004,
        curr_estab: 1005,
        in_errs: 1006,
        in_csum_errors: 1007,
        kcp_in_errors: 1008,
        in_pkts: 1009,
        out_pkts: 1010,
        in_segs: 1011,
        out_segs: 1012,
        in_bytes: 1013,
        out_bytes: 1014,
        retrans_segs: 1015,
        fast_retrans_segs: 1016,
        early_retrans_segs: 1017,
        lost_segs: 1018,
        repeat_segs: 1019,
        fec_full_shard_set: 1020,
        fec_recovered: 1021,
        fec_errs: 1022,
        fec_parity_shards: 1023,
        fec_shard_set: 1024,
        fec_shard_min: 1025,
        ring_buffer_snd_queue: 1026,
        ring_buffer_rcv_queue: 1027,
        ring_buffer_snd_buffer: 1028,
        oob_packets: 1029,
        fec_short_shards: 2000,
    }
}

fn vec_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} missing"))
}

#[test]
fn new_layout_matches_vectors() {
    let v = load("new/snmp_new.json");
    let s = counters();
    assert_eq!(csv_header(Layout::New), vec_str(&v, "csv_header_line"));
    assert_eq!(dump_line(Layout::New, &s), vec_str(&v, "sigusr1_log_line_without_log_prefix"));
    assert_eq!(Layout::New.len(), 30);

    let lines: Vec<&str> =
        v["snmplog_file_real"]["first_three_lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(lines[0], csv_header(Layout::New));
    for line in &lines[1..] {
        let (unix, _) = line.split_once(',').unwrap();
        let unix: i64 = unix.parse().unwrap();
        assert_eq!(csv_row(Layout::New, unix, &s), *line);
    }
    let cols: Vec<&str> =
        v["csv_value_columns_after_unix_time"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(csv_row(Layout::New, 7, &s), format!("7,{}", cols.join(",")));
}

#[test]
fn deb_layout_matches_spec() {
    let header = csv_header(Layout::Deb);
    let v = load("new/snmp_new.json");
    assert_eq!(vec_str(&v, "deb_20210922_header_for_comparison").split(" (").next(), Some(header.as_str()));
    assert_eq!(Layout::Deb.len(), 24);

    let s = counters();
    assert_eq!(
        dump_line(Layout::Deb, &s),
        "KCP SNMP:&{BytesSent:1000 BytesReceived:1001 MaxConn:1002 ActiveOpens:1003 PassiveOpens:1004 \
         CurrEstab:1005 InErrs:1006 InCsumErrors:1007 KCPInErrors:1008 InPkts:1009 OutPkts:1010 InSegs:1011 \
         OutSegs:1012 InBytes:1013 OutBytes:1014 RetransSegs:1015 FastRetransSegs:1016 EarlyRetransSegs:1017 \
         LostSegs:1018 RepeatSegs:1019 FECRecovered:1021 FECErrs:1022 FECParityShards:1023 FECShortShards:2000}"
    );
    assert_eq!(
        csv_row(Layout::Deb, 1, &s),
        "1,1000,1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012,1013,1014,1015,1016,1017,1018,1019,\
         1023,1022,1021,2000"
    );
    // The spec's observed example (zeros elsewhere).
    let small = Snmp { bytes_sent: 69, bytes_received: 53, max_conn: 1, ..Snmp::default() };
    assert!(dump_line(Layout::Deb, &small).starts_with("KCP SNMP:&{BytesSent:69 BytesReceived:53 MaxConn:1 "));
    assert!(dump_line(Layout::Deb, &small).ends_with(" FECShortShards:0}"));
}

/// A fresh empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kcpd-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn snmplog_writes_header_once_then_rows() {
    let dir = temp_dir("snmplog");
    let layout_path = format!("{}/snmp-20060102.log", dir.display());
    let mut logger = SnmpLogger::new(&layout_path, Layout::New);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_425_371);
    let s = counters();

    let p1 = logger.write(t0, &s).unwrap();
    let p2 = logger.write(t0 + Duration::from_millis(1500), &s).unwrap();
    assert_eq!(p1, p2);
    let day = kcpd::snmp::go_format("20060102", &kcpd::snmp::LocalTime::from_system(t0));
    assert_eq!(p1, dir.join(format!("snmp-{day}.log")));
    assert_eq!(day.len(), 8);

    let text = std::fs::read_to_string(&p1).unwrap();
    let v = load("new/snmp_new.json");
    let want: Vec<&str> =
        v["snmplog_file_real"]["first_three_lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(text, format!("{}\n{}\n{}\n", want[0], want[1], want[2]));

    // A layout with no time elements names one file; an existing non-empty file gets no new header.
    let mut plain = SnmpLogger::new(&format!("{}/plain.csv", dir.display()), Layout::Deb);
    let p = plain.write(t0, &s).unwrap();
    plain.write(t0, &s).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert_eq!(text.lines().filter(|l| l.starts_with("Unix,")).count(), 1);

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snmplog_missing_directory_is_an_error() {
    let dir = temp_dir("snmplog-missing");
    let mut logger = SnmpLogger::new(&format!("{}/nope/snmp-20060102.log", dir.display()), Layout::New);
    let err = logger.write(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_425_371), &counters()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    // The logger stays usable: once the directory exists the next period succeeds.
    std::fs::create_dir(dir.join("nope")).unwrap();
    assert!(logger.write(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_425_371), &counters()).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The only test that touches `NOTIFY_SOCKET` (environment variables are process-global).
#[test]
fn notify_sends_datagrams() {
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];

    // SAFETY: no other test in this binary reads or writes the environment.
    unsafe { std::env::remove_var(kcpd::notify::ENV) };
    assert!(!kcpd::notify::notify("READY=1").unwrap());

    unsafe { std::env::set_var(kcpd::notify::ENV, &path) };
    assert!(kcpd::notify::notify("READY=1").unwrap());
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    assert!(kcpd::notify::notify("STATUS=serving 3 sessions\nSTOPPING=1").unwrap());
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STATUS=serving 3 sessions\nSTOPPING=1");

    // Abstract socket ('@name').
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kcpd-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let arx = UnixDatagram::bind_addr(&addr).unwrap();
        arx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        unsafe { std::env::set_var(kcpd::notify::ENV, format!("@{name}")) };
        assert!(kcpd::notify::notify("READY=1").unwrap());
        let n = arx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    // Nobody listening, a relative path: errors, not panics.
    unsafe { std::env::set_var(kcpd::notify::ENV, dir.join("absent.sock")) };
    assert!(kcpd::notify::notify("READY=1").is_err());
    unsafe { std::env::set_var(kcpd::notify::ENV, "relative.sock") };
    assert_eq!(kcpd::notify::notify("READY=1").unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    unsafe { std::env::set_var(kcpd::notify::ENV, "") };
    assert!(!kcpd::notify::notify("READY=1").unwrap());

    unsafe { std::env::remove_var(kcpd::notify::ENV) };
    std::fs::remove_dir_all(&dir).unwrap();
}

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `key=value` lines of a unit file, comments and blanks skipped.
fn directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
        .collect()
}

#[test]
fn systemd_units_have_the_key_lines() {
    for role in ["server", "client"] {
        let text = repo_file(&format!("systemd/kcpd-{role}@.service"));
        assert!(text.contains("\n[Service]\n") && text.contains("\n[Install]\n"), "{role}: sections");
        let d = directives(&text);
        let get = |k: &str| -> Vec<&str> { d.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect() };
        assert_eq!(get("ExecStart"), [format!("/usr/bin/kcpd {role} -c /etc/kcpd/%i.json").as_str()]);
        for (k, v) in [
            ("Type", "notify"),
            ("Restart", "on-failure"),
            ("RestartSec", "2s"),
            ("LimitNOFILE", "1048576"),
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("LogsDirectory", "kcpd"),
            ("KillSignal", "SIGTERM"),
            ("TimeoutStopSec", "10"),
            ("AmbientCapabilities", "CAP_NET_ADMIN"),
            ("CapabilityBoundingSet", "CAP_NET_ADMIN"),
            ("WantedBy", "multi-user.target"),
        ] {
            assert_eq!(get(k), [v], "{role}: {k}");
        }
        assert!(!text.contains("GOGC") && !text.contains("GOMAXPROCS"), "{role}: Go settings");
        assert!(text.contains("systemd/kcpd-tcp.conf"), "{role}: points --tcp users at the drop-in");
    }
    // The --tcp drop-in adds exactly the capabilities and the address family fake TCP needs.
    let d = directives(&repo_file("systemd/kcpd-tcp.conf"));
    assert_eq!(
        d,
        [
            ("AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_RAW"),
            ("CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

#[test]
fn sysctl_file_raises_only_the_caps_kcpd_needs() {
    let text = repo_file("sysctl.d/90-kcpd.conf");
    let d = directives(&text);
    let want =
        [("net.core.rmem_max", "26214400"), ("net.core.wmem_max", "26214400"), ("net.core.netdev_max_backlog", "2048")];
    assert_eq!(d.len(), want.len(), "{d:?}");
    for (k, v) in want {
        assert!(d.iter().any(|(key, val)| key == k && val == v), "{k} = {v}");
    }
    // The defaults size every socket on the host: kcpd asks for its own buffers and must not touch them.
    assert!(d.iter().all(|(k, _)| !k.ends_with("_default")), "{d:?}");
    assert!(text.contains("rmem_default"), "the file says why the defaults are left alone");
}
