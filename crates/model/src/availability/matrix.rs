//! Rendering the mapping between two profiles as a text table (`entente presence map`).

use super::map::{map_explained, FallbackRule, Rule};
use super::table::{MappingTable, TargetStatus};
use super::{Availability, Presence, Profile};

/// Renders what every state a `from` user can set looks like to a `to` watcher, and which rule
/// decides it (a seed table, the privacy rule, or a fallback).
///
/// The rows are the states `from` can set ([`Profile::source_states`]), plus every state and
/// status qualifier the tables list for the pair, in table order first. The output is plain
/// text with aligned columns and ends with a newline.
pub fn render_matrix(from: Profile, to: Profile) -> String {
    let table = MappingTable::builtin();
    let mut inputs: Vec<(Availability, Option<String>)> = Vec::new();
    for row in table.rows_for(from, to) {
        let key = (row.source_state, row.source_status.clone());
        if !inputs.contains(&key) {
            inputs.push(key);
        }
    }
    for state in from.source_states() {
        if !inputs.iter().any(|(s, _)| *s == state) {
            inputs.push((state, None));
        }
    }

    let mut lines: Vec<[String; 5]> = vec![[
        "source state".into(),
        "source status".into(),
        "target state".into(),
        "target status".into(),
        "rule".into(),
    ]];
    for (state, qualifier) in inputs {
        let mut p = Presence::new(state);
        p.status = qualifier.clone();
        let m = map_explained(&p, from, to);
        let quoted =
            |s: &Option<String>| s.as_ref().map(|s| format!("\"{s}\"")).unwrap_or_default();
        let (target_status, rule) = match &m.rule {
            Rule::Table(row) => (
                match &row.target_status {
                    TargetStatus::Message => "(source's message)".to_owned(),
                    _ => quoted(&m.presence.status),
                },
                format!("table {}", row.table),
            ),
            Rule::InvisibleIsOffline { overrides } => (
                String::new(),
                match overrides {
                    Some(t) => format!("privacy: invisible is offline (overrides table {t})"),
                    None => "privacy: invisible is offline".to_owned(),
                },
            ),
            Rule::Fallback(FallbackRule::Native) => (
                quoted(&m.presence.status),
                "fallback: shown as is".to_owned(),
            ),
            Rule::Fallback(FallbackRule::Degraded { from }) => (
                quoted(&m.presence.status),
                format!("fallback: {} cannot show {}", to.name(), from.label()),
            ),
        };
        lines.push([
            state.label().to_owned(),
            quoted(&qualifier),
            m.presence.availability.label().to_owned(),
            target_status,
            rule,
        ]);
    }

    let mut widths = [0usize; 5];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "Availability mapping from {} ({}) to {} ({})\n\n",
        from.name(),
        from.description(),
        to.name(),
        to.description()
    );
    for (i, line) in lines.iter().enumerate() {
        let mut text = String::new();
        for (j, (cell, w)) in line.iter().zip(widths).enumerate() {
            if j + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
        if i == 0 {
            let rule: String = widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  ");
            out.push_str(&rule);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lync_to_xmpp() {
        let m = render_matrix(Profile::Lync, Profile::Xmpp);
        assert!(m.starts_with("Availability mapping from lync"));
        let busy = m.lines().find(|l| l.starts_with("Busy ")).unwrap();
        assert!(busy.contains("Away") && busy.contains("\"Busy\"") && busy.contains("table 1-5"));
        let idle = m.lines().find(|l| l.starts_with("Idle ")).unwrap();
        assert!(idle.contains("fallback"), "{idle}");
    }

    #[test]
    fn every_pair_renders() {
        for from in Profile::ALL {
            for to in Profile::ALL {
                let m = render_matrix(from, to);
                assert!(m.lines().count() >= 5, "{from} -> {to}");
            }
        }
    }
}
