"""``sb3-mb-zoo <command> [args]``: the zoo's console script.

``sb3-mb-zoo train --algo mbpo --env Pendulum-v1`` is ``python -m zoo.train --algo mbpo --env Pendulum-v1``;
``sb3-mb-zoo enjoy ...`` is ``python -m zoo.enjoy ...``; likewise ``record-video``, ``push-to-hub`` and
``load-from-hub`` run ``zoo.record_video``, ``zoo.push_to_hub`` and ``zoo.load_from_hub``.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "zoo.train",
    "enjoy": "zoo.enjoy",
    "record-video": "zoo.record_video",
    "push-to-hub": "zoo.push_to_hub",
    "load-from-hub": "zoo.load_from_hub",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = ", ".join(sorted(COMMANDS))
        message = f"usage: sb3-mb-zoo {{{known}}} [args]"
        if argv and argv[0] not in ("-h", "--help"):
            sys.exit(f"{message}\nsb3-mb-zoo: unknown command {argv[0]!r}; known commands: {known}")
        print(message)
        return
    import importlib

    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
