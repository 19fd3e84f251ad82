"""Run a stand-in from the command line: ``python -m staff_pipeline.standins edfi --port 8101``.

``all`` starts the three on their standard ports (8100 Edu-V, 8101 Ed-Fi, 8102 LinkIt!). Each is
seeded with the demo credentials and data (printed at start) so it can be probed with curl.
"""

from __future__ import annotations

import argparse
import importlib
import time

from staff_pipeline.standins.common import Knobs

STANDINS = {
    "eduv": ("staff_pipeline.standins.eduv", "EduVStandIn", 8100),
    "edfi": ("staff_pipeline.standins.edfi", "EdFiStandIn", 8101),
    "linkit": ("staff_pipeline.standins.linkit", "LinkItStandIn", 8102),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m staff_pipeline.standins", description=__doc__)
    parser.add_argument("api", choices=[*STANDINS, "all"])
    parser.add_argument("--port", type=int, default=None, help="default: the API's standard port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--share-429", type=float, default=0.0)
    parser.add_argument("--share-500", type=float, default=0.0)
    parser.add_argument("--share-drop", type=float, default=0.0, help="share of connections dropped")
    parser.add_argument("--token-ttl", type=float, default=1800.0, help="token lifetime in seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    knobs = Knobs(args.latency, args.share_429, args.share_500, args.share_drop, args.token_ttl, args.seed)
    names = list(STANDINS) if args.api == "all" else [args.api]
    running = []
    for name in names:
        module, cls, port = STANDINS[name]
        standin = getattr(importlib.import_module(module), cls)(
            knobs=knobs, host=args.host, port=args.port if args.port is not None else port
        )
        for line in standin.seed_demo():
            print(f"[{name}] {line}")
        standin.start()
        running.append(standin)
        print(f"[{name}] listening on {standin.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for standin in running:
            standin.stop()


if __name__ == "__main__":
    main()
