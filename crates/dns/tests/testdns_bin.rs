//! The `entente-testdns` binary, as the Python end-to-end tests use it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use entente_dns::{Locator, LocatorConfig, Transport};

/// Kills the server even when an assertion fails first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_a_zone_file() {
    let dir = std::env::temp_dir().join(format!("entente-testdns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zone = dir.join("fed.zone");
    let mut f = std::fs::File::create(&zone).unwrap();
    writeln!(
        f,
        "; federation test zone\n\
         _xmpp-server._tcp.b.test. SRV 10 50 5269 xmpp1.b.test.\n\
         xmpp1.b.test. A 127.0.0.2\n\
         s.test. NAPTR 10 10 \"s\" \"SIP+D2T\" \"\" _sip._tcp.s.test.\n\
         _sip._tcp.s.test. SRV 0 0 5070 sip.s.test.\n\
         sip.s.test. A 127.0.0.3"
    )
    .unwrap();
    drop(f);

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_entente-testdns"))
            .args(["--listen", "127.0.0.1:0", "--zone"])
            .arg(&zone)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();

    let loc = Locator::new(LocatorConfig {
        nameservers: vec![addr],
        ..Default::default()
    })
    .unwrap();
    let x = loc.xmpp_server("b.test").await;
    let s = loc.sip_server("s.test", &[Transport::Tcp]).await;
    drop(child);
    std::fs::remove_dir_all(&dir).ok();

    let x = x.unwrap();
    assert_eq!(x[0].host, "xmpp1.b.test");
    assert_eq!(x[0].addrs, vec!["127.0.0.2:5269".parse().unwrap()]);
    let s = s.unwrap();
    assert_eq!(s[0].addrs, vec!["127.0.0.3:5070".parse().unwrap()]);
}

#[test]
fn rejects_non_loopback_and_bad_zone() {
    let bin = env!("CARGO_BIN_EXE_entente-testdns");
    let dir = std::env::temp_dir().join(format!("entente-testdns-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zone = dir.join("bad.zone");
    std::fs::write(&zone, "x.test. A 1.2.3.4\ny.test. MX 10 x.test.\n").unwrap();
    let out = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--zone"])
        .arg(&zone)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");

    std::fs::write(&zone, "x.test. A 1.2.3.4\n").unwrap();
    let out = Command::new(bin)
        .args(["--listen", "0.0.0.0:0", "--zone"])
        .arg(&zone)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    std::fs::remove_dir_all(&dir).ok();
}
