//! Percentiles, process figures and JSON-lines output.

use std::fmt::Write as _;

/// The `q` quantile (0..=1) of sorted values, nearest-rank; 0 for an empty slice.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nanoseconds to milliseconds, rounded to microseconds.
pub fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}

/// Resident set size of a process in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}

/// CPU time (user + system) of a process, in clock ticks' worth of seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// One JSON object, written as a single line.
#[derive(Default)]
pub struct Json(String);

impl Json {
    pub fn new(scenario: &str) -> Json {
        Json::default().s("scenario", scenario)
    }

    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        let _ = write!(self.0, "\"{k}\":");
    }

    pub fn s(mut self, k: &str, v: &str) -> Json {
        self.key(k);
        self.0.push('"');
        for c in v.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }

    pub fn n(mut self, k: &str, v: impl Into<f64>) -> Json {
        self.key(k);
        let v: f64 = v.into();
        if v.is_finite() {
            let _ = write!(self.0, "{v}");
        } else {
            self.0.push_str("null");
        }
        self
    }

    pub fn b(mut self, k: &str, v: bool) -> Json {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn list(mut self, k: &str, v: &[f64]) -> Json {
        self.key(k);
        self.0.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{x}");
        }
        self.0.push(']');
        self
    }

    /// Prints the line on standard output.
    pub fn emit(self) {
        let mut s = self.0;
        if s.is_empty() {
            s.push('{');
        }
        s.push('}');
        println!("{s}");
    }

    #[cfg(test)]
    fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[7], 0.999), 7);
    }

    #[test]
    fn json_line() {
        let j = Json::new("msg")
            .n("rate", 1000)
            .s("note", "a\"b")
            .b("ok", true)
            .list("r", &[1.5, 2.0])
            .done();
        assert_eq!(
            j,
            r#"{"scenario":"msg","rate":1000,"note":"a\"b","ok":true,"r":[1.5,2]}"#
        );
        assert_eq!(ms(1_234_567), 1.235);
    }

    #[test]
    fn own_process_figures() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(cpu_secs(std::process::id()).is_some());
    }
}
