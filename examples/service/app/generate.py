"""Deterministic generator of a realistic Congressional SQLite database.

Deterministic so that two runs at the same scale produce byte-identical rows,
which lets migration and release tests compare exact content.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
from pathlib import Path

from app.db import SCHEMA

STATES = "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY".split()
FIRST = "Ada Bea Cal Dee Eli Fay Gus Hal Ida Jon Kim Lou Max Ned Ona Pat Quin Rae Sam Tia Uma Val Wes Xia Yul Zoe".split()
LAST = "Adams Baker Clark Davis Evans Flores Garcia Hall Irwin Jones King Lopez Moore Nash Ortiz Perez Quinn Reed Smith Turner Ueda Vega White Young Zhang O'Neil".split()
SUBJECTS = ["health", "energy", "taxation", "defense", "education", "agriculture", "transport"]
WORDS = "act relief reform energy health care tax credit defense education rural transit water safety data privacy".split()


def generate(path: Path, scale: float = 1.0, seed: int = 2025) -> dict[str, int]:
    """Create the database at `path` and return row counts per table."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    n_members = 535
    n_bills = max(10, int(2000 * scale))
    n_votes = max(10, int(20000 * scale))
    members = []
    for i in range(n_members):
        chamber = "senate" if i < 100 else "house"
        members.append(
            (
                f"M{i:06d}",
                f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                rng.choice("DRI" if i % 50 == 0 else "DR"),
                STATES[i % len(STATES)],
                chamber,
                round(rng.uniform(1940, 1995) + rng.random() / 7, 6),
                1 if rng.random() > 0.05 else 0,
            )
        )
    conn.executemany(
        "INSERT INTO members (bioguide_id, name, party, state, chamber, born, in_office)"
        " VALUES (?,?,?,?,?,?,?)",
        members,
    )
    bills = []
    for i in range(n_bills):
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))).capitalize()
        bills.append(
            (
                f"H.R.{i + 1}",
                f"{title} Act of {2020 + i % 6}",
                rng.randint(1, n_members),
                f"20{20 + i % 6}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                rng.choice(["introduced", "committee", "passed_house", "enacted"]),
                json.dumps(rng.sample(SUBJECTS, rng.randint(1, 3))),
            )
        )
    conn.executemany(
        "INSERT INTO bills (number, title, sponsor_id, introduced, status, subjects)"
        " VALUES (?,?,?,?,?,?)",
        bills,
    )
    votes = [
        (
            rng.randint(1, n_bills),
            rng.randint(1, n_members),
            rng.choice(["yea", "nay", "present", "not_voting"]),
            f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00",
        )
        for i in range(n_votes)
    ]
    conn.executemany(
        "INSERT INTO votes (bill_id, member_id, position, cast_at) VALUES (?,?,?,?)", votes
    )
    conn.commit()
    conn.close()
    return {"members": n_members, "bills": n_bills, "votes": n_votes}


def generate_once(path: Path, scale: float = 1.0) -> bool:
    """Create the database at `path` unless it exists; safe when several processes race.

    Every uvicorn worker runs the startup hook, so two of them can find the file
    missing at the same moment. Each builds its own private file and publishes it
    with `os.link`, which fails if the name is already taken: exactly one complete
    database appears, and no process ever sees a half-written one.
    Returns whether this call created it.
    """
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        generate(tmp, scale)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--if-missing", action="store_true", help="do nothing if the file exists")
    args = parser.parse_args()
    if args.if_missing:
        generate_once(args.path, args.scale)
        return
    print(json.dumps(generate(args.path, args.scale)))


if __name__ == "__main__":
    main()
