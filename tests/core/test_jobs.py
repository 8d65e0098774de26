"""Every job's log holds its log records, its warnings and, when it fails, its traceback."""
import logging
import warnings
from types import SimpleNamespace

import pytest

from stages_of_inference.core.jobs import job


class Named(list):
    """snakemake's Namedlist: a list with attributes."""


def fake_snakemake(log_path, threads=1):
    return SimpleNamespace(log=Named([str(log_path)]), threads=threads, rule="some_rule",
                           wildcards=Named(), config={"runtime": {"device": "cpu", "threads": 1, "dtype": "float32"}})


def test_a_failing_job_leaves_its_traceback_and_warnings_in_the_log(tmp_path):
    log = tmp_path / "logs" / "some_rule" / "m.log"

    def compute():
        logging.getLogger("stages_of_inference.study").info("started")
        warnings.warn("a deprecated thing", UserWarning)
        return {}["missing key"]

    with pytest.raises(KeyError):
        with job(fake_snakemake(log, threads=3)) as runtime:
            assert runtime == {"device": "cpu", "threads": 3, "dtype": "float32"}  # the job's threads win
            compute()
    text = log.read_text()
    assert "started" in text
    assert "UserWarning: a deprecated thing" in text
    assert "rule some_rule failed" in text and "Traceback (most recent call last)" in text
    assert "KeyError: 'missing key'" in text and "in compute" in text


def test_a_job_that_succeeds_logs_no_error(tmp_path):
    log = tmp_path / "ok.log"
    with job(fake_snakemake(log)):
        logging.getLogger("stages_of_inference").info("fine")
    assert "fine" in log.read_text() and "Traceback" not in log.read_text()
