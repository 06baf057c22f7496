"""`python -m agentlb.mixin [DEPLOY_DIR]`: regenerate deploy/ (rules, config, dashboards)."""

from __future__ import annotations

import sys
from pathlib import Path

from agentlb.mixin.generate import write


def main(argv: list[str]) -> None:
    root = Path(argv[0]) if argv else Path("deploy")
    for path in write(root):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
