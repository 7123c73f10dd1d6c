"""The tests' S3 server: moto's `moto_server` as a process (see `benchmarks.objstore`)."""

from pulse.benchmarks.objstore import S3Server, start_s3

__all__ = ["S3Server", "start_s3"]
