"""Runs a SQL script on Apache Flink (PyFlink) in streaming mode and waits for its job.

    python run_flink.py SCRIPT.sql PARALLELISM

Statements are separated by ';' at line ends; the last INSERT's job is waited for.
"""
import atexit
import os
import shutil
import sys
import tempfile

from pyflink.table import EnvironmentSettings, TableEnvironment


def tree_cpu_seconds() -> float:
    """User + system CPU of this process and every live descendant (the Flink JVM runs
    as a child that is not waited for, so the shell's `time` would not count it)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        # After the command name: state, ppid, ..., utime (12th), stime (13th), cutime, cstime.
        stats[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    me = os.getpid()
    total, frontier = stats.get(me, (0, 0))[1], [me]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, ticks) in stats.items():
            if ppid == parent:
                total += ticks
                frontier.append(pid)
    return total / tick


def main(path: str, parallelism: int) -> None:
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", str(parallelism))
    # A failing job fails the run instead of restarting without end.
    env.get_config().set("restart-strategy.type", "none")
    checkpoint_ms = os.environ.get("FLINK_CHECKPOINT_MS")
    if checkpoint_ms:
        env.get_config().set("execution.checkpointing.interval", f"{checkpoint_ms} ms")
        # Checkpoints go to files: the default keeps them in the JobManager's memory, which
        # refuses state over 5 MB (q7's join holds every bid of a window) and the job then
        # restarts forever.
        directory = tempfile.mkdtemp(prefix="runnel-flink-checkpoints-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        env.get_config().set("execution.checkpointing.storage", "filesystem")
        env.get_config().set("execution.checkpointing.dir", f"file://{directory}")
    text = open(path).read()
    lines = [l for l in text.splitlines() if not l.strip().startswith("--")]
    statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
    result = None
    for statement in statements:
        result = env.execute_sql(statement)
    if result is not None:
        result.wait()
    print(f"TREE_CPU_SECONDS={tree_cpu_seconds():.2f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
