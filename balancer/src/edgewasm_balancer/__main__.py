"""`python -m edgewasm_balancer --help`."""

from __future__ import annotations

import asyncio
import sys

from edgewasm_balancer.app import Balancer
from edgewasm_balancer.config import ConfigError, parse_settings
from edgewasm_balancer.logs import configure
from edgewasm_balancer.sources import InvalidBackendError


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    configure(settings.log_level, settings.log_format)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(Balancer(settings).serve())
    except (InvalidBackendError, ConfigError, OSError) as exc:
        print(f"edgewasm-balancer: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
