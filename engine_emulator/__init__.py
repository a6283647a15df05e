"""OpenAI-compatible engine emulator: imitates vLLM's serving behaviour with emulated output.

Modules: ``__main__`` (command line, lifecycle, signals), ``server`` (ASGI app: the HTTP API),
``engine`` (waiting queue, running batch, step loop), ``timing`` (the latency formula),
``tokens`` (tokenizer, generated text, stop strings), ``metrics`` (Prometheus, vLLM V1 names),
``smi`` (pid, load and VRAM in the amd-smi emulator's state). See docs/serving/engine-emulator.md.
"""
