"""Run the chapters that need it side by side, one kernel per CPU core.

myst-nb executes a book's notebooks one after another, as Sphinx reads them.
Just before Sphinx reads, this extension finds the chapters whose code has no
entry in the execution cache (jupyter-cache, the one myst-nb reads: the same
notebook, read by myst-nb's own reader, so the same hash), executes them in a
pool of processes, and stores each result in that cache. When Sphinx then reads
a chapter, myst-nb finds its outputs there and executes nothing.

``parallel_execution_after`` (in ``_config.yml``, under ``sphinx: config:``) names
the documents whose files a document reads, e.g. chapter 11 reads the checkpoint
chapter 10 writes: it starts only after them. The others start in the order of
their names (chapters by number), those that others wait for first. Each kernel gets one
thread (``OMP_NUM_THREADS=1``) when several run at once, so that two kernels do
not fight over the cores. A chapter that fails is reported with its traceback
and fails the build, as myst-nb would.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _execute(notebook: Any, cwd: str, timeout: int | None, allow_errors: bool) -> tuple:
    """In a worker process: (executed notebook, seconds, traceback or None)."""
    from jupyter_cache.executors.utils import single_nb_execution

    result = single_nb_execution(notebook, cwd=cwd, timeout=timeout,
                                 allow_errors=allow_errors, meta_override=True)
    return notebook, result.time, result.exc_string if result.err else None


def _worker_start(threads: int | None) -> None:
    if threads is not None:  # the kernels this worker starts inherit it
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _uncached(env: Any, docnames: list[str]) -> list[tuple[str, Path, Any]]:
    """(docname, path, notebook) of every document to be read that must execute."""
    from jupyter_cache import get_cache
    from myst_nb.core.read import create_nb_reader

    nb_config = env.mystnb_config
    cache = get_cache(nb_config.execution_cache_path)
    jobs = []
    for docname in sorted(docnames):  # the chapters in their order (NN_name)
        path = Path(env.doc2path(docname))
        text = path.read_text(encoding="utf-8")
        reader = create_nb_reader(str(path), env.myst_config, nb_config, text)
        if reader is None:  # plain Markdown: nothing to execute
            continue
        notebook = reader.read(text)
        if not any(cell.cell_type == "code" for cell in notebook.cells):
            continue
        try:
            cache.match_cache_notebook(notebook)
        except KeyError:
            jobs.append((docname, path, notebook))
    return jobs


def execute_in_parallel(app: Any, env: Any, docnames: list[str]) -> None:
    nb_config = getattr(env, "mystnb_config", None)
    if nb_config is None or nb_config.execution_mode != "cache":
        return
    jobs = _uncached(env, docnames)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(app.config.parallel_execution_workers or min(cores or 1, 4), len(jobs))
    if workers < 2:  # nothing to gain: myst-nb executes it as it reads
        return
    after: dict[str, list[str]] = app.config.parallel_execution_after
    waiting = {name: set(after.get(name, ())) for name, _, _ in jobs}
    waited_for = {dep for deps in waiting.values() for dep in deps}
    pending = sorted(jobs, key=lambda job: job[0] not in waited_for)  # stable: toc order
    logger.info(f"executing {len(jobs)} notebooks in {workers} processes: "
                f"{', '.join(name for name, _, _ in pending)}")

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(nb_config.execution_cache_path)
    unfinished = {name for name, _, _ in jobs}
    failures = []
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=_worker_start, initargs=(1,)) as pool:
        running: dict[Future, tuple[str, Path]] = {}
        while pending or running:
            for job in list(pending):
                if len(running) == workers:
                    break
                name, path, notebook = job
                if waiting[name] & unfinished:  # a document it reads is not done
                    continue
                pending.remove(job)
                future = pool.submit(_execute, notebook, str(path.parent),
                                     nb_config.execution_timeout,
                                     nb_config.execution_allow_errors)
                running[future] = (name, path)
            if not running:  # only waiting ones, whose documents failed
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name, path = running.pop(future)
                notebook, seconds, error = future.result()
                if error is not None:  # it stays unfinished: what waits for it never runs
                    failures.append(name)
                    logger.warning(f"Executing notebook failed: {name}\n{error}",
                                   type="mystnb", subtype="exec")
                    continue
                cache.cache_notebook_bundle(
                    CacheBundleIn(notebook, str(path), data={"execution_seconds": seconds}),
                    check_validity=False, overwrite=True)
                unfinished.discard(name)
                logger.info(f"executed {name} in {seconds:.1f} s "
                            f"({time.perf_counter() - start:.0f} s since the first start)")
    if failures or pending:
        waited = f"; not run, waiting for them: {', '.join(n for n, _, _ in pending)}"
        raise ExtensionError(f"notebooks that failed: {', '.join(failures)}"
                             + (waited if pending else ""))


def setup(app: Any) -> dict[str, bool]:
    app.add_config_value("parallel_execution_after", {}, "env")
    app.add_config_value("parallel_execution_workers", 0, "env")  # 0: a core each, 4 at most
    app.connect("env-before-read-docs", execute_in_parallel)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
