"""The README's main job on the embedded default: detect this machine's profile and show it.

    make demo        (or: python examples/demo.py)
"""

from __future__ import annotations

import sys

from xinfer_sdk.cli import main


def step(title: str, *args: str) -> None:
    print(f"\n=== {title}: xinfer-sdk {' '.join(args)}", flush=True)
    code = main(list(args))
    if code != 0:
        sys.exit(code)


if __name__ == "__main__":
    step("1. which hardware profile fits this machine", "profiles", "detect")
    import xinfer_sdk as xs

    profile = xs.detect().profile
    step("2. the profile's figures and policy", "profiles", "show", profile)
