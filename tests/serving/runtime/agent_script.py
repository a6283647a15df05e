"""A throwaway "agent" for the supervisor tests: starts one copy, waits until it is ready,
writes its pid to a file, then sleeps until killed (like a node agent that crashes)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from serving.runtime.supervisor import ProcessSpec, Supervisor


def main() -> None:
    root, out, spec_json = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    sup = Supervisor(root, probe_interval_s=0.05, probe_timeout_s=1.0)
    sup.converge([ProcessSpec.from_json(spec_json)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = sup.poll()[spec_json["key"]]
        if status.state == "ready":
            out.write_text(json.dumps({"pid": status.pid, "port": status.port}))
            break
        time.sleep(0.05)
    time.sleep(600)


if __name__ == "__main__":
    main()
