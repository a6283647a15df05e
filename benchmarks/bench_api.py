"""run_all wrapper for benchmarks/api.py."""
import runpy

runpy.run_path(str(__import__("pathlib").Path(__file__).with_name("api.py")), run_name="__main__")
