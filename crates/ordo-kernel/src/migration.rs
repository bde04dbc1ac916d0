//! Embedded schema migrations, as data: each storage backend applies them
//! its own way and records a checksum of each, so that an applied
//! migration is never edited (a changed one stops the start-up).

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations of one owner (the platform tables, a service), applied
/// in version order.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    pub name: &'static str,
    pub migrations: &'static [Migration],
}
