"""Run archives: many run directories' configs and per-epoch metrics in ONE gzip-compressed CSV.

A sweep's run directories (``config.json``, ``metrics.csv``, ``checkpoint.npz``) are too heavy for git;
an archive keeps what the figures and tables need — every run's configuration, its ``failed.json``
marker and every metrics row — in one small, deterministic ``.csv.gz`` file that can be committed
(e.g. ``docs/results/cartpole.csv.gz``), merged from several machines and drawn directly by
``diffenvs-plot``. Checkpoints are not archived: imported runs cannot be resumed.

Format (UTF-8 CSV, ``\\n`` line ends, gzip with mtime 0 and no file name, so equal input gives equal
bytes). The header is ``run,kind,config,meta`` followed by the union of the runs' metrics columns (the
trainers' columns in their order, then any others sorted). Runs are sorted by name, and each is

* one ``kind=run`` row: ``config`` is the run's ``config.json`` as compact JSON with sorted keys,
  ``meta`` a JSON object ``{"columns": [...], "float32": [...], "failed_json": "..."}``: the run's own
  metrics columns in their order, those stored in float32 short form (below) and the text of its
  ``failed.json`` if it has one; the metrics cells are empty;
* one ``kind=row`` row per metrics row: ``config`` and ``meta`` empty, the run's columns holding the
  cells of its ``metrics.csv`` (columns it does not have are empty).

Cells are the exact strings of ``metrics.csv`` (``repr`` of the floats as :mod:`trainers.rundir` writes
them), except in the columns listed in ``float32``: the trainers' losses are float32 values written as
float64 ``repr`` (``1.9717410802841187``), stored here as the shortest float32 string (``1.9717411``)
when every cell of that column of that run comes back exactly (checked when writing). That halves the
archive; :func:`read_archive` restores the original strings, so :func:`import_runs` recreates
``metrics.csv`` byte for byte (for files written by :mod:`trainers.rundir`) and every float bitwise.
(Reading the CSV with another tool gives those columns as the nearest float64 of the short string.)

A run's name is its directory's path relative to the root it was found under (its directory name when
given directly). Nothing is unpickled or evaluated; a malformed archive raises ``ValueError`` naming
the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import zlib
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from trainers import rundir

ARCHIVE_COLUMNS = ("run", "kind", "config", "meta")
_KINDS = ("run", "row")


class ArchivedRun(NamedTuple):
    """One run of an archive: its name, config, metrics columns and rows (the exact cell strings of
    ``metrics.csv``) and the text of its ``failed.json`` (None if it has none)."""

    name: str
    config: dict[str, Any]
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    failed_json: str | None = None

    def metrics_text(self) -> str:
        """The run's ``metrics.csv`` (header and rows, ``\\n`` line ends)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def float_columns(self) -> dict[str, np.ndarray]:
        """The metrics as float arrays per column (empty cells as NaN), as ``plotting.read_columns``
        reads them; {} if the run has no rows."""
        if not self.rows:
            return {}
        table = np.asarray([[float(cell) if cell != "" else math.nan for cell in row] for row in self.rows], float)
        return {name: table[:, index] for index, name in enumerate(self.columns)}


# ------------------------------------------------------------------------------------------ names

def check_name(name: str, where: str = "run") -> str:
    """A run name is a relative POSIX path of plain parts (no '.', '..', empty parts, backslashes or
    control characters), so importing cannot write outside the output root."""
    parts = name.split("/") if isinstance(name, str) else []
    if (not parts or any(part in ("", ".", "..") for part in parts) or "\\" in name
            or any(ord(character) < 32 for character in name)):
        raise ValueError(f"{where}: invalid run name {name!r} (expected a relative path like 'a/b' of plain parts)")
    return name


# -------------------------------------------------------------------------------- run directories

def read_run_dir(run_dir: str | Path, name: str | None = None) -> ArchivedRun:
    """A run directory as an :class:`ArchivedRun` (``name`` defaults to the directory name).

    The metrics are read as ``diffenvs-plot`` reads them: a cut-short last line and anything after a
    row with a missing field or a non-numeric cell are left out.
    """
    run_dir = Path(run_dir)
    name = check_name(name if name is not None else run_dir.resolve().name, str(run_dir))
    try:
        config = rundir.read_config(run_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{run_dir / rundir.CONFIG_FILE}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{run_dir}: not a run directory (no config.json holding a JSON object)")
    columns: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = []
    path = run_dir / rundir.METRICS_FILE
    if path.exists():
        text = path.read_text()
        if text and not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]                  # a last line cut short by an interrupted write
        reader = csv.reader(io.StringIO(text))
        columns = tuple(next(reader, ()))
        if any(name == "" for name in columns) or len(set(columns)) != len(columns):
            raise ValueError(f"{path}: the header must hold distinct non-empty column names, got {list(columns)}")
        for row in reader:
            if len(row) != len(columns) or not all(_is_number(cell) for cell in row):
                break                                           # a garbled line: the rows before it are complete
            rows.append(tuple(row))
    reserved = set(columns) & set(ARCHIVE_COLUMNS)
    if reserved:
        raise ValueError(f"{path}: metrics columns {sorted(reserved)} clash with the archive's own columns")
    failed = run_dir / rundir.FAILED_FILE
    return ArchivedRun(name, config, columns, tuple(rows), failed.read_text() if failed.exists() else None)


def _is_number(cell: str) -> bool:
    if cell == "":
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


def collect_runs(paths: Sequence[str | Path]) -> dict[str, ArchivedRun]:
    """The runs among ``paths`` by name: each path is a run directory (named by its directory name), a
    folder searched recursively for run directories with a metrics.csv (named by their path relative to
    it, as ``diffenvs-plot`` finds them) or an archive file (its runs). Two different runs with one name
    raise ValueError."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs: dict[str, ArchivedRun] = {}
    origin: dict[str, str] = {}

    def add(run: ArchivedRun, where: str) -> None:
        if run.name in runs and runs[run.name] != run:
            raise ValueError(f"two different runs are named {run.name!r}: in {origin[run.name]} and in {where}")
        runs[run.name], origin[run.name] = run, where

    for path in map(Path, paths):
        if path.is_file():
            for run in read_archive(path).values():
                add(run, str(path))
        elif (path / rundir.CONFIG_FILE).exists():
            add(read_run_dir(path), str(path))
        else:
            found = sorted(config.parent for config in path.rglob(rundir.CONFIG_FILE)) if path.is_dir() else []
            found = [run for run in found if (run / rundir.METRICS_FILE).exists()]
            if not found:
                raise ValueError(f"{path} is neither a run directory, a folder holding run directories nor an "
                                 f"archive file")
            for run_dir in found:
                add(read_run_dir(run_dir, run_dir.relative_to(path).as_posix()), str(run_dir))
    return runs


# ---------------------------------------------------------------------------------------- writing

def _short(cell: str) -> str | None:
    """The float32 short form of ``cell`` if it restores exactly, else None."""
    if cell == "":
        return cell
    try:
        value = float(cell)
    except ValueError:
        return None
    if repr(value) != cell:
        return None
    with np.errstate(over="ignore"):
        short = str(np.float32(value))
    return short if _restore(short) == cell else None


def _restore(short: str) -> str:
    return short if short == "" else repr(float(np.float32(short)))


def _union_columns(runs: Iterable[ArchivedRun]) -> list[str]:
    names = {name for run in runs for name in run.columns}
    return [name for name in rundir.METRIC_COLUMNS if name in names] + sorted(names - set(rundir.METRIC_COLUMNS))


def archive_bytes(runs: Iterable[ArchivedRun]) -> bytes:
    """The archive (gzip-compressed CSV bytes) of ``runs``, sorted by name; deterministic."""
    runs = sorted(runs, key=lambda run: run.name)
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs: duplicate run names {sorted({n for n in names if names.count(n) > 1})}")
    metric_columns = _union_columns(runs)
    position = {name: index for index, name in enumerate(metric_columns)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(ARCHIVE_COLUMNS) + metric_columns)
    width = len(ARCHIVE_COLUMNS) + len(metric_columns)
    for run in runs:
        check_name(run.name)
        float32 = []
        cells = [list(row) for row in run.rows]
        for index, name in enumerate(run.columns):
            shorts = [_short(row[index]) for row in run.rows]
            if run.rows and all(short is not None for short in shorts) and any(short != row[index] for short, row
                                                                                in zip(shorts, run.rows)):
                float32.append(name)
                for row, short in zip(cells, shorts):
                    row[index] = short
        meta: dict[str, Any] = {"columns": list(run.columns), "float32": float32}
        if run.failed_json is not None:
            meta["failed_json"] = run.failed_json
        writer.writerow([run.name, "run", _json(run.config), _json(meta)] + [""] * len(metric_columns))
        for row in cells:
            line = [run.name, "row", "", ""] + [""] * len(metric_columns)
            for name, cell in zip(run.columns, row):
                line[len(ARCHIVE_COLUMNS) + position[name]] = cell
            assert len(line) == width
            writer.writerow(line)
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))
    return out.getvalue()


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def write_archive(runs: Iterable[ArchivedRun], path: str | Path) -> Path:
    """Write ``runs`` as an archive at ``path`` (replaced atomically; parent folders are created)."""
    data = archive_bytes(runs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir._write_atomically(path, data)
    return path


def export_runs(run_dirs_or_roots: Sequence[str | Path], path: str | Path, *, merge: bool = False) -> list[str]:
    """Write the runs among ``run_dirs_or_roots`` (run directories, folders holding them, or archives;
    see :func:`collect_runs`) as ONE archive at ``path`` (``.csv.gz``). With ``merge=True`` an existing
    archive at ``path`` keeps its other runs and those of the same name are replaced; otherwise it is
    replaced whole. Returns the names of the exported runs (sorted)."""
    runs = collect_runs(run_dirs_or_roots)
    path = Path(path)
    combined = read_archive(path) if merge and path.exists() else {}
    combined.update(runs)
    write_archive(combined.values(), path)
    return sorted(runs)


# ---------------------------------------------------------------------------------------- reading

def read_archive(path: str | Path) -> dict[str, ArchivedRun]:
    """The runs of the archive at ``path`` by name (in the archive's order). ValueError naming the file
    for anything malformed: not gzip, not UTF-8 CSV, wrong header, bad JSON, rows out of place, cells
    that are not numbers or that belong to columns the run does not have."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such archive") from None
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a gzip-compressed run archive ({error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)

    def fail(message: str) -> ValueError:
        return ValueError(f"{path}: line {reader.line_num}: {message}")

    try:
        header = next(reader, None)
        if header is None or tuple(header[:len(ARCHIVE_COLUMNS)]) != ARCHIVE_COLUMNS:
            raise fail(f"not a run archive: the header must begin with {','.join(ARCHIVE_COLUMNS)}, "
                       f"got {header[:len(ARCHIVE_COLUMNS)] if header else header}")
        metric_columns = header[len(ARCHIVE_COLUMNS):]
        if "" in metric_columns or len(set(header)) != len(header):
            raise fail(f"the header must hold distinct non-empty column names, got {header}")
        position = {name: len(ARCHIVE_COLUMNS) + index for index, name in enumerate(metric_columns)}
        runs: dict[str, ArchivedRun] = {}
        current: dict[str, Any] | None = None

        def finish() -> None:
            if current is not None:
                rows = tuple(tuple(_restore(cell) if name in current["float32"] else cell
                                   for name, cell in zip(current["columns"], row)) for row in current["rows"])
                runs[current["name"]] = ArchivedRun(current["name"], current["config"], current["columns"], rows,
                                                    current["failed_json"])

        for line in reader:
            if len(line) != len(header):
                raise fail(f"{len(line)} fields, expected {len(header)} as in the header")
            name, kind, config_text, meta_text = line[:len(ARCHIVE_COLUMNS)]
            try:
                check_name(name, "run")
            except ValueError as error:
                raise fail(str(error)) from None
            if kind == "run":
                finish()
                if name in runs:
                    raise fail(f"run {name!r} appears twice")
                config, meta = _parse_json(config_text, "config", fail), _parse_json(meta_text, "meta", fail)
                if not isinstance(config, dict):
                    raise fail(f"run {name!r}: config must be a JSON object")
                columns, float32 = (meta.get("columns"), meta.get("float32")) if isinstance(meta, dict) else (0, 0)
                failed_json = meta.get("failed_json") if isinstance(meta, dict) else None
                if (not isinstance(meta, dict) or not _names(columns) or not _names(float32)
                        or not isinstance(failed_json, (str, type(None)))
                        or set(meta) - {"columns", "float32", "failed_json"}):
                    raise fail(f"run {name!r}: meta must be a JSON object with lists of column names 'columns' "
                               f"and 'float32' and an optional string 'failed_json', got {meta_text!r}")
                if len(set(columns)) != len(columns) or set(columns) - set(metric_columns):
                    raise fail(f"run {name!r}: its columns {columns} must be distinct and in the header")
                if set(float32) - set(columns):
                    raise fail(f"run {name!r}: float32 columns {float32} must be among its columns")
                if any(cell != "" for cell in line[len(ARCHIVE_COLUMNS):]):
                    raise fail(f"run {name!r}: the run row must have empty metrics cells")
                current = {"name": name, "config": config, "columns": tuple(columns), "float32": set(float32),
                           "failed_json": failed_json, "rows": []}
            elif kind == "row":
                if current is None or current["name"] != name:
                    raise fail(f"a metrics row of run {name!r} that does not follow that run's 'run' row")
                if config_text or meta_text:
                    raise fail(f"run {name!r}: metrics rows must have empty config and meta")
                own = {position[column] for column in current["columns"]}
                for index in range(len(ARCHIVE_COLUMNS), len(header)):
                    cell = line[index]
                    if index not in own and cell != "":
                        raise fail(f"run {name!r} has a value in column {header[index]!r}, which it does not have")
                    if index in own and not _is_number(cell):
                        raise fail(f"run {name!r}: column {header[index]!r} holds {cell!r}, not a number")
                current["rows"].append(tuple(line[position[column]] for column in current["columns"]))
            else:
                raise fail(f"kind must be one of {_KINDS}, got {kind!r}")
        finish()
    except csv.Error as error:
        raise fail(f"malformed CSV ({error})") from None
    return runs


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _parse_json(text: str, what: str, fail) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise fail(f"{what} is not valid JSON ({error})") from None


# ---------------------------------------------------------------------------------------- import

def import_runs(path: str | Path, out_root: str | Path) -> list[Path]:
    """Recreate the run directories of the archive at ``path`` under ``out_root`` (``config.json``,
    ``metrics.csv`` and ``failed.json`` if the run had one; no checkpoint). Refuses (ValueError) to write
    into an existing non-empty run directory; validates the whole archive before writing anything.
    Returns the run directories, sorted."""
    runs = read_archive(path)
    out_root = Path(out_root)
    targets = {name: out_root.joinpath(*name.split("/")) for name in sorted(runs)}
    for name, target in targets.items():
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ValueError(f"out_root: {target} exists and is not an empty directory; import into a new folder")
    for name, target in targets.items():
        run = runs[name]
        rundir.write_config(target, run.config)
        rundir._write_atomically(target / rundir.METRICS_FILE, run.metrics_text().encode())
        if run.failed_json is not None:
            rundir._write_atomically(target / rundir.FAILED_FILE, run.failed_json.encode())
    return list(targets.values())
