"""Building a filter table: an entry names its field path once, and that path is both what the
documentation says the filter reads and what its rule walks.

Each table has one subject shape (``(event, message)`` for faces, the general message for
general events), so a :class:`Fields` carries the way from the subject to the object paths start
at, and the spelling the documentation uses for that object. What both tables offer alike —
the location filters and the user-defined grammar — is built here once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from luna_sender.filters.base import DynamicCompiler, DynamicFilter, FilterSpec, Limits
from luna_sender.filters.common import parse_geo, str_list_parser
from luna_sender.filters.rules import Root, Rule, inside, one_of
from luna_sender.filters.userdef import compile_user_filter

Parser = Callable[[str, Limits], Any]

# Filter name -> the field under ``location`` it reads.
ADDRESS_FIELDS = (
    ("cities", "city"),
    ("areas", "area"),
    ("districts", "district"),
    ("streets", "street"),
    ("house_numbers", "house_number"),
)


@dataclass(frozen=True, slots=True)
class Fields:
    """The field paths of one table: ``root(subject)`` is the object they start at, ``prefix``
    how the documentation names that object."""

    root: Root
    prefix: str = ""

    def spec(
        self,
        name: str,
        path: str,
        parse: Parser,
        rule: Rule,
        description: str,
        index: str | None = None,
    ) -> FilterSpec:
        """The entry of filter ``name``, which reads the dotted ``path`` under the root."""
        return FilterSpec(
            name=name,
            parse=parse,
            match=rule(tuple(path.split(".")), self.root),
            fields=(self.prefix + path,),
            description=description,
            index=index,
            event_keys=frozenset({path.split(".", 1)[0]}),
        )

    def location(self, description: str) -> tuple[FilterSpec, ...]:
        """``geo_position`` and the address lists; ``description`` is the address lists' one."""
        addresses = str_list_parser(allow_null=True)
        return (
            self.spec(
                "geo_position", "location.geo_position", parse_geo, inside, "inside origin +- delta"
            ),
            *(
                self.spec(name, f"location.{key}", addresses, one_of, description)
                for name, key in ADDRESS_FIELDS
            ),
        )


def user_filters(
    prefix: str, root: Root, event_keys: frozenset[str] | None = None
) -> DynamicCompiler:
    """The ``<prefix>.<path>`` grammar (userdef.py) over ``root(subject)``, which reads the
    top-level event keys ``event_keys`` (None: any).

    A root that is not an object (a missing or non-dict ``meta``) needs no guard here: every
    user-defined predicate walks its path first, and a failed walk never matches.
    """

    def compile_(name: str, raw: str, limits: Limits) -> DynamicFilter | None:
        compiled = compile_user_filter(prefix, name, raw, limits)
        if compiled is None:
            return None
        predicate = compiled.predicate

        def match(subject: Any) -> bool:
            return predicate(root(subject))

        return dataclasses.replace(compiled, predicate=match, event_keys=event_keys)

    return compile_
