"""The Sample record (one generated or gold program for one problem): defined with its reader and
writer in :mod:`coderl.records`, re-exported here."""

from ..records import ORIGINS, Sample, read_samples, sample_writer

__all__ = ["ORIGINS", "Sample", "read_samples", "sample_writer"]
