"""Query parameters -> compiled predicates: one table entry per filter (events, general,
user-defined).

Read in this order: base.py (FilterSpec, compile_filters, the key), common.py and vocabulary.py
(value parsers), rules.py (how a value meets a field), table.py (an entry naming its path once),
then the tables: events.py (``/ws``) and general.py (``/ws/general``); userdef.py and like.py are
the ``meta.*`` / ``event.*`` grammar.
"""
