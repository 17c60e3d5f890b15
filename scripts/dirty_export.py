#!/usr/bin/env python3
"""An Amplitude-style email export of N rows where most addresses need normalizing (issue 15's input):
leading/trailing blanks, +tags, capitals; ~5 % empty or invalid; ~5 % duplicates. Deterministic.

usage: scripts/dirty_export.py ROWS OUT.csv [--clean]
"""
import random
import sys


def main() -> None:
    rows, out = int(sys.argv[1]), sys.argv[2]
    clean = "--clean" in sys.argv[3:]
    rnd = random.Random(15)
    with open(out, "w", buffering=1 << 20) as f:
        f.write("Amplitude ID,User ID,email,country\n")
        for i in range(rows):
            r = rnd.random()
            if clean:
                email = f"user.{i}@example{i % 97}.com"
            elif r < 0.025:
                email = ""
            elif r < 0.05:
                email = f"not-an-email-{i}"
            elif r < 0.10:
                j = rnd.randrange(max(i, 1))
                email = f"User.{j}@Example{j % 97}.com"
            else:
                kind = i % 4
                if kind == 0:
                    email = f"  User.{i}+promo@Example{i % 97}.COM "
                elif kind == 1:
                    email = f"USER.{i}@EXAMPLE{i % 97}.COM"
                elif kind == 2:
                    email = f" user.{i}+{i % 7}@example{i % 97}.com"
                else:
                    email = f"user.{i}@example{i % 97}.com"
            f.write(f"{100000000 + i},u{i},{email},US\n")


if __name__ == "__main__":
    main()
