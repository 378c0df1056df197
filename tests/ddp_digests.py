"""Run `dalle-kit ARGS` as one rank of a torchrun job and write the weight digests it compared with the other
ranks at each checkpoint to ``OUT/rank<R>.json`` (used by tests/test_distributed.py).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_digests.py OUT run RECIPE ...
"""

import json
import os
import sys
from pathlib import Path

from dalle_kit import distributed
from dalle_kit.cli import main

seen: list[str] = []
_digest = distributed.digest


def recording(modules):
    value = _digest(modules)
    seen.append(value)
    return value


distributed.digest = recording  # differing_ranks looks it up at each call
out = Path(sys.argv[1])
code = main(sys.argv[2:])
(out / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"digests": seen, "pid": os.getpid()}))
sys.exit(code)
