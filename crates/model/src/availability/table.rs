//! The mapping table: tables 1-1..1-15 of the seed document, as data.
//!
//! The transcription lives in `crates/model/data/availability-mappings.tsv` and is embedded with
//! `include_str!`; [`MappingTable::builtin`] parses it once, at first use. Columns:
//! `table source source_state source_status target target_state target_status`. A status cell
//! is empty (no status), a literal, or `(message)` (the source's own text is carried over).
//! Lines starting with `#` and the header line are skipped.

use std::sync::OnceLock;

use super::{Availability, Profile};

/// The embedded transcription of the seed tables.
pub(crate) const BUILTIN_TSV: &str = include_str!("../../data/availability-mappings.tsv");

/// What a row says about the target's status text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetStatus {
    /// The cell is empty: the row names no text.
    Unspecified,
    /// The cell is a literal, e.g. "Busy": the target shows exactly that.
    Literal(String),
    /// `(message)`: the target shows the source's own status text.
    Message,
}

/// One row of the table, as transcribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRow {
    /// The seed table it comes from, e.g. "1-5".
    pub table: String,
    /// Source profile.
    pub source: Profile,
    /// Source state.
    pub source_state: Availability,
    /// The status text that qualifies the source state ("In a meeting"), if any.
    pub source_status: Option<String>,
    /// Target profile.
    pub target: Profile,
    /// Target state.
    pub target_state: Availability,
    /// Target status text.
    pub target_status: TargetStatus,
}

impl MappingRow {
    /// The source side as the source's wire form means it (see `Profile::normalise`).
    pub(crate) fn source_key(&self) -> (Availability, Option<&str>) {
        self.source
            .normalise(self.source_state, self.source_status.as_deref())
    }
}

/// A malformed mapping table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// A line does not have seven tab-separated columns.
    #[error("line {line}: expected 7 tab-separated columns, found {found}")]
    Columns {
        /// 1-based line number.
        line: usize,
        /// Columns found.
        found: usize,
    },
    /// A profile name is unknown.
    #[error("line {line}: unknown profile {name:?}")]
    Profile {
        /// 1-based line number.
        line: usize,
        /// The name.
        name: String,
    },
    /// A state name is unknown.
    #[error("line {line}: unknown state {name:?}")]
    State {
        /// 1-based line number.
        line: usize,
        /// The name.
        name: String,
    },
    /// Two rows give the same source (profile, state, status) different outcomes for one target.
    #[error("line {line}: contradicts line {earlier} for the same source and target")]
    Conflict {
        /// 1-based line number.
        line: usize,
        /// The earlier line.
        earlier: usize,
    },
}

/// The parsed mapping table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingTable {
    rows: Vec<MappingRow>,
}

impl MappingTable {
    /// Parses a table in the TSV format described in the module documentation.
    pub fn parse(tsv: &str) -> Result<MappingTable, TableError> {
        let mut rows: Vec<MappingRow> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (i, raw) in tsv.lines().enumerate() {
            let line = i + 1;
            let text = raw.trim_end_matches('\r');
            if text.trim().is_empty() || text.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = text.split('\t').map(str::trim).collect();
            if cols.first() == Some(&"table") {
                continue;
            }
            let [table, source, source_state, source_status, target, target_state, target_status] =
                cols[..]
            else {
                return Err(TableError::Columns {
                    line,
                    found: cols.len(),
                });
            };
            let profile = |name: &str| {
                name.parse::<Profile>().map_err(|_| TableError::Profile {
                    line,
                    name: name.to_owned(),
                })
            };
            let state = |name: &str| {
                name.parse::<Availability>().map_err(|_| TableError::State {
                    line,
                    name: name.to_owned(),
                })
            };
            let row = MappingRow {
                table: table.to_owned(),
                source: profile(source)?,
                source_state: state(source_state)?,
                source_status: (!source_status.is_empty()).then(|| source_status.to_owned()),
                target: profile(target)?,
                target_state: state(target_state)?,
                target_status: match target_status {
                    "" => TargetStatus::Unspecified,
                    "(message)" => TargetStatus::Message,
                    s => TargetStatus::Literal(s.to_owned()),
                },
            };
            if let Some(j) = rows.iter().position(|r| {
                r.source == row.source
                    && r.target == row.target
                    && r.source_key() == row.source_key()
            }) {
                let same = MappingRow {
                    table: rows[j].table.clone(),
                    ..row.clone()
                };
                if rows[j] != same {
                    return Err(TableError::Conflict {
                        line,
                        earlier: lines[j],
                    });
                }
            }
            rows.push(row);
            lines.push(line);
        }
        Ok(MappingTable { rows })
    }

    /// The table transcribed from the seed document, parsed at first use.
    pub fn builtin() -> &'static MappingTable {
        static TABLE: OnceLock<MappingTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            // Invariant: the embedded TSV is part of the source tree and the unit test
            // `builtin_table_parses` checks it, so this cannot fail at run time.
            MappingTable::parse(BUILTIN_TSV).expect("embedded availability-mappings.tsv is valid")
        })
    }

    /// All rows, in file order.
    pub fn rows(&self) -> &[MappingRow] {
        &self.rows
    }

    /// The rows for one source and target profile, in file order.
    pub fn rows_for(&self, from: Profile, to: Profile) -> impl Iterator<Item = &MappingRow> {
        self.rows
            .iter()
            .filter(move |r| r.source == from && r.target == to)
    }

    /// The (source, target) profile pairs the table covers, in first-appearance order.
    pub fn pairs(&self) -> Vec<(Profile, Profile)> {
        let mut out: Vec<(Profile, Profile)> = Vec::new();
        for r in &self.rows {
            if !out.contains(&(r.source, r.target)) {
                out.push((r.source, r.target));
            }
        }
        out
    }

    /// The row that decides `state` with `status` from `from` to `to`: a row whose status
    /// qualifier equals the status text (trimmed, ASCII case-insensitive) wins over the row with
    /// no qualifier.
    pub(crate) fn lookup(
        &self,
        from: Profile,
        to: Profile,
        state: Availability,
        status: Option<&str>,
    ) -> Option<&MappingRow> {
        let mut plain = None;
        for row in self.rows_for(from, to) {
            let (s, q) = row.source_key();
            if s != state {
                continue;
            }
            match (q, status) {
                (None, _) => plain = plain.or(Some(row)),
                (Some(q), Some(t)) if q.trim().eq_ignore_ascii_case(t.trim()) => return Some(row),
                _ => {}
            }
        }
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses() {
        let t = MappingTable::parse(BUILTIN_TSV).unwrap();
        assert_eq!(t.rows().len(), 192);
        assert_eq!(MappingTable::builtin().rows().len(), 192);
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert!(matches!(
            MappingTable::parse("1-1\tmoc\tAvailable\n"),
            Err(TableError::Columns { line: 1, found: 3 })
        ));
        assert!(matches!(
            MappingTable::parse("1-1\ticq\tAvailable\t\txmpp\tAvailable\t\n"),
            Err(TableError::Profile { .. })
        ));
        assert!(matches!(
            MappingTable::parse("1-1\tmoc\tLunch\t\txmpp\tAvailable\t\n"),
            Err(TableError::State { .. })
        ));
        assert!(matches!(
            MappingTable::parse(
                "1-1\tmoc\tBusy\t\txmpp\tAway\t\n1-9\tmoc\tBusy\t\txmpp\tAvailable\t\n"
            ),
            Err(TableError::Conflict {
                line: 2,
                earlier: 1
            })
        ));
    }

    #[test]
    fn qualified_rows_win() {
        let t = MappingTable::builtin();
        let r = t
            .lookup(
                Profile::Webex,
                Profile::Xmpp,
                Availability::Away,
                Some("in a meeting"),
            )
            .unwrap();
        assert_eq!(r.target_state, Availability::Available);
        let r = t
            .lookup(
                Profile::Webex,
                Profile::Xmpp,
                Availability::Away,
                Some("lunch"),
            )
            .unwrap();
        assert_eq!(r.target_state, Availability::Away);
    }
}
