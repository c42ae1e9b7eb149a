"""The jobs service's numbered migrations: tables, indexes and data changes. Applied migrations
are history and never change (their checksums are checked)."""
