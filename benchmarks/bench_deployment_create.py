"""Run benchmarks/deployment_create.py (run_all.py picks up bench_*.py)."""
import pathlib
import runpy
import sys

sys.argv[0] = str(pathlib.Path(__file__).with_name("deployment_create.py")); runpy.run_path(sys.argv[0], run_name="__main__")
