"""``python -m ctresample``: the command line (:func:`ctresample.cli.main`)."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the package is imported: one line, no traceback
    print("interrupted (Ctrl-C)", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
