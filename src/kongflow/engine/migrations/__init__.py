"""The engine's numbered migrations: tables, indexes, types and data changes, and the drops of
function signatures that no longer exist. Applied migrations are history and never change (their
checksums are checked); functions and views have their current definitions in
`kongflow.engine.definitions`, applied after the migrations. Migrations 0001 to 0008 predate that
and also created functions, which the definitions replace."""
