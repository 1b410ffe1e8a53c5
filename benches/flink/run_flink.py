"""Runs a SQL script on Apache Flink (PyFlink) in streaming mode and waits for its job.

    python run_flink.py SCRIPT.sql PARALLELISM

Statements are separated by ';' at line ends; the last INSERT's job is waited for.
"""
import sys

from pyflink.table import EnvironmentSettings, TableEnvironment


def main(path: str, parallelism: int) -> None:
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", str(parallelism))
    text = open(path).read()
    lines = [l for l in text.splitlines() if not l.strip().startswith("--")]
    statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
    result = None
    for statement in statements:
        result = env.execute_sql(statement)
    if result is not None:
        result.wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
