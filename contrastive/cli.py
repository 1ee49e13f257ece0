"""The ``contrastive`` command line: ``contrastive plugins`` and friends."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from contrastive._version import __version__

if TYPE_CHECKING:
    from contrastive.registry import PluginInfo


def _plugins_table(infos: Sequence[PluginInfo]) -> str:
    """Render plugin records as a fixed-width text table."""
    header = ("plugin", "version", "losses", "samplers", "augmentations", "status")
    rows = [header]
    for info in infos:
        rows.append(
            (
                info.name,
                info.version or "-",
                ", ".join(info.losses) or "-",
                ", ".join(info.samplers) or "-",
                ", ".join(info.augmentations) or "-",
                "ok" if info.ok else f"failed: {info.error}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    return "\n".join(lines)


def _cmd_plugins(args: argparse.Namespace) -> int:
    import warnings

    from contrastive._discovery import env_flag
    from contrastive.errors import PluginConfigWarning, PluginLoadWarning
    from contrastive.registry import get_registry

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginLoadWarning)  # other warnings keep their filters
        infos = get_registry().report()  # in strict mode too: every plugin, failures included
    # a plugin's own failure is a row of the table; configuration problems and others go to stderr
    # (once each: in strict mode the report loads twice)
    notes = dict.fromkeys(
        str(w.message)
        for w in caught
        if not issubclass(w.category, PluginLoadWarning) or issubclass(w.category, PluginConfigWarning)
    )
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps([info.as_dict() for info in infos], indent=2))
    elif not infos:
        print("no plugins are installed")
    else:
        print(_plugins_table(infos))
    failed = [info.name for info in infos if not info.ok]
    strict = env_flag("CONTRASTIVE_STRICT_PLUGINS")
    if failed and strict:
        print(
            f"error: {len(failed)} plugin(s) failed to load: {', '.join(failed)} "
            "(CONTRASTIVE_STRICT_PLUGINS is set)",
            file=sys.stderr,
        )
    return 1 if failed and (args.check or strict) else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``contrastive`` command."""
    parser = argparse.ArgumentParser(
        prog="contrastive", description="Contrastive representation learning toolkit."
    )
    parser.add_argument("--version", action="version", version=f"contrastive-kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("plugins", help="list installed plugins and what they registered")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--check", action="store_true",
        help="exit with status 1 if any plugin failed (always so under CONTRASTIVE_STRICT_PLUGINS=1)",
    )
    p.set_defaults(func=_cmd_plugins)
    # the trainer parses its own options in the handler, so that only `contrastive train` imports it
    t = sub.add_parser("train", help="train a representation (default: SimCLR on scikit-learn's digits)",
                       add_help=False, prefix_chars="+")
    t.add_argument("train_args", nargs=argparse.REMAINDER)
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("embed", help="write a trained encoder's embeddings of a data set to an .npz file",
                       add_help=False, prefix_chars="+")
    e.add_argument("embed_args", nargs=argparse.REMAINDER)
    e.set_defaults(func=_cmd_embed)
    return parser


def _cmd_embed(args: argparse.Namespace) -> int:
    from contrastive.train.export import embed_main

    return embed_main(args.embed_args)


def _cmd_train(args: argparse.Namespace) -> int:
    from contrastive.train.run import main as train_main

    return train_main(args.train_args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
