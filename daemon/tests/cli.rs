//! kcptun's command line and JSON config: parsing styles, override order, defaults and validation.

use kcpd::cli::{self, CliError, Command};
use kcpd::config::{Config, ConfigError, Side, parse_port_range};

fn args(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| (*a).to_owned()).collect()
}

fn run(side: Side, a: &[&str]) -> Config {
    match cli::parse(side, &args(a), None) {
        Ok(Command::Run(c, _)) => c,
        other => panic!("{a:?}: {other:?}"),
    }
}

fn client(a: &[&str]) -> Config {
    run(Side::Client, a)
}

fn server(a: &[&str]) -> Config {
    run(Side::Server, a)
}

fn err(side: Side, a: &[&str]) -> CliError {
    match cli::parse(side, &args(a), None) {
        Err(e) => e,
        other => panic!("{a:?}: expected an error, got {other:?}"),
    }
}

/// Parses with a `-c` file whose content is `json`.
fn with_json(side: Side, a: &[&str], json: &str) -> Result<Config, CliError> {
    let mut v = args(a);
    v.extend(args(&["-c", "cfg.json"]));
    let json = json.to_owned();
    match cli::parse_with(side, &v, None, &move |p| {
        assert_eq!(p, "cfg.json");
        Ok(json.clone())
    })? {
        Command::Run(c, path) => {
            assert_eq!(path.as_deref(), Some("cfg.json"));
            Ok(c)
        }
        other => panic!("{other:?}"),
    }
}

fn json(side: Side, text: &str) -> Result<Config, ConfigError> {
    let mut c = Config::defaults(side);
    c.apply_json(side, text).map(|()| c)
}

fn invalid(side: Side, f: impl FnOnce(&mut Config)) -> ConfigError {
    let mut c = Config::defaults(side);
    f(&mut c);
    c.validate(side).expect_err("expected a validation error")
}

fn range_flag(e: ConfigError) -> &'static str {
    match e {
        ConfigError::Range { flag, .. } => flag,
        e => panic!("not a range error: {e}"),
    }
}

#[test]
fn defaults_per_side() {
    let c = client(&[]);
    assert_eq!(c, Config::defaults(Side::Client));
    assert_eq!((c.localaddr.as_str(), c.remoteaddr.as_str()), (":12948", "vps:29900"));
    assert_eq!((c.key.as_str(), c.crypt.as_str(), c.mode.as_str()), ("it's a secrect", "aes", "fast"));
    assert_eq!((c.sndwnd, c.rcvwnd, c.closewait, c.conn, c.scavengettl), (128, 512, 0, 1, 600));
    assert_eq!((c.mtu, c.datashard, c.parityshard, c.sockbuf, c.smuxbuf), (1350, 10, 3, 4_194_304, 4_194_304));
    assert_eq!((c.framesize, c.streambuf, c.keepalive, c.snmpperiod, c.qpp_count), (8192, 2_097_152, 10, 60, 61));
    assert_eq!((c.nodelay, c.interval, c.resend, c.nc), (0, 50, 0, 0));
    assert_eq!(c.smuxver, None, "no --smuxver: the client may fall back to v1");
    assert_eq!(c.smux_version(Side::Client), Some(2));
    assert_eq!(c.validate(Side::Client), Ok(vec![]));

    let s = server(&[]);
    assert_eq!((s.listen.as_str(), s.target.as_str()), (":29900", "127.0.0.1:12948"));
    assert_eq!((s.sndwnd, s.rcvwnd, s.closewait), (1024, 1024, 30));
    assert_eq!(s.smuxver, None);
    assert_eq!(s.smux_version(Side::Server), None);
    assert_eq!(server(&["--smuxver", "1"]).smux_version(Side::Server), Some(1));
    assert_eq!(client(&["--smuxver", "1"]).smux_version(Side::Client), Some(1));
    assert_eq!(with_json(Side::Server, &[], r#"{"smuxver":2}"#).unwrap().smuxver, Some(2));
    assert_eq!(s.validate(Side::Server), Ok(vec![]));
}

#[test]
fn flag_styles() {
    let c = client(&["-mode", "fast3", "-nocomp"]);
    assert_eq!((c.mode.as_str(), c.nocomp), ("fast3", true));
    assert_eq!(client(&["--key=x"]).key, "x");
    assert_eq!(client(&["--key", "x"]).key, "x");
    assert_eq!(client(&["-key=x"]).key, "x");
    assert_eq!(client(&["-key", "x"]).key, "x");
    assert_eq!(client(&["--key="]).key, "");
    assert_eq!(client(&["--key=a=b"]).key, "a=b");
    // Go's flag takes the next argument as the value even when it looks like a flag.
    assert_eq!(client(&["--key", "-mode"]).key, "-mode");
    assert_eq!(client(&["-conn", "0x10"]).conn, 16);
    assert_eq!(client(&["-mtu", "010"]).mtu, 8);
    assert_eq!(client(&["-mtu=0o17"]).mtu, 15);
    assert_eq!(client(&["-mtu=0b101"]).mtu, 5);
    assert_eq!(client(&["--sockbuf", "1_000_000"]).sockbuf, 1_000_000);
    assert_eq!(client(&["--dscp", "-1"]).dscp, -1);
    assert!(!client(&["-nocomp", "-nocomp=false"]).nocomp);
    assert!(client(&["-nocomp=1"]).nocomp);
    assert!(client(&["--nocomp=T"]).nocomp);
    // Last one wins.
    assert_eq!(client(&["--mtu", "1000", "-mtu", "1200"]).mtu, 1200);
    // `--` ends the flags.
    assert_eq!(client(&["--mtu", "1000", "--"]).mtu, 1000);
}

#[test]
fn aliases_and_hidden_flags() {
    let c = client(&["-l", "127.0.0.1:1", "-r", "h:2", "--ds", "4", "--ps", "2"]);
    assert_eq!((c.localaddr.as_str(), c.remoteaddr.as_str(), c.datashard, c.parityshard), ("127.0.0.1:1", "h:2", 4, 2));
    let c = client(&["--datashard=5", "--parityshard=1"]);
    assert_eq!((c.datashard, c.parityshard), (5, 1));
    let s = server(&["-l", ":4000-4010", "-t", "/run/x.sock"]);
    assert_eq!((s.listen.as_str(), s.target.as_str()), (":4000-4010", "/run/x.sock"));
    let c = client(&["--nodelay", "1", "--interval", "15", "--resend", "3", "--nc", "1", "--acknodelay"]);
    assert_eq!((c.nodelay, c.interval, c.resend, c.nc, c.acknodelay), (1, 15, 3, 1, true));
    let c = client(&["--QPP", "--QPPCount", "7"]);
    assert_eq!((c.qpp, c.qpp_count), (true, 7));
    let c = server(&["-qpp", "-qppcount=9"]);
    assert_eq!((c.qpp, c.qpp_count), (true, 9));
    let c = client(&["--conn", "3", "--autoexpire", "60", "--scavengettl", "30", "--ratelimit", "1000"]);
    assert_eq!((c.conn, c.autoexpire, c.scavengettl, c.ratelimit), (3, 60, 30, 1000));
    let c =
        server(&["--closewait=5", "--framesize=4096", "--keepalive=20", "--snmplog", "s.log", "--log", "l", "--quiet"]);
    assert_eq!(
        (c.closewait, c.framesize, c.keepalive, c.snmplog.as_str(), c.log.as_str(), c.quiet),
        (5, 4096, 20, "s.log", "l", true)
    );
    let c = server(&[
        "--tcp",
        "--pprof",
        "--crypt",
        "null",
        "--sndwnd",
        "9",
        "--rcvwnd",
        "8",
        "--smuxbuf",
        "7",
        "--streambuf",
        "6",
    ]);
    assert_eq!(
        (c.tcp, c.pprof, c.crypt.as_str(), c.sndwnd, c.rcvwnd, c.smuxbuf, c.streambuf),
        (true, true, "null", 9, 8, 7, 6)
    );
}

#[test]
fn flag_errors() {
    // `-nocomp false`: a bool flag takes no separate value, so `false` is a stray positional argument.
    assert_eq!(err(Side::Client, &["-nocomp", "false"]), CliError::Positional("false".into()));
    assert_eq!(err(Side::Client, &["stray"]), CliError::Positional("stray".into()));
    assert_eq!(err(Side::Client, &["-"]), CliError::Positional("-".into()));
    assert_eq!(err(Side::Client, &["--", "x"]), CliError::Positional("x".into()));
    assert!(matches!(err(Side::Client, &["-nocomp=maybe"]), CliError::BadValue { flag, .. } if flag == "-nocomp"));
    let e = err(Side::Client, &["-conn", "x"]);
    assert!(matches!(&e, CliError::BadValue { flag, .. } if flag == "-conn"));
    assert!(e.to_string().contains("-conn"), "{e}");
    assert!(matches!(err(Side::Client, &["--mtu=1e3"]), CliError::BadValue { .. }));
    assert!(matches!(
        err(Side::Client, &["--mtu=99999999999999999999"]),
        CliError::BadValue { reason: "value out of range", .. }
    ));
    assert_eq!(err(Side::Client, &["--key"]), CliError::MissingValue("--key".into()));
    assert_eq!(err(Side::Client, &["--bogus"]), CliError::Unknown("--bogus".into()));
    assert_eq!(err(Side::Client, &["-Mode", "fast"]), CliError::Unknown("-Mode".into()));
    assert_eq!(err(Side::Client, &["---mode"]), CliError::BadSyntax("---mode".into()));
    assert_eq!(err(Side::Client, &["-=x"]), CliError::BadSyntax("-=x".into()));
    let e = err(Side::Client, &["--target", "x:1"]);
    assert_eq!(e, CliError::OtherSide { flag: "--target".into(), side: Side::Client, other: Side::Server });
    assert!(e.to_string().contains("server flag"), "{e}");
    assert!(matches!(err(Side::Server, &["-conn=2"]), CliError::OtherSide { other: Side::Client, .. }));
    assert!(matches!(err(Side::Server, &["-r", "x"]), CliError::OtherSide { .. }));
    assert!(matches!(err(Side::Client, &["-t", "x"]), CliError::OtherSide { .. }));
}

#[test]
fn help_and_version() {
    for h in ["-h", "--help", "-help", "--h"] {
        match cli::parse(Side::Client, &args(&[h]), None) {
            Ok(Command::Help(t)) => assert_eq!(t, cli::usage(Side::Client)),
            other => panic!("{h}: {other:?}"),
        }
    }
    for v in ["-v", "-V", "--version", "-version"] {
        assert_eq!(cli::parse(Side::Server, &args(&[v]), None), Ok(Command::Version));
    }
    assert!(matches!(cli::parse(Side::Client, &args(&["-h=false"]), None), Ok(Command::Run(..))));
    let c = cli::usage(Side::Client);
    for needle in [
        "--localaddr value, -l value",
        "(default: \":12948\")",
        "--remoteaddr value, -r value",
        "--sndwnd value",
        "(default: 128)",
        "--datashard value, --ds value",
        "--QPPCount value",
        "(default: 61)",
        "--smuxver value",
        "(default: 2)",
        "[$KCPTUN_KEY]",
        "--nocomp",
        "-c value",
    ] {
        assert!(c.contains(needle), "client help lacks {needle:?}:\n{c}");
    }
    assert!(!c.contains("--target") && !c.contains("--listen") && !c.contains("--nodelay"));
    let s = cli::usage(Side::Server);
    for needle in ["--listen value, -l value", "--target value, -t value", "(default: 1024)", "(default: 30)"] {
        assert!(s.contains(needle), "server help lacks {needle:?}:\n{s}");
    }
    assert!(!s.contains("--conn") && !s.contains("--remoteaddr"));
}

#[test]
fn env_key_precedence() {
    let p = |a: &[&str], env| match cli::parse(Side::Client, &args(a), env) {
        Ok(Command::Run(c, _)) => c.key,
        other => panic!("{other:?}"),
    };
    assert_eq!(p(&[], Some("fromenv")), "fromenv");
    assert_eq!(p(&[], Some("")), "");
    assert_eq!(p(&["--key", "flag"], Some("fromenv")), "flag");
    assert_eq!(p(&[], None), "it's a secrect");
    let mut v = args(&["-c", "f"]);
    v.insert(0, "--key=flag".into());
    let r = cli::parse_with(Side::Client, &v, Some("env"), &|_| Ok(r#"{"key":"json"}"#.into()));
    assert!(matches!(r, Ok(Command::Run(c, _)) if c.key == "json"));
}

#[test]
fn json_overrides_flags() {
    let c = with_json(Side::Client, &["--mtu", "1000", "--key", "k", "--nocomp"], r#"{"mtu": 1200, "nocomp": false}"#)
        .unwrap();
    assert_eq!((c.mtu, c.key.as_str(), c.nocomp), (1200, "k", false));
    // Flags after -c are still overridden by the JSON.
    let mut v = args(&["-c", "f", "--mtu", "1000"]);
    v.push("--crypt=salsa20".into());
    let r = cli::parse_with(Side::Client, &v, None, &|_| Ok(r#"{"mtu":900}"#.into()));
    assert!(matches!(r, Ok(Command::Run(c, Some(p))) if c.mtu == 900 && c.crypt == "salsa20" && p == "f"));
    // -c "" means no config file.
    let r = cli::parse_with(Side::Client, &args(&["-c", ""]), None, &|_| panic!("read"));
    assert!(matches!(r, Ok(Command::Run(_, None))));
    let e = cli::parse_with(Side::Client, &args(&["-c", "nope"]), None, &|_| Err("no such file".into())).unwrap_err();
    assert_eq!(e, CliError::ConfigFile { path: "nope".into(), error: "no such file".into() });
    let e = with_json(Side::Client, &[], r#"{"mtu":"big"}"#).unwrap_err();
    assert!(matches!(&e, CliError::ConfigJson { path, source: ConfigError::JsonType { .. } } if path == "cfg.json"));
    assert!(e.to_string().contains("mtu"), "{e}");
}

#[test]
fn config_file_from_disk() {
    let dir = std::env::temp_dir().join(format!("kcpd-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.json");
    std::fs::write(&path, r#"{"listen":":4000","target":"127.0.0.1:22","mode":"fast2"}"#).unwrap();
    let p = path.to_str().unwrap().to_owned();
    match cli::parse(Side::Server, &[String::from("-c"), p.clone()], None) {
        Ok(Command::Run(c, Some(used))) => {
            assert_eq!(
                (c.listen.as_str(), c.target.as_str(), c.mode.as_str(), used),
                (":4000", "127.0.0.1:22", "fast2", p)
            );
        }
        other => panic!("{other:?}"),
    }
    let missing = dir.join("missing.json").to_str().unwrap().to_owned();
    assert!(matches!(cli::parse(Side::Server, &[String::from("-c"), missing], None), Err(CliError::ConfigFile { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_rules() {
    // Case-insensitive keys, unknown keys ignored, null leaves the value alone.
    let c = json(Side::Client, r#"{"MTU": 1000, "Key": "a", "SNDWND": 64, "bogus": [1], "crypt": null}"#).unwrap();
    assert_eq!((c.mtu, c.key.as_str(), c.sndwnd, c.crypt.as_str()), (1000, "a", 64, "aes"));
    // Every key of each side.
    let c = json(
        Side::Client,
        r#"{"localaddr":"l:1","remoteaddr":"r:2","conn":2,"autoexpire":3,"scavengettl":4,"ratelimit":5,
            "datashard":6,"parityshard":7,"dscp":8,"acknodelay":true,"nodelay":1,"interval":20,"resend":2,"nc":1,
            "sockbuf":9,"smuxver":1,"smuxbuf":10,"framesize":11,"streambuf":10,"keepalive":12,"closewait":13,
            "log":"x","snmplog":"y","snmpperiod":14,"quiet":true,"tcp":true,"pprof":true,"qpp":true,"qpp-count":15,
            "rcvwnd":16,"mode":"manual","nocomp":true}"#,
    )
    .unwrap();
    assert_eq!(
        (c.localaddr.as_str(), c.remoteaddr.as_str(), c.conn, c.autoexpire, c.scavengettl),
        ("l:1", "r:2", 2, 3, 4)
    );
    assert_eq!((c.ratelimit, c.datashard, c.parityshard, c.dscp, c.acknodelay), (5, 6, 7, 8, true));
    assert_eq!(c.nodelay_params(), (1, 20, 2, 1));
    assert_eq!((c.sockbuf, c.smuxver, c.smuxbuf, c.framesize, c.streambuf, c.keepalive), (9, Some(1), 10, 11, 10, 12));
    assert_eq!((c.closewait, c.log.as_str(), c.snmplog.as_str(), c.snmpperiod), (13, "x", "y", 14));
    assert_eq!(
        (c.quiet, c.tcp, c.pprof, c.qpp, c.qpp_count, c.rcvwnd, c.nocomp),
        (true, true, true, true, 15, 16, true)
    );
    // Keys of the other side are ignored, as Go ignores fields its struct lacks.
    assert_eq!(json(Side::Client, r#"{"listen":":1","target":"t:1"}"#).unwrap(), Config::defaults(Side::Client));
    assert_eq!(
        json(Side::Server, r#"{"localaddr":":1","conn":5,"autoexpire":9}"#).unwrap(),
        Config::defaults(Side::Server)
    );
    let s = json(Side::Server, r#"{"listen":":1","target":"t:1","Qpp-Count":3}"#).unwrap();
    assert_eq!((s.listen.as_str(), s.target.as_str(), s.qpp_count), (":1", "t:1", 3));
    // `qppcount` (no hyphen) and `ds` are not JSON keys.
    assert_eq!(json(Side::Client, r#"{"qppcount":3,"ds":1,"ps":1}"#).unwrap(), Config::defaults(Side::Client));
    // Top-level null is a no-op; only the first JSON value is read (Go json.Decoder).
    assert_eq!(json(Side::Client, "null").unwrap(), Config::defaults(Side::Client));
    assert_eq!(json(Side::Client, r#"{"mtu":100} trailing"#).unwrap().mtu, 100);
}

#[test]
fn json_type_errors() {
    let ty = |text: &str| match json(Side::Client, text) {
        Err(ConfigError::JsonType { key, expected, .. }) => (key, expected),
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(ty(r#"{"mtu":"1350"}"#), ("mtu".into(), "an integer"));
    assert_eq!(ty(r#"{"Mtu":1.5}"#).0, "Mtu");
    ty(r#"{"mtu":1.0}"#);
    ty(r#"{"mtu":1e3}"#);
    ty(r#"{"mtu":9223372036854775808}"#);
    ty(r#"{"mtu":-9223372036854775809}"#);
    ty(r#"{"mtu":true}"#);
    assert_eq!(ty(r#"{"nocomp":1}"#), ("nocomp".into(), "a boolean"));
    ty(r#"{"nocomp":"true"}"#);
    assert_eq!(ty(r#"{"key":5}"#), ("key".into(), "a string"));
    ty(r#"{"key":["a"]}"#);
    ty(r#"{"key":{}}"#);
    assert_eq!(ty(r#"{"qpp-count":"61"}"#).0, "qpp-count");
    assert_eq!(json(Side::Client, r#"{"mtu":-9223372036854775808}"#).unwrap().mtu, i64::MIN);
    let e = json(Side::Client, r#"{"mtu":"x"}"#).unwrap_err().to_string();
    assert!(e.contains("\"mtu\"") && e.contains("integer"), "{e}");
    for bad in ["", "   ", "{", "{\"mtu\":}", "[1]", "\"s\"", "5", "true"] {
        assert!(json(Side::Client, bad).is_err(), "{bad:?}");
    }
    assert!(matches!(json(Side::Client, "[1]"), Err(ConfigError::JsonNotObject("an array"))));
}

#[test]
fn mode_application() {
    let p = |mode: &str| {
        client(&["--mode", mode, "--nodelay", "1", "--interval", "33", "--resend", "4", "--nc", "1"]).nodelay_params()
    };
    assert_eq!(p("normal"), (0, 40, 2, 1));
    assert_eq!(p("fast"), (0, 30, 2, 1));
    assert_eq!(p("fast2"), (1, 20, 2, 1));
    assert_eq!(p("fast3"), (1, 10, 2, 1));
    assert_eq!(p("manual"), (1, 33, 4, 1));
    assert_eq!(client(&["--mode", "manual"]).nodelay_params(), (0, 50, 0, 0));
    // JSON KCP parameters count only with mode manual.
    let c = json(Side::Client, r#"{"nodelay":1,"interval":10}"#).unwrap();
    assert_eq!(c.nodelay_params(), (0, 30, 2, 1));
}

#[test]
fn validation_errors() {
    use Side::{Client, Server};
    let e = invalid(Client, |c| c.crypt = "rot13".into());
    assert!(matches!(&e, ConfigError::Crypt(_)));
    let m = e.to_string();
    assert!(m.contains("--crypt") && m.contains("rot13") && m.contains("aes-128-gcm") && m.contains("salsa20"), "{m}");
    let e = invalid(Server, |c| c.mode = "turbo".into());
    assert_eq!(e, ConfigError::Mode("turbo".into()));
    assert!(e.to_string().contains("fast3"));
    assert_eq!(range_flag(invalid(Client, |c| c.conn = 0)), "conn");
    assert_eq!(range_flag(invalid(Client, |c| c.mtu = 49)), "mtu");
    assert_eq!(range_flag(invalid(Server, |c| c.mtu = 1501)), "mtu");
    assert_eq!(range_flag(invalid(Client, |c| c.sndwnd = 0)), "sndwnd");
    assert_eq!(range_flag(invalid(Client, |c| c.rcvwnd = 65536)), "rcvwnd");
    assert_eq!(range_flag(invalid(Client, |c| c.datashard = -1)), "datashard");
    assert_eq!(range_flag(invalid(Client, |c| c.parityshard = 256)), "parityshard");
    assert_eq!(
        invalid(Client, |c| (c.datashard, c.parityshard) = (200, 57)),
        ConfigError::FecShards { ds: 200, ps: 57 }
    );
    assert_eq!(range_flag(invalid(Client, |c| c.dscp = 64)), "dscp");
    assert_eq!(range_flag(invalid(Client, |c| c.sockbuf = 0)), "sockbuf");
    assert_eq!(range_flag(invalid(Client, |c| c.smuxver = Some(3))), "smuxver");
    assert_eq!(range_flag(invalid(Server, |c| c.smuxver = Some(0))), "smuxver");
    assert_eq!(range_flag(invalid(Client, |c| c.smuxbuf = 0)), "smuxbuf");
    assert_eq!(range_flag(invalid(Client, |c| c.streambuf = 0)), "streambuf");
    assert_eq!(
        invalid(Client, |c| (c.smuxbuf, c.streambuf) = (1000, 1001)),
        ConfigError::StreamBuf { streambuf: 1001, smuxbuf: 1000 }
    );
    assert_eq!(range_flag(invalid(Client, |c| c.framesize = 0)), "framesize");
    assert_eq!(range_flag(invalid(Client, |c| c.framesize = 65536)), "framesize");
    assert_eq!(range_flag(invalid(Client, |c| c.keepalive = 0)), "keepalive");
    assert_eq!(range_flag(invalid(Client, |c| c.keepalive = 31)), "keepalive");
    assert_eq!(range_flag(invalid(Server, |c| c.closewait = -1)), "closewait");
    assert_eq!(range_flag(invalid(Client, |c| c.snmpperiod = -1)), "snmpperiod");
    assert_eq!(range_flag(invalid(Client, |c| c.autoexpire = -1)), "autoexpire");
    assert_eq!(range_flag(invalid(Client, |c| c.scavengettl = -1)), "scavengettl");
    assert_eq!(range_flag(invalid(Client, |c| c.ratelimit = -1)), "ratelimit");
    assert_eq!(range_flag(invalid(Client, |c| c.qpp_count = 0)), "QPPCount");
    #[cfg(not(target_os = "linux"))]
    assert_eq!(invalid(Server, |c| c.tcp = true).to_string(), "--tcp (fake TCP) needs Linux");
    let m = invalid(Client, |c| c.mtu = 20).to_string();
    assert!(m.contains("--mtu") && m.contains("20") && m.contains("50..=1500"), "{m}");
    // Other side's fields are not checked.
    let mut c = Config::defaults(Server);
    c.conn = 0;
    c.localaddr = String::new();
    assert!(c.validate(Server).is_ok());
    // Boundaries that pass.
    let mut c = Config::defaults(Client);
    (c.mtu, c.sndwnd, c.datashard, c.parityshard, c.dscp, c.keepalive, c.framesize) = (50, 65535, 0, 0, 63, 30, 65535);
    (c.smuxver, c.smuxbuf, c.streambuf, c.qpp_count) = (Some(1), 1, 1, 65535);
    assert!(c.validate(Client).is_ok());
    (c.datashard, c.parityshard) = (128, 128);
    assert!(c.validate(Client).is_ok());
}

#[test]
fn address_validation() {
    use Side::{Client, Server};
    let addr_flag = |e: ConfigError| match e {
        ConfigError::Address { flag, .. } => flag,
        e => panic!("not an address error: {e}"),
    };
    let ok = |side, f: fn(&mut Config)| {
        let mut c = Config::defaults(side);
        f(&mut c);
        c.validate(side).unwrap_or_else(|e| panic!("{e}"));
    };
    ok(Client, |c| c.localaddr = "/tmp/kcpd.sock".into());
    ok(Client, |c| c.localaddr = "[::1]:0".into());
    ok(Client, |c| c.remoteaddr = "example.com:3000-3010".into());
    ok(Client, |c| c.remoteaddr = "[2001:db8::1]:443".into());
    ok(Server, |c| c.listen = ":4000-4000".into());
    ok(Server, |c| c.listen = "0.0.0.0:29900".into());
    ok(Server, |c| c.target = "/run/app.sock".into());
    ok(Server, |c| c.target = "[::1]:22".into());
    assert_eq!(addr_flag(invalid(Client, |c| c.localaddr = String::new())), "localaddr");
    assert_eq!(addr_flag(invalid(Client, |c| c.localaddr = "h:http".into())), "localaddr");
    assert_eq!(addr_flag(invalid(Client, |c| c.localaddr = "h:70000".into())), "localaddr");
    assert_eq!(addr_flag(invalid(Client, |c| c.remoteaddr = "nohost".into())), "remoteaddr");
    assert_eq!(addr_flag(invalid(Client, |c| c.remoteaddr = "h:9-1".into())), "remoteaddr");
    assert_eq!(addr_flag(invalid(Client, |c| c.remoteaddr = "::1:80".into())), "remoteaddr");
    assert_eq!(addr_flag(invalid(Server, |c| c.listen = ":65536".into())), "listen");
    assert_eq!(addr_flag(invalid(Server, |c| c.listen = ":1-".into())), "listen");
    assert_eq!(addr_flag(invalid(Server, |c| c.target = "h:0".into())), "target");
    assert_eq!(addr_flag(invalid(Server, |c| c.target = String::new())), "target");
    let m = invalid(Server, |c| c.listen = ":x".into()).to_string();
    assert!(m.contains("--listen") && m.contains(":x"), "{m}");
}

#[test]
fn port_ranges() {
    assert_eq!(parse_port_range(":29900"), Ok((String::new(), 29900, 29900)));
    assert_eq!(parse_port_range("vps:0"), Ok(("vps".into(), 0, 0)));
    assert_eq!(parse_port_range("1.2.3.4:100-200"), Ok(("1.2.3.4".into(), 100, 200)));
    assert_eq!(parse_port_range("[::1]:5-5"), Ok(("::1".into(), 5, 5)));
    assert_eq!(parse_port_range("h:1-65535"), Ok(("h".into(), 1, 65535)));
    for bad in
        ["", "h", "h:", "h:-", "h:0-5", "h:6-5", "h:1-65536", "h:123456", "h:+1", "[::1:5", "a]:5", "h:1-2-3", "h:a"]
    {
        assert!(parse_port_range(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn warnings() {
    let mut c = Config::defaults(Side::Client);
    (c.autoexpire, c.scavengettl) = (60, 600);
    let w = c.validate(Side::Client).unwrap();
    assert!(w.iter().any(|w| w.contains("--scavengettl")), "{w:?}");
    (c.autoexpire, c.scavengettl) = (0, 600);
    assert!(c.validate(Side::Client).unwrap().is_empty());
    c.pprof = true;
    assert!(c.validate(Side::Client).unwrap().iter().any(|w| w.contains("--pprof")));
    let mut s = Config::defaults(Side::Server);
    s.qpp = true;
    assert_eq!(s.validate(Side::Server).unwrap().len(), 1, "short key only");
    s.qpp_count = 6;
    assert_eq!(s.validate(Side::Server).unwrap().len(), 3, "short key, few pads, even count");
    s.key = "k".repeat(211);
    s.qpp_count = 61;
    assert!(s.validate(Side::Server).unwrap().is_empty());
    s.qpp = false;
    s.qpp_count = 4;
    assert!(s.validate(Side::Server).unwrap().is_empty());
}
