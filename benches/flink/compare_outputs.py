"""Compares what two engines wrote as CSV files: the row count and an order-free checksum
of the rows, after writing each value one way (timestamps as epoch milliseconds,
numbers without trailing zeros), since the engines format them differently.

    python compare_outputs.py DIR_A DIR_B

Prints `rows=N checksum=X` per folder and exits 1 when they differ. Hidden files
(Flink's in-progress parts) are skipped.
"""
import csv
import datetime
import hashlib
import os
import re
import sys
from decimal import Decimal, InvalidOperation

TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?Z?$")


def normalized(value: str) -> str:
    match = TIMESTAMP.match(value)
    if match:
        day, time, fraction = match.groups()
        at = datetime.datetime.fromisoformat(f"{day}T{time}").replace(
            tzinfo=datetime.timezone.utc
        )
        millis = int(Decimal(fraction or "0") * 1000)
        return str(int(at.timestamp()) * 1000 + millis)
    try:
        return format(Decimal(value).normalize(), "f")
    except InvalidOperation:
        return value


def summary(folder: str) -> tuple[int, str]:
    rows, total = 0, 0
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".") or name.startswith("_"):
                continue
            with open(os.path.join(root, name), newline="") as f:
                for row in csv.reader(f):
                    if not row:
                        continue
                    line = ",".join(normalized(v) for v in row)
                    digest = hashlib.blake2b(line.encode(), digest_size=8).digest()
                    total = (total + int.from_bytes(digest, "little")) % (1 << 64)
                    rows += 1
    return rows, f"{total:016x}"


def main(a: str, b: str) -> int:
    results = [summary(a), summary(b)]
    for folder, (rows, checksum) in zip((a, b), results):
        print(f"{folder}: rows={rows} checksum={checksum}")
    return 0 if results[0] == results[1] and results[0][0] > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
