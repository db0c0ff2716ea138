"""Benchmarks (pytest-benchmark). Run them all with `bash scripts/main.sh` or
`python -m benchmarks.report`; every number is reported as a ratio to a baseline measured in
the same run."""
