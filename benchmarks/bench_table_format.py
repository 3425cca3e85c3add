"""Which table format holds the ``--engine ray`` output: Delta Lake (``deltalake`` merge) against Apache Iceberg
(``pyiceberg`` upsert, SQL catalog on SQLite), beside the Parquet part files written before either, on this
machine, side by side in one run.

Each writer commits N label rows (the predict schema's size: 20 columns) in chunks of ``--chunk`` rows, keyed by
(path, sha256, fingerprint), the way the engine's driver commits them. Measured:

- throughput (rows/s) of the chunked keyed commits;
- a killed writer: a child process commits chunks and is killed with SIGKILL after ``--kill-after`` commits;
  the table must hold exactly the committed chunks (whole), and the same chunks committed again (the rerun)
  must leave exactly N rows, one per key;
- a retried chunk: the same chunk committed twice, and rows of two chunks committed again as one (a batch Ray
  regrouped), leave each row once.

    .venv/bin/python benchmarks/bench_table_format.py --n 20000 --chunk 500
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = ("path", "sha256", "fingerprint")


def chunk(i: int, size: int):
    import pyarrow as pa

    rows = range(i * size, (i + 1) * size)
    cols = {
        "path": [f"/data/stickers/{r:08d}.png" for r in rows],
        "sha256": [f"{r:064x}" for r in rows],
        "fingerprint": ["f" * 24] * size,
        "label": ["happiness"] * size,
        "confidence": [0.5] * size,
        **{f"p_{k}": [0.1] * size for k in range(7)},
        "emoji": [["😄"]] * size,
        "calibrated": [True] * size,
        "temperature": [1.3] * size,
        "model": ["best"] * size,
        "error": pa.nulls(size, pa.string()),
    }
    return pa.table(cols)


class Parts:
    """The former writer: one Parquet file per batch, renamed into place; no keys, no transactions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def commit(self, table) -> None:
        import hashlib

        import pyarrow.parquet as pq

        name = hashlib.sha256("\n".join(table.column("path").to_pylist()).encode()).hexdigest()[:24]
        tmp = self.root / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.root / f"part-{name}.parquet")

    def keys(self) -> list[tuple]:
        import pyarrow.dataset as ds

        t = ds.dataset(self.root, format="parquet").to_table(columns=list(KEY))
        return list(zip(*(t.column(k).to_pylist() for k in KEY), strict=True))


class Delta:
    def __init__(self, root: Path) -> None:
        self.root = str(root)

    def commit(self, table) -> None:
        from deltalake import DeltaTable, write_deltalake

        try:
            dt = DeltaTable(self.root)
        except Exception:
            write_deltalake(self.root, table, mode="append")
            return
        pred = " AND ".join(f"t.{k} = s.{k}" for k in KEY)
        (dt.merge(table, predicate=pred, source_alias="s", target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())  # fmt: skip

    def keys(self) -> list[tuple]:
        from deltalake import DeltaTable

        t = DeltaTable(self.root).to_pyarrow_table(columns=list(KEY))
        return list(zip(*(t.column(k).to_pylist() for k in KEY), strict=True))


class Iceberg:
    def __init__(self, root: Path) -> None:
        from pyiceberg.catalog.sql import SqlCatalog

        root.mkdir(parents=True, exist_ok=True)
        self.catalog = SqlCatalog("bench", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}")
        self.catalog.create_namespace_if_not_exists("mghft")
        self.name = "mghft.labels"

    def commit(self, table) -> None:
        if not self.catalog.table_exists(self.name):
            self.catalog.create_table(self.name, schema=table.schema)
        t = self.catalog.load_table(self.name)
        t.upsert(table, join_cols=list(KEY))

    def keys(self) -> list[tuple]:
        t = self.catalog.load_table(self.name).scan(selected_fields=KEY).to_arrow()
        return list(zip(*(t.column(k).to_pylist() for k in KEY), strict=True))


WRITERS = {"parquet parts": Parts, "delta": Delta, "iceberg": Iceberg}


def child(kind: str, root: str, size: int, start: int, stop: int) -> None:
    w = WRITERS[kind](Path(root))
    for i in range(start, stop):
        w.commit(chunk(i, size))
        print(i, flush=True)


def killed(kind: str, root: Path, size: int, n_chunks: int, kill_after: int) -> dict:
    """Commit in a child, SIGKILL it once ``kill_after`` commits are reported, then check and resume."""
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, str(root), str(size), "0", str(n_chunks)],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    done = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        done = int(line)
        if done + 1 >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    w = WRITERS[kind](root)
    keys = w.keys()
    whole = len(keys) % size == 0 and len(set(keys)) == len(keys) and len(keys) >= (done + 1) * size
    for i in range(n_chunks):  # the rerun: everything again (a keyed writer keeps one row per key)
        w.commit(chunk(i, size))
    w.commit(chunk(0, size))  # a retried chunk
    import pyarrow as pa

    regrouped = pa.concat_tables([chunk(0, size).slice(size // 2), chunk(1, size).slice(0, size // 2)])
    w.commit(regrouped)  # a retried batch that Ray regrouped: the same rows in another chunk
    after = w.keys()
    return {"committed_before_kill": len(keys), "whole_chunks": whole, "rows_after_rerun": len(after),
            "distinct_after_rerun": len(set(after)), "expected": n_chunks * size}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--kill-after", type=int, default=5)
    args = ap.parse_args()
    n_chunks = args.n // args.chunk
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, cls in WRITERS.items():
            root = Path(tmp) / kind.replace(" ", "_")
            w = cls(root)
            t0 = time.perf_counter()
            for i in range(n_chunks):
                w.commit(chunk(i, args.chunk))
            secs = time.perf_counter() - t0
            out[kind] = {"rows_per_s": round(n_chunks * args.chunk / secs, 1), "seconds": round(secs, 2)}
            out[kind]["killed"] = killed(kind, Path(tmp) / (root.name + "_k"), args.chunk, n_chunks, args.kill_after)
            print(kind, json.dumps(out[kind]), flush=True)
    base = out["parquet parts"]["rows_per_s"]
    for kind in ("delta", "iceberg"):
        print(f"{kind}: {out[kind]['rows_per_s'] / base:.2f}x the part files' throughput")


if __name__ == "__main__":
    main()
