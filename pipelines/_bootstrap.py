"""What a command run as `python pipelines/<command>.py` imports first (see the top of each command).

Python puts the script's folder, `pipelines/`, first on sys.path. This swaps it for the project
root, so `adatad` and `pipelines` import from this copy of the code (also an uploaded
`ray job submit --working-dir` copy without the editable install) and no file in `pipelines/` can
shadow an installed module. Imported as `pipelines.<command>` (tests), a command skips it; so does
the copy a spawned worker process runs as `__mp_main__`, which inherits this sys.path already (and
could not find this file any more, since `pipelines/` is no longer on it).

It also skips the interpreter's last garbage collection at exit: after a run, with torch, Ray and
MLflow loaded, that pass alone took 3-10 s on a 2-core machine (the command had printed its last
line and still did not return). Everything still closes as usual: atexit handlers (ray.shutdown,
logging) run first, then refcounting frees what is not in a cycle, and the process exits.
"""

import atexit
import gc
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
ROOT = str(_HERE.parent)
sys.path[:] = [ROOT, *(p for p in sys.path if p != ROOT and (not p or Path(p).resolve() != _HERE))]

# Registered before any library's handler, so it runs after all of them (atexit runs last-in first-out).
atexit.register(gc.freeze)
