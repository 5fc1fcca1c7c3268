"""Query parameters -> compiled predicates: one table entry per filter (events, general,
user-defined)."""
