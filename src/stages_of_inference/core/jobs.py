"""What every workflow script runs inside: ``with job(snakemake) as runtime: ...``.

* logging records of the package, Python warnings and, when the job fails, its
  traceback go to the rule's ``log:`` file (and to stderr), so ``logs/`` explains every
  failure;
* ``runtime`` is the config's ``runtime`` section with the job's ``threads``: settings that
  cannot change a result (device, threads, compile, attention implementation, batch
  sizes) reach the job here, never as a rule's ``params``, so changing them reruns
  nothing. Settings that can (``dtype``, ``matmul_precision``) are also a model rule's
  ``numerics`` param.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from .io import setup_logging


@contextlib.contextmanager
def job(snakemake) -> Iterator[dict]:
    log_path = snakemake.log[0] if len(snakemake.log) else None
    logger = setup_logging(log_path)
    logging.captureWarnings(True)
    runtime = {**(snakemake.config.get("runtime") or {}), "threads": snakemake.threads}
    try:
        yield runtime
    except BaseException:
        wildcards = ", ".join(f"{k}={v}" for k, v in dict(snakemake.wildcards).items())
        logger.exception("rule %s failed%s", snakemake.rule, f" ({wildcards})" if wildcards else "")
        raise
    finally:
        logging.captureWarnings(False)
