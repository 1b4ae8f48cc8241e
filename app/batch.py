"""Batch analysis: many files in, one results file out (CSV, JSON lines or Parquet).

``python -m app.cli face|classify|neighbours PATH... --out results.csv`` expands files,
folders (recursively, image files only) and glob patterns, analyses each file with the tab's
own service, and appends one row per result (per face for the face model) as soon as it is
known, so an interrupted batch keeps what it did and ``--resume`` analyses only the files
that are not in the results file yet. A file that fails is a row with ``status`` ``error``
(or ``no_face``) and its message; it never ends the batch. A missing or corrupt model does:
every row would fail the same way. So does the request's time limit (a batch served by the
app runs under :mod:`runtime.deadline`): the batch stops between files with the rows done so
far, and its summary's ``stopped`` says after how many of its files.

Rows are flat (the same columns in both formats, in a fixed order decided before the first
file, so a CSV header never changes mid-file); lists are written space-separated in CSV.
A CSV cell that a spreadsheet would read as a formula (it starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return and is not a number) is written with a leading ``'``, as
is a cell that starts with ``'`` itself, so that reading a CSV back (:func:`read_results`)
removes exactly that quote. JSON lines are written as they are. A Parquet file (for pandas
or DuckDB) is written once at the end of the batch; until then its rows go, as they come,
to a JSON-lines journal beside it (``results.parquet.partial.jsonl``), which ``--resume``
reads too, so an interrupted Parquet batch keeps what it did as the other formats do.

``--engine ray`` runs the same per-file analysis on a Ray cluster (:mod:`app.batch_ray`);
the rows, the results file and ``--resume`` are the same.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from app.inputs import IMAGE_EXTENSIONS, InputError
from app.services.reliability import FINDING_COLUMNS, UNRELIABLE
from runtime import deadline
from runtime.artifacts import write_bytes_atomic
from runtime.deadline import RequestTimeout
from runtime.engine import ModelUnavailableError
from runtime.manifest import sha256_file

STATUS_OK, STATUS_NO_FACE, STATUS_ERROR = "ok", "no_face", "error"
LEAD = ("file", "sha256")             # every row starts with these
TAIL = ("status", "error")            # and ends with these
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
JOURNAL = ".partial.jsonl"            # a Parquet batch's rows until the file is written

# rows for one file: (path) -> list of rows without LEAD/TAIL (a no-face file: [] )
Analyse = Callable[[Path], list[dict[str, Any]]]
# the files to analyse -> (file, its complete rows) as each is done, in any order
RowsSource = Callable[[list[Path]], Iterator[tuple[Path, list[dict[str, Any]]]]]


class NoFaceError(InputError):
    """The file is an image but holds no face: a ``no_face`` row, not an error."""


def expand_inputs(specs: Iterable[str]) -> tuple[list[Path], int]:
    """Files named, image files under folders (recursive, sorted) and glob matches.

    Returns:
        (paths in order, without duplicates; number of non-image files skipped in folders).
        A file named explicitly is always kept (a non-image becomes an error row).

    Raises:
        InputError: a path that does not exist and matches no file, or nothing at all.
    """
    out: list[Path] = []
    seen: set[str] = set()
    skipped = 0

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    def walk(folder: Path) -> None:
        nonlocal skipped
        for f in sorted(q for q in folder.rglob("*") if q.is_file()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                add(f)
            else:
                skipped += 1

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            walk(p)
        elif p.is_file():
            add(p)
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise InputError(f"No file matches {spec!r}.")
            for m in map(Path, matches):
                if m.is_dir():
                    walk(m)
                elif m.is_file():
                    add(m)
        else:
            raise InputError(f"{spec}: no such file or folder.")
    if not out:
        raise InputError("No image files were found in " + ", ".join(map(str, specs)) + ".")
    return out, skipped


def results_format(out: str | os.PathLike[str]) -> str:
    """``csv`` or ``jsonl`` from the results file's extension."""
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise InputError(f"--out must end in .csv, .jsonl or .parquet, got {Path(out).name!r}.")
    return fmt


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads these as a formula
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(_cell(x) for x in v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def csv_safe(text: str) -> str:
    """A CSV cell no spreadsheet runs as a formula: ``'`` before a cell that starts with
    ``= + - @``, a tab or a carriage return (a number such as ``-0.5`` excepted) or with
    ``'`` itself (so :func:`csv_unsafe` can take exactly that quote off again)."""
    if text.startswith("'") or (text.startswith(FORMULA_START) and not _NUMBER.fullmatch(text)):
        return "'" + text
    return text


def csv_unsafe(text: str) -> str:
    """The cell :func:`csv_safe` was given."""
    return text[1:] if text.startswith("'") else text


def _csv_row(row: dict[str, Any], columns: list[str]) -> list[str]:
    """One row's CSV cells, formulas neutralised."""
    return [csv_safe(_cell(row.get(c))) for c in columns]


def read_results(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    """The complete rows of an existing results file (a truncated last line is dropped).

    Raises:
        InputError: the file was written with other columns (another command or model).
    """
    fmt = results_format(path)
    if fmt == "parquet":
        return _read_parquet(path, columns)
    text = path.read_text(encoding="utf-8", errors="replace")
    rows: list[dict[str, Any]] = []
    if fmt == "jsonl":
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if isinstance(row, dict) and "file" in row:
                rows.append(row)
        if rows and list(rows[0]) != columns:
            raise InputError(f"{path} was written with other columns (another command or "
                             f"model); choose another --out.")
        return rows
    if not text.strip():
        return rows
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(complete))
    header = next(reader, None)
    if header is None or [csv_unsafe(h) for h in header] != columns:
        raise InputError(f"{path} was written with other columns (another command or model); "
                         f"choose another --out.")
    for rec in reader:
        if len(rec) == len(columns):
            rows.append(dict(zip(columns, map(csv_unsafe, rec))))
    return rows


def journal_path(path: Path) -> Path:
    """Where a Parquet batch's rows wait until the Parquet file is written."""
    return path.with_name(path.name + JOURNAL)


def _plain(v: Any) -> Any:
    """A numpy scalar as its Python value (JSON and Parquet take those); others as they are."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, tuple, str)) else v


def _read_parquet(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    """The rows of a Parquet results file and of its journal (a cut last line dropped)."""
    rows: list[dict[str, Any]] = []
    if path.exists():
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: the user's to replace
            raise InputError(f"{path} is not a readable Parquet file ({exc}); choose another "
                             f"--out.") from None
        if table.column_names != columns:
            raise InputError(f"{path} was written with other columns (another command or "
                             f"model); choose another --out.")
        rows = table.to_pylist()
    journal = journal_path(path)
    if journal.exists():
        rows += read_results(journal, columns)
    return rows


def _parquet_column(values: list[Any]) -> Any:
    """One column as an Arrow array: its own type, or text when the values mix types."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else _cell(v) for v in values], pa.string())


def write_parquet(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as one Parquet file, written atomically (0600 unless ``private_reports`` is off)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.settings import user_file_mode
    from runtime.artifacts import atomic_path

    table = pa.table({c: _parquet_column([_plain(r.get(c)) for r in rows]) for c in columns})
    with atomic_path(path, user_file_mode()) as tmp:
        pq.write_table(table, tmp)


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as CSV text with a header (lists space-separated, formulas neutralised by
    :func:`csv_safe`), as ``--out x.csv`` writes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_safe(c) for c in columns])
    for r in rows:
        w.writerow(_csv_row(r, columns))
    return buf.getvalue()


class ResultsWriter:
    """Appends rows to a CSV or JSONL file, flushed after each file's rows.

    A new file is created with its header through an atomic write; on resume the complete
    rows already there are rewritten atomically first (dropping a line an interruption cut).
    A Parquet file's rows go to its JSON-lines journal the same way, and :meth:`close`
    writes the Parquet file (every row) and removes the journal."""

    def __init__(self, path: Path, columns: list[str], keep: list[dict[str, Any]]) -> None:
        self.path, self.columns, self.fmt = path, columns, results_format(path)
        self.rows: list[dict[str, Any]] | None = None
        if self.fmt == "parquet":  # the rows kept go into the Parquet file, new ones after
            self.rows = list(keep)
            if keep:
                write_parquet(path, keep, columns)
            path, keep = journal_path(path), []
        if self.fmt == "csv":
            text = csv_text(keep, columns)
        else:
            text = "".join(json.dumps({c: r.get(c) for c in columns}) + "\n" for r in keep)
        path.parent.mkdir(parents=True, exist_ok=True)
        from app.settings import user_file_mode

        write_bytes_atomic(path, text.encode("utf-8"), user_file_mode())  # 0600: private_reports
        self._fh = path.open("a", encoding="utf-8", newline="")
        self._csv = csv.writer(self._fh, lineterminator="\n") if self.fmt == "csv" else None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.rows is not None:
            self.rows.extend(rows)
        for r in rows:
            if self._csv is not None:
                self._csv.writerow(_csv_row(r, self.columns))
            else:
                self._fh.write(json.dumps({c: r.get(c) for c in self.columns}, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
        if self.rows is not None:
            write_parquet(self.path, self.rows, self.columns)
            journal_path(self.path).unlink(missing_ok=True)


@dataclass
class BatchResult:
    """Every row of the batch (those resumed included) and the summary."""
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def run_batch(paths: list[Path], analyse: Analyse, columns: list[str], *,
              out: Path | None = None, resume: bool = False, skipped_non_images: int = 0,
              progress: Callable[[int, int, str], None] | None = None,
              count_key: str | None = None, flag: Callable[[dict[str, Any]], bool] | None = None,
              show_bar: bool = True, rows_source: RowsSource | None = None) -> BatchResult:
    """Analyse ``paths`` one by one; rows go to ``out`` as they come.

    Args:
        analyse: the rows of one file (columns besides ``file``/``sha256``/``status``/
            ``error``); raises :class:`InputError` (an ``error`` row), :class:`NoFaceError`
            (a ``no_face`` row) or :class:`ModelUnavailableError` (ends the batch).
        columns: the analysis columns, in order.
        resume: keep ``out``'s rows and skip the files already in it.
        progress: ``(done, total, file)`` after each file (the UI's progress bar).
        count_key / flag: the summary counts rows (``faces``) and flagged rows
            (``manipulated``) under these names; with a finding column
            (:data:`FINDING_COLUMNS`), ``unreliable`` counts the rows without a reliable one.
        rows_source: where the files' rows come from (default: ``analyse`` here, file by
            file; :mod:`app.batch_ray`: a Ray cluster, in the order they finish).

    Under a request deadline (:mod:`runtime.deadline`) the time limit is checked before each
    file; a batch past it ends with the rows done so far, and the summary's ``stopped`` says
    after how many files (``not_analysed`` counts the others).
    """
    from tqdm import tqdm

    all_cols = [*LEAD, *columns, *TAIL]
    kept: list[dict[str, Any]] = []
    if out is not None:
        started = out.exists() or (results_format(out) == "parquet"
                                   and journal_path(out).exists())
        if started and not resume:
            raise InputError(f"{out} exists: add --resume to continue it, or choose another --out.")
        if resume and started:
            kept = read_results(out, all_cols)
    done = {str(r["file"]) for r in kept}
    todo = [p for p in paths if str(p) not in done]
    writer = ResultsWriter(out, all_cols, kept) if out is not None else None
    rows: list[dict[str, Any]] = list(kept)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="analysing", unit="file", disable=not show_bar or not todo,
               dynamic_ncols=True)
    source = (rows_source or (lambda files: _local_rows(files, analyse, columns)))(todo)
    n_err = n_rows = n_done = 0
    stopped: str | None = None
    try:
        for i in range(1, len(todo) + 1):
            try:
                deadline.check()
                item = next(source, None)
            except RequestTimeout:
                stopped = _stopped_message(n_done, len(todo))
                break
            if item is None:
                break
            p, new = item
            bar.update(1)
            n_done = i
            n_err += sum(r["status"] == STATUS_ERROR for r in new)
            n_rows += sum(r["status"] == STATUS_OK for r in new)
            bar.set_postfix(rows=n_rows, errors=n_err, refresh=False)
            if writer is not None:
                writer.write(new)
            rows.extend(new)
            if progress is not None:
                progress(i, len(todo), str(p))
    finally:
        bar.close()
        source.close()  # a cluster's work stops with the batch
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - t0
    ok = [r for r in rows if r["status"] == STATUS_OK]
    summary: dict[str, Any] = {
        "files": len({str(r["file"]) for r in rows}),
        "analysed_now": n_done, "resumed": len(paths) - len(todo),
        count_key or "results": len(ok),
        "errors": sum(r["status"] == STATUS_ERROR for r in rows),
        "skipped_non_images": skipped_non_images,
        "seconds": round(seconds, 2),
        "files_per_second": round(n_done / seconds, 3) if n_done and seconds > 0 else None,
    }
    if stopped is not None:
        summary["stopped"] = stopped
        summary["not_analysed"] = len(todo) - n_done
    if any(r["status"] == STATUS_NO_FACE for r in rows):
        summary["no_face"] = sum(r["status"] == STATUS_NO_FACE for r in rows)
    if flag is not None:
        summary["manipulated"] = sum(bool(flag(r)) for r in ok)
    finding = [c for c in FINDING_COLUMNS if c in columns]
    if finding:
        summary["unreliable"] = sum(r.get(finding[0]) == UNRELIABLE for r in ok)
    if out is not None:
        summary["out"] = str(out)
    return BatchResult(rows, summary)


def _stopped_message(done: int, total: int) -> str:
    """One line: the batch was stopped at the time limit after ``done`` of ``total`` files."""
    d = deadline.current()
    limit = f" of {d.seconds:g} s" if d is not None else ""
    return (f"Stopped at the time limit{limit} (request_timeout_s) after {done} of {total} "
            f"files; the rows so far are kept. Send the other files in a smaller batch, or use "
            f"the CLI (python -m app.cli <command> FOLDER --out results.csv), which has no time limit.")


def _local_rows(paths: list[Path], analyse: Analyse, columns: list[str]
                ) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """Each file's rows, analysed here when asked for (the local engine)."""
    for p in paths:
        yield p, _rows_for(p, analyse, columns)


def _rows_for(path: Path, analyse: Analyse, columns: list[str], digest: str | None = None
              ) -> list[dict[str, Any]]:
    """One file's rows; its failure is an ``error`` row (a missing model or the request's
    time limit ends the batch). ``digest``: the file's sha256 when already read."""
    base: dict[str, Any] = {"file": str(path), "sha256": None}
    try:
        base["sha256"] = digest or sha256_file(path)
        found = analyse(path)
    except (ModelUnavailableError, RequestTimeout):
        raise
    except NoFaceError as exc:
        return [{**base, **dict.fromkeys(columns), "status": STATUS_NO_FACE, "error": str(exc)}]
    except (InputError, OSError) as exc:
        return [{**base, **dict.fromkeys(columns), "status": STATUS_ERROR, "error": str(exc)}]
    except Exception as exc:  # noqa: BLE001 - one bad file never ends the batch
        return [{**base, **dict.fromkeys(columns), "status": STATUS_ERROR,
                 "error": f"internal error ({type(exc).__name__}): {exc}"}]
    return [{**base, **{c: r.get(c) for c in columns}, "status": STATUS_OK, "error": None}
            for r in found]


# --- the CLI side: shared by the face, classify and neighbours commands -------------------
def add_batch_args(parser: Any, what: str = "image") -> None:
    """``PATH...`` (files, folders, globs), ``--out`` and ``--resume`` on a subcommand."""
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help=f"{what} files, folders (recursive) or glob patterns; several "
                             f"or a folder make a batch")
    parser.add_argument("--out", help="batch results file (.csv, .jsonl or .parquet), one row "
                                      "per result, written as the batch goes")
    parser.add_argument("--resume", action="store_true",
                        help="continue --out: skip the files already in it")
    from app.batch_ray import add_engine_args

    add_engine_args(parser, "a batch is analysed")
    parser.add_argument("--report", metavar="FILE.html",
                        help="also save the analysis as one self-contained HTML case report")


def report_path(args: Any) -> Path | None:
    """``--report``, checked before any work: an .html name in an existing folder."""
    if not getattr(args, "report", None):
        return None
    path = Path(args.report)
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--report {path}: give a .html file name.")
    if not path.parent.is_dir():
        raise InputError(f"--report {path}: the folder {path.parent} does not exist.")
    return path


def save_report(path: Path, html: str) -> None:
    """Write a case report atomically; a failure is the user's to fix (a message)."""
    from app.case_report import write_report

    try:
        write_report(path, html)
    except OSError as exc:
        raise InputError(f"--report {path}: cannot write it ({exc.strerror or exc}).") from exc


def is_batch(args: Any, single_report: bool = True) -> bool:
    """A batch: several paths, a folder, a glob, or ``--out`` (or ``--report`` for a
    command whose single answer has no case report of its own).

    Raises:
        InputError: ``--resume`` without ``--out``.
    """
    if args.resume and not args.out:
        raise InputError("--resume needs --out (the results file to continue).")
    paths = args.paths
    return (len(paths) > 1 or bool(args.out) or Path(paths[0]).is_dir()
            or (not single_report and bool(getattr(args, "report", None)))
            or (not Path(paths[0]).exists() and glob.has_magic(paths[0])))


def cli_batch(args: Any, analyse: Analyse, columns: list[str],
              models: Callable[[], list[dict[str, Any]]] | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """Run a CLI batch; the summary (and, without ``--out``, every row) as the report.

    Args:
        models: the case report's model descriptions (:func:`app.case_report.model_info`),
            asked for only when ``--report`` is given.
    """
    from app import batch_ray

    if batch_ray.captured(analyse, columns):  # a Ray worker asks for the command's analysis
        return {}
    if batch_ray.wants_ray(args):
        kwargs["rows_source"] = batch_ray.rows_source(args)
    if args.resume and not args.out:
        raise InputError("--resume needs --out (the results file to continue).")
    html_out = report_path(args)
    paths, skipped = expand_inputs(args.paths)
    out = Path(args.out) if args.out else None
    try:
        res = run_batch(paths, analyse, columns, out=out, resume=args.resume,
                        skipped_non_images=skipped, **kwargs)
    except KeyboardInterrupt:
        raise InputError("Interrupted; the rows so far are in "
                         f"{out}: continue with --resume." if out else "Interrupted.") from None
    if html_out is not None:
        from app.case_report import batch_report

        save_report(html_out, batch_report(res.rows, res.summary, models() if models else []))
        res.summary["report"] = str(html_out)
    return {"summary": res.summary} if out else {"summary": res.summary, "rows": res.rows}
