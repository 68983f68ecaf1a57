"""``classsr plugins [--json]``: every plugin, where it came from, what it registered and
what it declared for each component (width argument, scales, paper widths, description)."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    return p


def run(args) -> int:
    from classsr_core.plugins.registry import KINDS, get_registry

    rows = get_registry().describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        origin = f"{row['dist']} {row['version']}" if row["dist"] else "unknown distribution"
        print(f"{row['name']}  ({origin})")
        if row.get("error"):
            print(f"    FAILED TO LOAD: {row['error']}")
        for kind in KINDS:
            if row[kind]:
                print(f"    {kind}: {', '.join(row[kind])}")
            for name, fields in row.get("declared", {}).get(kind, {}).items():
                if fields:
                    print(f"      {name}: {declared_line(fields)}")
        for clash in row.get("clashes", []):
            others = ", ".join(p for p in clash["plugins"] if p != row["name"])
            print(
                f"    CLASH: {clash['kind'][:-1]} {clash['name']!r} is also registered by "
                f"{others}; commands that use it fail until one is blocked "
                f"(CLASSSR_DISABLE_PLUGINS=<name>)"
            )
    return 0


def declared_line(fields: dict) -> str:
    """``width_arg=d depth_arg=m scales=1,2,3,4 - description`` for one component."""

    def show(value) -> str:
        if isinstance(value, list) and all(not isinstance(v, (list, dict)) for v in value):
            return ",".join(str(v) for v in value)
        return value if isinstance(value, str) else json.dumps(value)

    parts = [f"{key}={show(value)}" for key, value in fields.items() if key != "description"]
    if "description" in fields:
        parts.append(f"- {fields['description']}" if parts else str(fields["description"]))
    return " ".join(parts)
